"""The `rooms` part of a /sync response (sync.yaml): joined rooms (timeline, state, summary),
invites and knocks (stripped state), and rooms left.

Positions: a response covers the event stream in (since, now]. Which rooms go where follows
the user's membership at `now`, read from current state and rolled back through the changes
after `now`; the rooms whose membership changed in the range come from the user's own
current-state deltas. Timelines for every room are one bulk read.

State (sync.yaml `state`): "updates between since and the start of the timeline", or all state
at the start of the timeline on a full sync. Worked out per key from the state at since (P),
at the timeline's start (S) and at its end (E): a key whose value at E is not in the timeline
(set by an event the filter hid, or by state resolution) shows E's value; otherwise S's value
shows if it differs from P. Lazy-loading members (C-S API "Lazy-loading room members") keeps
the member events of timeline senders, the syncing user and the heroes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from homeserver.events.event import MEMBER, Event, StateKey
from homeserver.handlers.filters import RoomEventFilter, SyncFilter, field_projector
from homeserver.handlers.sync_summary import room_summaries, stripped_states
from homeserver.lru import LruCache
from homeserver.push.counts import sync_counts
from homeserver.storage import Storage
from homeserver.storage.stores.events import EventMeta
from homeserver.storage.stores.state import EMPTY_STATE, FrozenStateMap
from homeserver.storage.stores.sync_reads import (
    EventTypeFilter,
    MembershipChange,
)
from homeserver.streams import StreamToken

JsonDict = dict[str, Any]
JOIN, INVITE, KNOCK, LEAVE, BAN = "join", "invite", "knock", "leave", "ban"


class VisibleEvents(Protocol):
    @property
    def events(self) -> list[Event]: ...

    @property
    def memberships(self) -> dict[str, str]: ...


class EventVisibility(Protocol):
    """History visibility (C-S API "Room History Visibility"): the events a user may see."""

    async def filter_events(
        self,
        user_id: str,
        events: Sequence[Event],
        metas: Mapping[str, EventMeta] | None = None,
    ) -> VisibleEvents: ...


class EventSerializer(Protocol):
    """Events in the client format (events/client_format.py), redactions applied."""

    async def serialize(
        self,
        events: Sequence[Event],
        *,
        user_id: str,
        device_id: str | None = None,
        memberships: Mapping[str, str] | None = None,
        include_room_id: bool = True,
        replaced_state: bool = True,
    ) -> list[JsonDict]: ...

    async def federation_format(self, events: Sequence[Event]) -> list[JsonDict]: ...


class ForgottenRooms(Protocol):
    async def get_forgotten_room_ids(self, user_id: str) -> set[str]: ...


class StreamChanges(Protocol):
    """What changed after a stream position, from memory (notifier/changes.py). Answers that
    cannot be given from memory are "changed" or None, and the store is read."""

    @property
    def position(self) -> int: ...

    def rooms_changed(self, room_ids: Iterable[str], since: int, upto: int) -> set[str] | None: ...

    def state_changes(
        self, room_ids: Iterable[str], since: int, upto: int
    ) -> dict[str, bool] | None: ...

    def membership_changed(self, user_id: str, since: int, upto: int) -> bool: ...


class IgnoredUsers(Protocol):
    """C-S API "Ignoring Users": whose events and invites the user is not sent."""

    async def ignored_users(self, user_id: str) -> frozenset[str]: ...


@dataclass
class RoomsResult:
    join: dict[str, JsonDict] = field(default_factory=dict)
    invite: dict[str, JsonDict] = field(default_factory=dict)
    leave: dict[str, JsonDict] = field(default_factory=dict)
    knock: dict[str, JsonDict] = field(default_factory=dict)
    # Every room the user is joined to at `now` that the filter lets through.
    joined_room_ids: list[str] = field(default_factory=list)


def empty_joined_room(now: StreamToken, f: SyncFilter) -> JsonDict:
    entry: JsonDict = {
        "timeline": {"events": [], "limited": False, "prev_batch": str(now)},
        "state": {"events": []},
        "ephemeral": {"events": []},
        "account_data": {"events": []},
        # Filled in by RoomsSync.add_notification_counts.
        "unread_notifications": {"highlight_count": 0, "notification_count": 0},
        "summary": {},
    }
    if f.timeline.unread_thread_notifications:
        entry["unread_thread_notifications"] = {}
    return entry


@dataclass
class _Sync:
    """One computation: who, with which filter, over (since, now]."""

    user_id: str
    device_id: str
    filter: SyncFilter
    now: StreamToken
    since: int | None  # None: initial sync
    full_state: bool
    # room_id -> the user's (membership, event_id) at `now`.
    memberships: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # Stream positions of the events read so far (for prev_batch).
    positions: dict[str, int] = field(default_factory=dict)
    ignored: frozenset[str] = frozenset()

    @property
    def full(self) -> bool:
        return self.since is None or self.full_state


@dataclass
class _Timeline:
    events: list[Event]
    limited: bool
    memberships: dict[str, str] = field(default_factory=dict)


def memberships_at(
    current: Mapping[str, tuple[str, str]], later_changes: Sequence[MembershipChange]
) -> dict[str, tuple[str, str]]:
    """The user's (membership, event_id) per room at a position, from current state and the
    changes after that position (oldest first): the first later change per room tells what
    was there before it."""
    out = dict(current)
    seen: set[str] = set()
    for change in later_changes:
        if change.room_id in seen:
            continue
        seen.add(change.room_id)
        if change.prev_membership is None or change.prev_event_id is None:
            out.pop(change.room_id, None)
        else:
            out[change.room_id] = (change.prev_membership, change.prev_event_id)
    return out


def state_to_send(
    start: FrozenStateMap,
    end: FrozenStateMap,
    previous: FrozenStateMap,
    timeline_ids: Collection[str],
) -> dict[StateKey, str]:
    """The `state` section's event per key: see the module docstring."""
    out: dict[StateKey, str] = {}
    for key in start.keys() | end.keys():
        at_end, at_start, before = end.get(key), start.get(key), previous.get(key)
        if at_end is not None and at_end not in timeline_ids:
            if at_end != before:
                out[key] = at_end
        elif at_start is not None and at_start != before and at_start not in timeline_ids:
            out[key] = at_start
    return out


def _type_filter(f: RoomEventFilter) -> EventTypeFilter | None:
    if f.is_noop:
        return None
    return EventTypeFilter(f.types, f.not_types, f.senders, f.not_senders)


@dataclass(frozen=True)
class _KnownMemberships:
    """A user's (membership, event_id) per room at stream `position`; never mutated."""

    position: int
    memberships: Mapping[str, tuple[str, str]]


class RoomsSync:
    def __init__(
        self,
        storage: Storage,
        serializer: EventSerializer,
        visibility: EventVisibility,
        changes: StreamChanges,
        forgotten: ForgottenRooms | None = None,
        ignored: IgnoredUsers | None = None,
        memberships_cache_size: int = 10_000,
    ) -> None:
        self.storage = storage
        self.reads = storage.sync_reads
        self.serializer = serializer
        self.visibility = visibility
        self.changes = changes
        self.forgotten = forgotten
        self.ignored = ignored
        # The memberships each syncing user was last seen with: while the notifier has seen
        # no change to them, the next sync needs no read (most syncs of a long-polling
        # client).
        self._memberships: LruCache[str, _KnownMemberships] = LruCache(memberships_cache_size)

    async def add_notification_counts(
        self, user_id: str, join: Mapping[str, JsonDict], f: SyncFilter
    ) -> None:
        """Each joined room entry's unread_notifications (and, when the filter asks,
        unread_thread_notifications): one read for all of them."""
        counts = await self.storage.push.get_unread_counts(user_id, list(join))
        threaded = f.timeline.unread_thread_notifications
        for room_id, entry in join.items():
            main, threads = sync_counts(counts.get(room_id, {}), threaded)
            entry["unread_notifications"] = main
            if threaded:
                entry["unread_thread_notifications"] = threads

    async def joined_rooms(self, user_id: str) -> list[str]:
        """The rooms the user is joined to now."""
        known = self._known_memberships(user_id, self.changes.position, self.changes.position)
        if known is None:
            return await self.storage.rooms.get_rooms_for_user(user_id)
        return [r for r, (membership, _e) in known.items() if membership == JOIN]

    def _known_memberships(
        self, user_id: str, since: int, upto: int
    ) -> Mapping[str, tuple[str, str]] | None:
        """The user's memberships at `upto`, if remembered and unchanged in (since, upto]."""
        known = self._memberships.get_hit(user_id)
        if known is None:
            return None
        low, high = min(since, known.position), max(upto, known.position)
        if self.changes.membership_changed(user_id, low, high):
            return None
        return known.memberships

    async def _memberships_at(
        self, user_id: str, since: int | None, t: int
    ) -> tuple[Mapping[str, tuple[str, str]], list[MembershipChange]]:
        """The user's memberships at `t`, and the changes to them after `since` (all of them
        after `t` as well; none on an initial sync)."""
        if since is not None:
            known = self._known_memberships(user_id, since, t)
            if known is not None:
                return known, []
        current = await self.reads.get_memberships(user_id)
        changes = await self.reads.get_membership_changes(user_id, t if since is None else since)
        at_now = memberships_at(current, [c for c in changes if c.stream_ordering > t])
        self._memberships.put(user_id, _KnownMemberships(t, at_now))
        return at_now, changes

    async def compute(
        self,
        user_id: str,
        device_id: str,
        f: SyncFilter,
        since: StreamToken | None,
        now: StreamToken,
        full_state: bool,
    ) -> RoomsResult:
        t = now.events
        # A token from the future (a database restored from backup) syncs from now.
        s = None if since is None else min(since.events, t)
        at_now, changes = await self._memberships_at(user_id, s, t)
        ctx = _Sync(user_id, device_id, f, now, s, full_state, at_now)
        if self.ignored is not None:
            ctx.ignored = await self.ignored.ignored_users(user_id)
        first_change: dict[str, MembershipChange] = {}
        # Rooms the user was out of at some point in the range (a leave and a re-join).
        was_out: set[str] = set()
        for change in changes:
            if change.stream_ordering <= t:
                first_change.setdefault(change.room_id, change)
                if change.prev_membership != JOIN:
                    was_out.add(change.room_id)

        def pick(*memberships: str) -> dict[str, str]:
            return {
                room_id: event_id
                for room_id, (membership, event_id) in at_now.items()
                if membership in memberships and f.room_allowed(room_id)
            }

        result = RoomsResult()
        joined = pick(JOIN)
        result.joined_room_ids = sorted(joined)
        # A room joined in the range is sent whole, as on an initial sync.
        newly_joined = {r for r in joined if ctx.full or r in was_out}
        result.join = await self._joined(ctx, joined, newly_joined)
        for section, membership, carried in (
            (result.invite, INVITE, "invite_room_state"),
            (result.knock, KNOCK, "knock_room_state"),
        ):
            rooms = {r: e for r, e in pick(membership).items() if ctx.full or r in first_change}
            if rooms and ctx.ignored:
                # "Ignoring Users": invites from an ignored user are not shown.
                member_events = await self.storage.events.get_events(rooms.values())
                rooms = {
                    r: e
                    for r, e in rooms.items()
                    if e not in member_events or member_events[e].sender not in ctx.ignored
                }
            stripped = await stripped_states(self.storage, rooms, carried)
            key = "invite_state" if membership == INVITE else "knock_state"
            for room_id, events in stripped.items():
                section[room_id] = {key: {"events": events}}
        left = {
            r: e
            for r, e in pick(LEAVE, BAN).items()
            if r in first_change or (ctx.full and f.include_leave)
        }
        if left and self.forgotten is not None:
            forgotten = await self.forgotten.get_forgotten_room_ids(user_id)
            left = {r: e for r, e in left.items() if r not in forgotten}
        at_since = {r: c.prev_membership for r, c in first_change.items()}
        result.leave = await self._left(ctx, left, at_since)
        return result

    # --- joined rooms ------------------------------------------------------------------------

    async def _joined(
        self, ctx: _Sync, joined: Mapping[str, str], newly_joined: set[str]
    ) -> dict[str, JsonDict]:
        f, t, s = ctx.filter, ctx.now.events, ctx.since
        # Rooms with no event in (since, now] have neither timeline nor state to send.
        changed = None if s is None or ctx.full else self.changes.rooms_changed(joined, s, t)
        to_read = list(joined) if changed is None else [r for r in joined if r in changed]
        timelines = {r: _Timeline([], False) for r in joined}
        timelines.update(await self._timelines(ctx, to_read, s or 0, {r: t for r in to_read}))
        with_changes: dict[str, bool] = {}
        if not ctx.full and to_read:
            known = self.changes.state_changes(to_read, s or 0, t)
            with_changes = (
                known
                if known is not None
                else await self.reads.get_rooms_with_state_changes(to_read, s or 0, t)
            )
        member_changes = {r for r, members in with_changes.items() if members}
        summaries = await room_summaries(
            self.storage, self.reads, ctx.user_id, sorted(newly_joined | member_changes)
        )
        lazy = f.state.lazy_load_members
        needs_state = [
            r
            for r in joined
            if f.state.matches_room(r)
            and (
                r in newly_joined
                or r in with_changes
                or timelines[r].limited
                or (lazy and timelines[r].events)
            )
        ]
        end_groups = await self.reads.get_state_groups_at(needs_state, t)
        previous_groups: Mapping[str, int | None] = {}
        if s is not None:
            previous_groups = await self.reads.get_state_groups_at(
                [r for r in needs_state if r not in newly_joined], s
            )
        states = await self._state_events(
            ctx,
            {
                r: (
                    timelines[r],
                    end_groups.get(r),
                    None if r in newly_joined else previous_groups.get(r),
                    set(summaries.get(r, {}).get("m.heroes", [])),
                )
                for r in needs_state
            },
        )
        serialized = await self._serialize_timelines(ctx, timelines)
        out: dict[str, JsonDict] = {}
        for room_id in joined:
            timeline = timelines[room_id]
            state = states.get(room_id, [])
            if not (
                ctx.full
                or room_id in newly_joined
                or timeline.events
                or state
                or room_id in summaries
            ):
                continue
            entry = empty_joined_room(ctx.now, f)
            entry["timeline"] = self._timeline_json(ctx, timeline, serialized[room_id])
            entry["state"]["events"] = state
            entry["summary"] = summaries.get(room_id, {})
            out[room_id] = entry
        return out

    def _timeline_json(self, ctx: _Sync, timeline: _Timeline, events: list[JsonDict]) -> JsonDict:
        prev_batch = ctx.now
        if timeline.events:
            first = timeline.events[0]
            position = ctx.positions.get(first.event_id)
            if position is not None:
                prev_batch = ctx.now.with_position("events", max(position - 1, 0))
        return {"events": events, "limited": timeline.limited, "prev_batch": str(prev_batch)}

    async def _timelines(
        self,
        ctx: _Sync,
        rooms: Collection[str],
        low: int,
        highs: Mapping[str, int],
    ) -> dict[str, _Timeline]:
        """Each room's timeline in (low, highs[room]], with history visibility applied where
        the user was not joined throughout. Rooms sharing an upper bound are read together."""
        tf = ctx.filter.timeline
        wanted = [r for r in rooms if tf.matches_room(r)]
        by_high: dict[int, list[str]] = {}
        for room_id in wanted:
            by_high.setdefault(highs[room_id], []).append(room_id)
        ids: dict[str, tuple[list[str], bool]] = {}
        for high, group in by_high.items():
            ids.update(
                await self.reads.get_timelines(
                    group, low, high, ctx.filter.timeline_limit, _type_filter(tf)
                )
            )
        all_ids = [e for room_ids, _ in ids.values() for e in room_ids]
        events = await self.storage.events.get_events(all_ids)
        member_events = ctx.memberships
        metas = await self.storage.events.get_event_metas(
            all_ids + [e for r, (_m, e) in member_events.items() if r in ids]
        )
        ctx.positions.update((i, m.stream_ordering) for i, m in metas.items())
        out = {r: _Timeline([], False) for r in rooms}
        to_check: list[Event] = []
        for room_id, (room_ids, limited) in ids.items():
            room_events = [
                events[i]
                for i in room_ids
                if i in events
                and tf.matches_event(events[i])
                and shown_despite_ignoring(events[i], ctx.ignored)
            ]
            out[room_id] = _Timeline(room_events, limited)
            membership, member_event_id = member_events.get(room_id, ("", ""))
            member = metas.get(member_event_id)
            # Joined since before the timeline's first event and still joined: every event
            # in it is visible, whatever the history visibility.
            joined_throughout = (
                membership == JOIN
                and member is not None
                and bool(room_events)
                and member.stream_ordering < metas[room_events[0].event_id].stream_ordering
            )
            if not joined_throughout:
                to_check.extend(room_events)
        if to_check:
            visible = await self.visibility.filter_events(ctx.user_id, to_check, metas)
            seen = {e.event_id for e in visible.events}
            checked = {e.room_id for e in to_check}
            for room_id in checked:
                timeline = out[room_id]
                timeline.events = [e for e in timeline.events if e.event_id in seen]
                timeline.memberships = {
                    e.event_id: visible.memberships[e.event_id]
                    for e in timeline.events
                    if e.event_id in visible.memberships
                }
        return out

    async def _serialize_timelines(
        self, ctx: _Sync, timelines: Mapping[str, _Timeline]
    ) -> dict[str, list[JsonDict]]:
        flat = [e for t in timelines.values() for e in t.events]
        memberships = {k: v for t in timelines.values() for k, v in t.memberships.items()}
        rendered = await self._render(ctx, flat, memberships)
        out: dict[str, list[JsonDict]] = {}
        i = 0
        for room_id, timeline in timelines.items():
            out[room_id] = rendered[i : i + len(timeline.events)]
            i += len(timeline.events)
        return out

    async def _render(
        self,
        ctx: _Sync,
        events: Sequence[Event],
        memberships: Mapping[str, str] | None = None,
        *,
        replaced_state: bool = True,
    ) -> list[JsonDict]:
        """Events as the filter's event_format and event_fields ask (sync_filter.yaml).
        `replaced_state` (prev_content, replaces_state) is for timelines: for a whole state
        section it would read a state group per event."""
        if ctx.filter.event_format == "federation":
            rendered = await self.serializer.federation_format(events)
        else:
            rendered = await self.serializer.serialize(
                events,
                user_id=ctx.user_id,
                device_id=ctx.device_id,
                memberships=memberships,
                include_room_id=False,
                replaced_state=replaced_state,
            )
        project = field_projector(ctx.filter.event_fields)
        return [project(e) for e in rendered]

    # --- state -------------------------------------------------------------------------------

    async def _state_events(
        self,
        ctx: _Sync,
        rooms: Mapping[str, tuple[_Timeline, int | None, int | None, set[str]]],
    ) -> dict[str, list[JsonDict]]:
        """The `state` section per room, from (timeline, group at the end, group at since or
        None for a full state, heroes)."""
        if not rooms:
            return {}
        first_ids = [t.events[0].event_id for t, _, _, _ in rooms.values() if t.events]
        first_metas = await self.storage.events.get_event_metas(first_ids)
        starts: dict[str, int | None] = {}
        for room_id, (timeline, end, _, _) in rooms.items():
            if timeline.events:
                meta = first_metas.get(timeline.events[0].event_id)
                starts[room_id] = meta.state_group_before if meta else None
            else:
                starts[room_id] = end
        groups = {g for g in starts.values() if g is not None}
        groups |= {g for _, end, prev, _ in rooms.values() for g in (end, prev) if g is not None}
        loaded = await self.storage.state.get_states(sorted(groups))

        def state_of(group: int | None) -> FrozenStateMap:
            return EMPTY_STATE if group is None else loaded[group]

        chosen: dict[str, dict[StateKey, str]] = {}
        for room_id, (timeline, end, prev, heroes) in rooms.items():
            full = prev is None
            start_state = state_of(starts[room_id])
            in_timeline = {e.event_id for e in timeline.events}
            ids = state_to_send(start_state, state_of(end), state_of(prev), in_timeline)
            if ctx.filter.state.lazy_load_members:
                ids = _lazy_members(
                    ids, start_state, timeline, in_timeline, ctx.user_id, heroes, full
                )
            chosen[room_id] = ids
        events = await self.storage.events.get_events(
            {e for ids in chosen.values() for e in ids.values()}
        )
        sf = ctx.filter.state
        per_room: dict[str, list[Event]] = {}
        for room_id, ids in chosen.items():
            # Stable order: by key, so responses do not vary between identical syncs.
            room_events = [events[e] for _k, e in sorted(ids.items()) if e in events]
            per_room[room_id] = [e for e in room_events if sf.matches_event(e)]
            if sf.limit is not None:
                per_room[room_id] = per_room[room_id][: sf.limit]
        flat = [e for evs in per_room.values() for e in evs]
        rendered = await self._render(ctx, flat, replaced_state=False)
        out: dict[str, list[JsonDict]] = {}
        i = 0
        for room_id, room_events in per_room.items():
            out[room_id] = rendered[i : i + len(room_events)]
            i += len(room_events)
        return out

    # --- left rooms --------------------------------------------------------------------------

    async def _left(
        self, ctx: _Sync, left: Mapping[str, str], at_since: Mapping[str, str | None]
    ) -> dict[str, JsonDict]:
        """Rooms left or banned from: the timeline up to the leave, and state (sync.yaml
        "Left rooms"). A user who was never joined (a rejected invite) sees only the leave."""
        if not left:
            return {}
        metas = await self.storage.events.get_event_metas(list(left.values()))
        low = ctx.since or 0
        highs = {r: metas[e].stream_ordering for r, e in left.items() if e in metas}
        # The timeline and state are shown when the leave ended a stay in the room (a leave,
        # kick or ban of a member); otherwise (a rejected or withdrawn invite, a ban of
        # someone already gone) the user gets the leave event alone.
        before = await self.reads.get_memberships_before(ctx.user_id, highs)
        ever_joined = {r for r, membership in before.items() if membership == JOIN}
        timelines = await self._timelines(ctx, [r for r in highs if r in ever_joined], low, highs)
        leave_events = await self.storage.events.get_events(left.values())
        for room_id, event_id in left.items():
            if room_id not in ever_joined and event_id in leave_events and room_id in highs:
                if ctx.filter.timeline.matches_room(room_id):
                    timelines[room_id] = _Timeline([leave_events[event_id]], False)
                    ctx.positions[event_id] = highs[room_id]
        needs_state = [
            r for r in timelines if r in ever_joined and ctx.filter.state.matches_room(r)
        ]
        previous: Mapping[str, int | None] = {}
        incremental = [r for r in needs_state if not ctx.full and at_since.get(r) == JOIN]
        if ctx.since is not None and incremental:
            previous = await self.reads.get_state_groups_at(incremental, ctx.since)
        states = await self._state_events(
            ctx,
            {
                r: (
                    timelines[r],
                    metas[left[r]].state_group_after,
                    previous.get(r) if r in incremental else None,
                    set(),
                )
                for r in needs_state
            },
        )
        serialized = await self._serialize_timelines(ctx, timelines)
        out: dict[str, JsonDict] = {}
        for room_id in left:
            timeline = timelines.get(room_id, _Timeline([], False))
            out[room_id] = {
                "timeline": self._timeline_json(ctx, timeline, serialized.get(room_id, [])),
                "state": {"events": states.get(room_id, [])},
                "account_data": {"events": []},
            }
        return out


def shown_despite_ignoring(event: Event, ignored: Collection[str]) -> bool:
    """C-S API "Ignoring Users": the ignored users' messages are hidden (in /sync and
    /threads); their state events stay, or the room's state would not add up."""
    return event.sender not in ignored or event.is_state()


def _lazy_members(
    ids: dict[StateKey, str],
    start: FrozenStateMap,
    timeline: _Timeline,
    in_timeline: set[str],
    user_id: str,
    heroes: set[str],
    full: bool,
) -> dict[StateKey, str]:
    """C-S API "Lazy-loading room members": of the member events, keep those of the timeline's
    senders, and on a full state the user's own and the heroes'. On an incremental sync the
    member events that changed in the gap stay as well (sync.yaml: they "MUST" be sent)."""
    wanted = {e.sender for e in timeline.events}
    if full:
        wanted |= {user_id} | heroes
        ids = {k: v for k, v in ids.items() if k[0] != MEMBER or k[1] in wanted}
    for member in wanted:
        key = (MEMBER, member)
        event_id = start.get(key)
        if key not in ids and event_id is not None and event_id not in in_timeline:
            ids[key] = event_id
    return ids
