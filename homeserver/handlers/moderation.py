"""Moderation: reports of events, rooms and users (C-S API "Reporting content"), and the
server's own limits on local users: joined members per room and spam in messages."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import Forbidden, InvalidParam, NotFound
from homeserver.handlers.visibility import HistoryVisibility
from homeserver.identifiers import is_valid_user_id
from homeserver.storage import Storage
from homeserver.storage.stores.reports import ContentReport, ReportsStore

# A user ID written in a message body (appendices "User Identifiers": historical characters
# allowed, server names with a port or an IPv6 literal).
_USER_MENTION = re.compile(r"@[!-9;-~]+:[A-Za-z0-9.\-]+(?::\d+)?|@[!-9;-~]+:\[[0-9A-Fa-f:.]+\]")
_LINK = re.compile(r"\b(?:https?|ftp)://", re.IGNORECASE)


class ReportsHandler:
    def __init__(
        self,
        storage: Storage,
        reports: ReportsStore,
        visibility: HistoryVisibility,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.reports = reports
        self.visibility = visibility
        self.clock = clock

    async def report_event(
        self, reporter: str, room_id: str, event_id: str, reason: str | None, score: int | None
    ) -> None:
        """The reporter must be joined to the room (spec v1.8) and able to see the event;
        anything else is the same 404, so a report reveals nothing (report_content.yaml)."""
        not_found = NotFound("The event was not found or you are not joined to the room")
        if await self.storage.rooms.get_membership(room_id, reporter) != "join":
            raise not_found
        event = await self.storage.events.get_event(event_id)
        if event is None or event.room_id != room_id:
            raise not_found
        if not (await self.visibility.filter_events(reporter, [event])).events:
            raise not_found
        await self._add("event", reporter, reason, room_id=room_id, event_id=event_id, score=score)

    async def report_room(self, reporter: str, room_id: str, reason: str) -> None:
        """Whoever can name a room may report it, joined or not (spec v1.13)."""
        if await self.storage.rooms.get_room_version(room_id) is None:
            raise NotFound("The room was not found")
        await self._add("room", reporter, reason, room_id=room_id)

    async def report_user(self, reporter: str, user_id: str, reason: str) -> None:
        """Any user this server knows of: its own accounts and anyone in a room here."""
        if not is_valid_user_id(user_id):
            raise InvalidParam(f"Invalid user ID {user_id[:300]!r}")
        known = await self.storage.user_data.get_profile(user_id) is not None or bool(
            await self.storage.rooms.get_rooms_for_user(user_id, "join")
        )
        if not known:
            raise NotFound("The user was not found")
        await self._add("user", reporter, reason, user_id=user_id)

    async def _add(
        self,
        kind: str,
        reporter: str,
        reason: str | None,
        *,
        room_id: str | None = None,
        event_id: str | None = None,
        user_id: str | None = None,
        score: int | None = None,
    ) -> None:
        await self.reports.add_report(
            ContentReport(
                report_id=secrets.token_urlsafe(12),
                kind=kind,
                reporter=reporter,
                room_id=room_id,
                event_id=event_id,
                user_id=user_id,
                reason=reason,
                score=score,
                received_ts=self.clock.time_ms(),
            )
        )


@dataclass(frozen=True)
class SpamLimits:
    """The most users a local message may mention and links it may carry."""

    max_mentions: int = 10
    max_links: int = 5

    def check_message(self, content: Mapping[str, Any]) -> None:
        """400 M_INVALID_PARAM for a message over a limit: the client can say which and the
        user can edit it (a 403 would read as a missing permission)."""
        body = content.get("body")
        text = body if isinstance(body, str) else ""
        mentioned = set(_USER_MENTION.findall(text))
        mentions = content.get("m.mentions")
        if isinstance(mentions, dict) and isinstance(mentions.get("user_ids"), list):
            mentioned.update(u for u in mentions["user_ids"] if isinstance(u, str))
        if len(mentioned) > self.max_mentions:
            raise InvalidParam(
                f"This message mentions {len(mentioned)} users; at most {self.max_mentions}"
                " are allowed"
            )
        links = len(_LINK.findall(text))
        if links > self.max_links:
            raise InvalidParam(
                f"This message has {links} links; at most {self.max_links} are allowed"
            )


async def check_room_capacity(storage: Storage, room_id: str, max_joined_members: int) -> None:
    """Refuse a new join to a room that already has `max_joined_members` joined members.

    403 M_FORBIDDEN: the spec has no errcode for a full room, and M_RESOURCE_LIMIT_EXCEEDED
    tells clients the whole server is over a limit and to contact its admin, which is not
    what happened."""
    joined = (await storage.rooms.count_joined_members([room_id])).get(room_id, 0)
    if joined >= max_joined_members:
        raise Forbidden(
            f"This room is full: this server allows at most {max_joined_members} joined"
            " members per room"
        )
