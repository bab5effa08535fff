"""Membership changes a local user asks for (C-S API "Room membership": join, knock, invite,
leave, kick, ban, unban, forget). Each is one m.room.member event through EventCreationHandler,
so the auth rules decide what is allowed; this adds the checks the rules cannot make (a kick
needs a target in the room, an unban a banned one, a restricted join a room the user is in and
a local member to vouch for it) and the member event's profile fields."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from homeserver.auth_rules.power_levels import PowerLevels
from homeserver.auth_rules.selection import CREATE_KEY, JOIN_RULES_KEY, POWER_LEVELS_KEY
from homeserver.errors import Codes, Forbidden, InvalidParam, MatrixError, NotFound
from homeserver.events.event import MEMBER, Event
from homeserver.events.room_versions import RoomVersion
from homeserver.handlers.message import EventCreationHandler
from homeserver.handlers.moderation import check_room_capacity
from homeserver.identifiers import domain_of, is_valid_user_id
from homeserver.storage import Storage
from homeserver.storage.stores.room_extras import RoomExtrasStore

logger = logging.getLogger(__name__)

# Which membership each action sets, and which current memberships of the target it needs
# (None: any). The auth rules check the rest.
_ACTIONS: Mapping[str, tuple[str, frozenset[str | None] | None]] = {
    "join": ("join", None),
    "knock": ("knock", None),
    "invite": ("invite", None),
    "leave": ("leave", None),
    "kick": ("leave", frozenset({"join", "invite", "knock"})),
    "ban": ("ban", None),
    "unban": ("leave", frozenset({"ban"})),
}
# Memberships that keep a join out of the restricted-join check: members and invitees join
# without conditions (C-S API "Restricted rooms"); a ban is refused by the auth rules.
_UNRESTRICTED = frozenset({"join", "invite", "ban"})
AUTHORISER = "join_authorised_via_users_server"


async def current_power_levels(storage: Storage, room_id: str) -> PowerLevels | None:
    """The power levels in force in a room now; None for a room we do not know."""
    state = await storage.rooms.get_current_state_for_keys(room_id, [CREATE_KEY, POWER_LEVELS_KEY])
    events = await storage.events.get_events(state.values())
    create = events.get(state.get(CREATE_KEY, ""))
    if create is None:
        return None
    return PowerLevels(create, events.get(state.get(POWER_LEVELS_KEY, "")))


class RemoteJoin(Protocol):
    """Joins and leaves of rooms this server is not in, through other servers."""

    async def join(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> str: ...

    async def leave(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> str: ...

    async def knock(
        self, user_id: str, room_id: str, servers: Sequence[str], content: Mapping[str, Any]
    ) -> str: ...


class RemoteInvite(Protocol):
    async def invite(
        self, room_id: str, sender: str, target: str, content: Mapping[str, Any]
    ) -> str: ...


class RoomMemberHandler:
    def __init__(
        self,
        storage: Storage,
        extras: RoomExtrasStore,
        events: EventCreationHandler,
    ) -> None:
        self.storage = storage
        self.extras = extras
        self.events = events
        self.server_name = events.server.server_name
        # Set by federation: joins to rooms this server is not in, invites of other
        # servers' users.
        self.remote_joiner: RemoteJoin | None = None
        self.remote_inviter: RemoteInvite | None = None
        # limits.max_joined_members_per_room, set by the composition root.
        self.max_joined_members: int | None = None
        # Called with (user_id, room_id) once a user of ours has joined a room.
        self.on_joined: list[Callable[[str, str], Awaitable[None]]] = []

    async def update_membership(
        self,
        sender: str,
        room_id: str,
        target: str,
        action: str,
        *,
        reason: str | None = None,
        extra_content: Mapping[str, Any] | None = None,
    ) -> str:
        """Send the member event `action` implies; returns its event ID (or that of the
        current member event when it would be identical, as a repeated request)."""
        membership, needs = _ACTIONS[action]
        if not is_valid_user_id(target):
            raise InvalidParam(f"Invalid user ID {target[:300]!r}")
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None:
            raise NotFound(self.unknown_room_message(room_id))
        if action == "invite":
            await self.check_local_user(target)
        current_id = await self.storage.rooms.get_current_state_event_id(room_id, MEMBER, target)
        current: Event | None = None
        if current_id is not None:
            current = await self.storage.events.get_event(current_id)
        old = current.membership if current is not None else None
        if needs is not None and old not in needs:
            if action == "unban":
                raise MatrixError(f"{target} is not banned", Codes.BAD_STATE, status=403)
            raise Forbidden(f"{target} is not in the room")
        if membership == "join":
            await self.check_room_not_full(room_id, old)

        authoriser = None
        if membership == "join" and old not in _UNRESTRICTED:
            authoriser = await self.restricted_join_authoriser(room_version, room_id, target)
        content: dict[str, Any] = {"membership": membership}
        if membership in ("join", "knock"):
            # A knock carries the profile too, so that members can tell who is knocking.
            profile = await self.storage.user_data.get_profile(target)
            if profile is not None:
                content.update(profile.fields())
        content.update(extra_content or {})
        if reason is not None:
            content["reason"] = reason
        if current is not None and current.sender == sender and authoriser is None:
            # A repeated join matches the first one whatever authorised that.
            previous = {k: v for k, v in current.content.items() if k != AUTHORISER}
            if previous == content:
                return current.event_id
        if (
            action == "leave"
            and target == sender
            and old in ("invite", "knock")
            and current is not None
            and self.remote_joiner is not None
            and not await self.storage.rooms.is_server_in_room(room_id, self.server_name)
        ):
            # Declining an invite to a room this server is not in: the inviter's server
            # makes the leave part of the room (S-S API "Leaving Rooms").
            leave = {k: v for k, v in content.items() if k != "membership"}
            # The inviter's server; for a knock, the servers whose state it was shown.
            servers = [domain_of(current.sender)]
            shown = current.unsigned.get("knock_room_state")
            if isinstance(shown, list):
                servers += [
                    domain_of(e["sender"])
                    for e in shown
                    if isinstance(e, dict) and isinstance(e.get("sender"), str)
                ]
            return await self.remote_joiner.leave(target, room_id, servers, leave)
        if membership == "invite" and domain_of(target) != self.server_name:
            # The invitee's server countersigns first (S-S API "Inviting to a room").
            assert self.remote_inviter is not None  # check_local_user refused otherwise
            return await self.remote_inviter.invite(room_id, sender, target, content)
        persisted = await self.events.send_event(
            room_id, MEMBER, sender, content, state_key=target, join_authorised_via=authoriser
        )
        return persisted.event.event_id

    async def check_room_not_full(self, room_id: str, old_membership: str | None) -> None:
        """limits.max_joined_members_per_room, for a join to a room this server is in: of a
        local user, or of a remote one through our make_join / send_join. Rejoining is not
        a new member. A room this server is not in is not ours to limit."""
        if old_membership != "join" and self.max_joined_members is not None:
            await check_room_capacity(self.storage, room_id, self.max_joined_members)

    async def join(
        self, user_id: str, room_id: str, servers: Sequence[str], reason: str | None = None
    ) -> str:
        """Join `user_id` to the room: with a local event when a user of ours is in it, else
        through one of `servers` (S-S API "Joining Rooms"); returns the join's event ID."""
        event_id = await self._join(user_id, room_id, servers, reason)
        for hook in self.on_joined:
            try:
                await hook(user_id, room_id)
            except Exception:  # the join stands; what follows it is best effort
                logger.exception("after %s joined %s", user_id, room_id)
        return event_id

    async def _join(
        self, user_id: str, room_id: str, servers: Sequence[str], reason: str | None
    ) -> str:
        if await self.storage.rooms.is_server_in_room(room_id, self.server_name):
            try:
                return await self.update_membership(
                    user_id, room_id, user_id, "join", reason=reason
                )
            except MatrixError as e:
                if e.errcode != Codes.UNABLE_TO_GRANT_JOIN:
                    raise
                # Nobody here may vouch for the restricted join: a server whose users may
                # invite can (S-S API "Restricted rooms").
                servers = [*servers, *await self._servers_able_to_invite(room_id)]
                if self.remote_joiner is None or not servers:
                    raise Forbidden(e.message) from e
                content = await self._remote_member_content(user_id, reason)
                return await self.remote_joiner.join(user_id, room_id, servers, content)
        invite_id = await self.storage.rooms.get_current_state_event_id(room_id, MEMBER, user_id)
        if invite_id is not None:
            # An invite from another server: that server is in the room and can help.
            invite = await self.storage.events.get_event(invite_id)
            if invite is not None and invite.membership == "invite":
                servers = [*servers, domain_of(invite.sender)]
        if self.remote_joiner is None or not servers:
            raise NotFound(self.unknown_room_message(room_id))
        content = await self._remote_member_content(user_id, reason)
        return await self.remote_joiner.join(user_id, room_id, servers, content)

    async def knock(
        self,
        user_id: str,
        room_id: str,
        reason: str | None = None,
        servers: Sequence[str] = (),
    ) -> str:
        """C-S API POST /knock. The auth rules refuse a join rule other than knock (v10+:
        knock_restricted) and knockers who are joined, invited or banned. A room this server
        is not in is knocked on through one of `servers`."""
        if not await self.storage.rooms.is_server_in_room(room_id, self.server_name):
            if self.remote_joiner is None or not servers:
                raise NotFound(self.unknown_room_message(room_id))
            content = await self._remote_member_content(user_id, reason)
            return await self.remote_joiner.knock(user_id, room_id, servers, content)
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None:
            raise NotFound(self.unknown_room_message(room_id))
        if not room_version.knock_join_rule:
            raise Forbidden(f"Room version {room_version.identifier} does not support knocking")
        return await self.update_membership(user_id, room_id, user_id, "knock", reason=reason)

    async def _remote_member_content(self, user_id: str, reason: str | None) -> dict[str, Any]:
        """A join's or knock's content beyond its membership: the user's profile, so members
        can tell who it is, and the reason given."""
        content: dict[str, Any] = {}
        profile = await self.storage.user_data.get_profile(user_id)
        if profile is not None:
            content.update(profile.fields())
        if reason is not None:
            content["reason"] = reason
        return content

    async def join_authoriser(self, room_id: str, user_id: str) -> str | None:
        """Who on this server vouches for `user_id`'s join to a restricted room (S-S API
        make_join and send_join for another server's user); None when the user needs nobody
        (a member or an invitee, or a room that is not restricted). Raises as
        restricted_join_authoriser does."""
        room_version = await self.storage.rooms.get_room_version(room_id)
        if room_version is None:
            raise NotFound(self.unknown_room_message(room_id))
        if await self.storage.rooms.get_membership(room_id, user_id) in _UNRESTRICTED:
            return None
        return await self.restricted_join_authoriser(room_version, room_id, user_id)

    async def restricted_join_authoriser(
        self, room_version: RoomVersion, room_id: str, user_id: str
    ) -> str | None:
        """For a join by a user who is neither a member nor invited: None unless the room is
        restricted (v8+) or knock_restricted (v10+); else the local member who vouches for the
        join (auth rules v8+, join_authorised_via_users_server), once the user is joined to a
        room of the allow list (C-S API "Restricted rooms", condition m.room_membership).
        Raises Forbidden when the user meets no condition, M_UNABLE_TO_AUTHORISE_JOIN when
        the user is another server's and this server is in none of the allowed rooms (it
        cannot tell), M_UNABLE_TO_GRANT_JOIN when nobody here may invite (S-S API
        "Restricted rooms": the joining server then tries another server)."""
        state = await self.storage.rooms.get_current_state_for_keys(room_id, [JOIN_RULES_KEY])
        join_rules_id = state.get(JOIN_RULES_KEY)
        join_rules = await self.storage.events.get_event(join_rules_id) if join_rules_id else None
        if join_rules is None:
            return None
        join_rule = join_rules.content.get("join_rule")
        if not (
            (room_version.restricted_join_rule and join_rule == "restricted")
            or (room_version.knock_restricted_join_rule and join_rule == "knock_restricted")
        ):
            return None
        allowed = membership_conditions(join_rules.content.get("allow"))
        # Only rooms this server is in can be checked; a condition on any other is unmet.
        joined = set(await self.storage.rooms.get_rooms_for_user(user_id, "join"))
        if not any(room in joined for room in allowed):
            if domain_of(user_id) != self.server_name and not await self._in_any(allowed):
                raise MatrixError(
                    f"{self.server_name} is in none of the rooms whose members may join",
                    Codes.UNABLE_TO_AUTHORISE_JOIN,
                    status=400,
                )
            raise Forbidden("You are not joined to any room whose members may join this room")
        able = [m for m in await self._members_able_to_invite(room_id) if self._is_local(m)]
        if not able:
            raise MatrixError(
                f"No user on {self.server_name} may authorise a join to {room_id}",
                Codes.UNABLE_TO_GRANT_JOIN,
                status=400,
            )
        # The most powerful member is the least likely to lose the right to invite meanwhile.
        return able[0]

    async def _in_any(self, room_ids: Sequence[str]) -> bool:
        for room_id in room_ids:
            if await self.storage.rooms.is_server_in_room(room_id, self.server_name):
                return True
        return False

    async def _servers_able_to_invite(self, room_id: str) -> list[str]:
        """The other servers with a joined member who may invite, the most powerful first:
        those can vouch for a restricted join."""
        able = await self._members_able_to_invite(room_id)
        return list(dict.fromkeys(domain_of(m) for m in able if not self._is_local(m)))

    async def _members_able_to_invite(self, room_id: str) -> list[str]:
        """The joined members who may invite, the most powerful first (then by user ID)."""
        levels = await current_power_levels(self.storage, room_id)
        if levels is None:
            raise NotFound(self.unknown_room_message(room_id))
        invite_level = levels.named_level("invite")
        able = [
            member
            for member in await self.storage.rooms.get_users_in_room(room_id, "join")
            if levels.user_level(member) >= invite_level
        ]
        return sorted(able, key=lambda member: (-levels.user_level(member), member))

    def _is_local(self, user_id: str) -> bool:
        return domain_of(user_id) == self.server_name

    async def check_local_user(self, user_id: str) -> None:
        """Whom invites (and createRoom's `invite`) can reach: our own users, and other
        servers' once federation is there (their server says whether they exist)."""
        if domain_of(user_id) != self.server_name:
            if self.remote_inviter is None:
                raise Forbidden(f"Cannot invite {user_id}: this server does not federate")
            return
        if await self.storage.user_data.get_profile(user_id) is None:
            raise InvalidParam(f"Unknown user {user_id}")

    def unknown_room_message(self, room_id: str) -> str:
        domain = domain_of(room_id)
        if domain and domain != self.server_name:
            return f"Room {room_id} is on another server ({domain}), which did not answer"
        return f"Unknown room {room_id}"

    async def forget(self, user_id: str, room_id: str) -> None:
        """C-S API POST /forget: only a room the user has left (or was banned from)."""
        current_id = await self.storage.rooms.get_current_state_event_id(room_id, MEMBER, user_id)
        if current_id is None:
            return  # nothing to forget
        current = await self.storage.events.get_event(current_id)
        if current is not None and current.membership not in ("leave", "ban"):
            raise MatrixError(f"User {user_id} is in room {room_id}", Codes.UNKNOWN, status=400)
        await self.extras.forget_room(user_id, room_id, current_id)

    async def joined_rooms(self, user_id: str) -> list[str]:
        return sorted(await self.storage.rooms.get_rooms_for_user(user_id, "join"))


def membership_conditions(allow: Any) -> list[str]:
    """The room IDs of the m.room_membership conditions of a join rule's `allow`; entries of
    other or malformed types are skipped (they can never be met here)."""
    if not isinstance(allow, list):
        return []
    return [
        entry["room_id"]
        for entry in allow
        if isinstance(entry, dict)
        and entry.get("type") == "m.room_membership"
        and isinstance(entry.get("room_id"), str)
    ]
