"""Push rules per user and the notification rows derived from events (C-S API "Push
Notifications"): what /pushrules edits, what /sync counts and what /notifications lists."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from homeserver.storage.database import Database, Queryable, Txn

MAIN_THREAD = "main"


@dataclass(frozen=True, slots=True)
class StoredRule:
    kind: str
    rule_id: str
    conditions: list[Any]
    pattern: str | None
    actions: list[Any]
    enabled: bool


@dataclass(frozen=True, slots=True)
class DefaultRuleChange:
    """A user's change to a server-default rule; None keeps the default's value."""

    enabled: bool | None
    actions: list[Any] | None


@dataclass
class UserRules:
    """A user's own rules, most important first within each kind, and their changes to the
    server-default rules."""

    rules: list[StoredRule]
    default_changes: dict[str, DefaultRuleChange]


@dataclass(frozen=True, slots=True)
class PushActionRow:
    user_id: str
    event_id: str
    room_id: str
    stream_ordering: int
    thread_id: str
    notify: bool
    highlight: bool
    actions: list[Any]
    ts: int
    # The room row's notify and highlight for this event (room_push_outcomes), which this
    # row replaces for its user.
    base_notify: bool = False
    base_highlight: bool = False


@dataclass(frozen=True, slots=True)
class RoomOutcomeRow:
    """An event's outcome for every joined local member but those with rows of their own."""

    room_id: str
    stream_ordering: int
    event_id: str
    thread_id: str
    sender: str
    notify: bool
    highlight: bool
    actions: list[Any]
    ts: int


@dataclass(frozen=True, slots=True)
class NotificationRow:
    event_id: str
    room_id: str
    stream_ordering: int
    actions: list[Any]
    ts: int
    read: bool


@dataclass(frozen=True, slots=True)
class UnreadCounts:
    notifications: int
    highlights: int


@dataclass(frozen=True, slots=True)
class Pusher:
    user_id: str
    app_id: str
    pushkey: str
    kind: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict[str, Any]
    pushkey_ts: int
    # The device whose session set it (None when unknown): its logout removes the pusher.
    device_id: str | None = None
    # Notification rows up to this stream position were handled (pusher_pool.py).
    last_stream_ordering: int = 0
    failing_since: int | None = None


class AnchorNotFound(Exception):
    """A `before`/`after` rule that is not among the user's rules of that kind."""


class PushStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- rules -------------------------------------------------------------------------

    async def get_rules(
        self, user_ids: Collection[str], q: Queryable | None = None
    ) -> dict[str, UserRules]:
        """Every user's rules (users without any get empty UserRules); `q` reads inside a
        transaction."""
        q = q or self.db
        out = {u: UserRules([], {}) for u in user_ids}
        if not out:
            return out
        cond, arg = q.in_list("user_id", 1, list(out))
        for row in await q.fetch(
            "SELECT user_id, kind, rule_id, conditions, pattern, actions, enabled"
            f" FROM push_rules WHERE {cond} ORDER BY user_id, kind, priority DESC",
            arg,
        ):
            out[row[0]].rules.append(
                StoredRule(
                    row[1], row[2], json.loads(row[3]), row[4], json.loads(row[5]), bool(row[6])
                )
            )
        for row in await q.fetch(
            "SELECT user_id, rule_id, enabled, actions FROM push_rule_default_changes"
            f" WHERE {cond}",
            arg,
        ):
            out[row[0]].default_changes[row[1]] = DefaultRuleChange(
                None if row[2] is None else bool(row[2]),
                None if row[3] is None else json.loads(row[3]),
            )
        return out

    async def put_rule(
        self,
        user_id: str,
        rule: StoredRule,
        before: str | None,
        after: str | None,
    ) -> None:
        """Create or update a rule. With `before` (or `after`) it goes right above (or below)
        that rule; a new rule without either becomes the most important of its kind; an
        updated one keeps its place. Raises AnchorNotFound."""
        async with self.db.transaction() as txn:
            order = [
                r[0]
                for r in await txn.fetch(
                    "SELECT rule_id FROM push_rules WHERE user_id = $1 AND kind = $2"
                    " ORDER BY priority DESC",
                    user_id,
                    rule.kind,
                )
            ]
            exists = rule.rule_id in order
            if before is not None or after is not None or not exists:
                order = [r for r in order if r != rule.rule_id]
                if before is not None:
                    position = _index_of(order, before)
                elif after is not None:
                    position = _index_of(order, after) + 1
                else:
                    position = 0
                order.insert(position, rule.rule_id)
            await txn.execute(
                "INSERT INTO push_rules (user_id, kind, rule_id, priority, conditions, pattern,"
                " actions, enabled) VALUES ($1, $2, $3, 0, $4, $5, $6, TRUE)"
                " ON CONFLICT (user_id, kind, rule_id) DO UPDATE SET conditions ="
                " excluded.conditions, pattern = excluded.pattern, actions = excluded.actions",
                user_id,
                rule.kind,
                rule.rule_id,
                json.dumps(rule.conditions),
                rule.pattern,
                json.dumps(rule.actions),
            )
            await txn.executemany(
                "UPDATE push_rules SET priority = $4 WHERE user_id = $1 AND kind = $2"
                " AND rule_id = $3",
                [(user_id, rule.kind, r, len(order) - i) for i, r in enumerate(order)],
            )

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> bool:
        rows = await self.db.fetch(
            "DELETE FROM push_rules WHERE user_id = $1 AND kind = $2 AND rule_id = $3"
            " RETURNING rule_id",
            user_id,
            kind,
            rule_id,
        )
        return bool(rows)

    async def update_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        *,
        enabled: bool | None = None,
        actions: list[Any] | None = None,
    ) -> bool:
        """Set `enabled` and/or `actions` of a user's own rule; False when there is none."""
        rows = await self.db.fetch(
            "UPDATE push_rules SET enabled = COALESCE($4, enabled),"
            " actions = COALESCE($5, actions) WHERE user_id = $1 AND kind = $2 AND rule_id = $3"
            " RETURNING rule_id",
            user_id,
            kind,
            rule_id,
            enabled,
            None if actions is None else json.dumps(actions),
        )
        return bool(rows)

    async def change_default_rule(
        self,
        user_id: str,
        rule_id: str,
        *,
        enabled: bool | None = None,
        actions: list[Any] | None = None,
    ) -> None:
        await self.db.execute(
            "INSERT INTO push_rule_default_changes (user_id, rule_id, enabled, actions)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, rule_id) DO UPDATE SET"
            " enabled = COALESCE(excluded.enabled, push_rule_default_changes.enabled),"
            " actions = COALESCE(excluded.actions, push_rule_default_changes.actions)",
            user_id,
            rule_id,
            enabled,
            None if actions is None else json.dumps(actions),
        )

    # -- notification rows -------------------------------------------------------------
    #
    # An event's outcome for the joined members the rules treat alike is one row of
    # room_push_outcomes; event_push_actions holds a user's own outcome only where it differs
    # (a mention, rules of their own, an invite), with the room row's values beside it
    # (base_*), so a count is the room rows' plus the sum of (own - base). Which room rows
    # count for a user is decided by push_positions (since they joined, after what they read
    # of every thread) and push_thread_reads (after what they read of each thread).

    async def add_push_actions_txn(
        self, txn: Txn, room_rows: Sequence[RoomOutcomeRow], rows: Sequence[PushActionRow]
    ) -> None:
        # The rows of one outcome share its actions list: encoded once, not once per row.
        encoded: dict[int, str] = {}

        def actions_json(actions: list[Any]) -> str:
            text = encoded.get(id(actions))
            if text is None:
                text = encoded[id(actions)] = json.dumps(actions)
            return text

        if room_rows:
            await txn.executemany(
                "INSERT INTO room_push_outcomes (room_id, stream_ordering, event_id, thread_id,"
                " sender, notif, highlight, actions, ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
                [
                    (
                        r.room_id,
                        r.stream_ordering,
                        r.event_id,
                        r.thread_id,
                        r.sender,
                        r.notify,
                        r.highlight,
                        actions_json(r.actions),
                        r.ts,
                    )
                    for r in room_rows
                ],
            )
        if rows:
            await txn.executemany(
                "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_ordering,"
                " thread_id, notif, highlight, actions, ts, base_notif, base_highlight)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                [
                    (
                        r.user_id,
                        r.event_id,
                        r.room_id,
                        r.stream_ordering,
                        r.thread_id,
                        r.notify,
                        r.highlight,
                        actions_json(r.actions),
                        r.ts,
                        r.base_notify,
                        r.base_highlight,
                    )
                    for r in rows
                ],
            )

    async def joined_txn(self, txn: Txn, user_id: str, room_id: str, position: int) -> None:
        """A local user joined the room at stream `position`: nothing before counts for them."""
        await txn.execute(
            "INSERT INTO push_positions (user_id, room_id, joined_at, read_floor)"
            " VALUES ($1, $2, $3, $3) ON CONFLICT (user_id, room_id) DO UPDATE"
            " SET joined_at = excluded.joined_at, read_floor = excluded.read_floor",
            user_id,
            room_id,
            position,
        )

    async def left_txn(self, txn: Txn, user_id: str, room_id: str) -> None:
        await txn.execute(
            "DELETE FROM push_positions WHERE user_id = $1 AND room_id = $2", user_id, room_id
        )

    async def mark_read(
        self,
        user_id: str,
        room_id: str,
        up_to: int,
        thread_id: str | None,
        q: Queryable | None = None,
    ) -> None:
        """Notifications of the room up to and including stream position `up_to` become
        read: those of `thread_id` (MAIN_THREAD for the main timeline), or of every thread
        with None. Positions only move forward."""
        q = q or self.db
        if thread_id is None:
            await q.execute(
                "UPDATE push_positions SET read_floor = $3 WHERE user_id = $1 AND room_id = $2"
                " AND read_floor < $3",
                user_id,
                room_id,
                up_to,
            )
            return
        await q.execute(
            "INSERT INTO push_thread_reads (user_id, room_id, thread_id, stream_ordering)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, room_id, thread_id) DO UPDATE"
            " SET stream_ordering = excluded.stream_ordering"
            " WHERE push_thread_reads.stream_ordering < excluded.stream_ordering",
            user_id,
            room_id,
            thread_id,
            up_to,
        )

    async def get_unread_counts(
        self, user_id: str, room_ids: Collection[str] | None
    ) -> dict[str, dict[str, UnreadCounts]]:
        """room_id -> thread_id -> unread counts, for the rooms with any (of every room the
        user is in with None)."""
        if room_ids is not None and not room_ids:
            return {}
        room_cond, args = "", [user_id]
        if room_ids is not None:
            cond, arg = self.db.in_list("f.room_id", 2, room_ids)
            room_cond, args = f" AND {cond}", [user_id, arg]
        unread = (
            "JOIN push_positions f ON f.user_id = $1 AND f.room_id = x.room_id"
            " LEFT JOIN push_thread_reads t ON t.user_id = $1 AND t.room_id = x.room_id"
            " AND t.thread_id = x.thread_id"
            " WHERE x.stream_ordering > f.read_floor"
            " AND x.stream_ordering > COALESCE(t.stream_ordering, 0)"
        )
        rows = await self.db.fetch(
            "SELECT x.room_id, x.thread_id, SUM(CASE WHEN x.notif THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN x.highlight THEN 1 ELSE 0 END) FROM room_push_outcomes x"
            f" {unread}{room_cond} AND x.sender <> $1 GROUP BY x.room_id, x.thread_id"
            " UNION ALL SELECT x.room_id, x.thread_id,"
            " SUM((CASE WHEN x.notif THEN 1 ELSE 0 END)"
            " - (CASE WHEN x.base_notif THEN 1 ELSE 0 END)),"
            " SUM((CASE WHEN x.highlight THEN 1 ELSE 0 END)"
            " - (CASE WHEN x.base_highlight THEN 1 ELSE 0 END)) FROM event_push_actions x"
            f" {unread}{room_cond} AND x.user_id = $1 GROUP BY x.room_id, x.thread_id",
            *args,
        )
        totals: dict[tuple[str, str], list[int]] = {}
        for room_id, thread_id, notifications, highlights in rows:
            total = totals.setdefault((room_id, thread_id), [0, 0])
            total[0] += int(notifications or 0)
            total[1] += int(highlights or 0)
        out: dict[str, dict[str, UnreadCounts]] = {}
        for (room_id, thread_id), (notifications, highlights) in totals.items():
            if notifications or highlights:
                out.setdefault(room_id, {})[thread_id] = UnreadCounts(notifications, highlights)
        return out

    def _user_notifications(self) -> str:
        """The user's ($1) notification rows: the room rows of rooms they are in since they
        joined, where they have no row of their own, and their own rows; with whether each
        is read."""
        read = (
            "(x.stream_ordering <= f.read_floor"
            " OR x.stream_ordering <= COALESCE(t.stream_ordering, 0))"
        )
        threads = (
            "LEFT JOIN push_thread_reads t ON t.user_id = $1 AND t.room_id = x.room_id"
            " AND t.thread_id = x.thread_id"
        )
        return (
            f"SELECT x.event_id, x.room_id, x.stream_ordering, x.thread_id, x.notif,"
            f" x.highlight, x.actions, x.ts, {read} AS is_read FROM room_push_outcomes x"
            " JOIN push_positions f ON f.user_id = $1 AND f.room_id = x.room_id"
            f" {threads} WHERE x.stream_ordering > f.joined_at AND x.sender <> $1"
            " AND NOT EXISTS (SELECT 1 FROM event_push_actions o WHERE o.user_id = $1"
            " AND o.event_id = x.event_id)"
            " UNION ALL SELECT x.event_id, x.room_id, x.stream_ordering, x.thread_id, x.notif,"
            f" x.highlight, x.actions, x.ts, COALESCE({read}, FALSE) AS is_read"
            " FROM event_push_actions x"
            " LEFT JOIN push_positions f ON f.user_id = $1 AND f.room_id = x.room_id"
            f" {threads} WHERE x.user_id = $1"
        )

    async def get_notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[NotificationRow]:
        """A user's notifications, newest first, below stream position `before`."""
        sql = f"SELECT * FROM ({self._user_notifications()}) n WHERE notif"
        args: list[Any] = [user_id]
        if before is not None:
            args.append(before)
            sql += f" AND stream_ordering < ${len(args)}"
        if only_highlight:
            sql += " AND highlight"
        args.append(limit)
        sql += f" ORDER BY stream_ordering DESC LIMIT ${len(args)}"
        return [
            NotificationRow(r[0], r[1], r[2], json.loads(r[6]), r[7], bool(r[8]))
            for r in await self.db.fetch(sql, *args)
        ]

    async def pending_notifications(
        self, user_id: str, after: int, limit: int
    ) -> list[PushActionRow]:
        """The user's unread notifying rows after stream position `after`, oldest first."""
        rows = await self.db.fetch(
            f"SELECT * FROM ({self._user_notifications()}) n WHERE notif AND NOT is_read"
            " AND stream_ordering > $2 ORDER BY stream_ordering LIMIT $3",
            user_id,
            after,
            limit,
        )
        return [
            PushActionRow(user_id, r[0], r[1], r[2], r[3], True, bool(r[5]), json.loads(r[6]), r[7])
            for r in rows
        ]

    async def count_unread(self, user_id: str) -> int:
        """Unread notifications in all the user's rooms (the push gateway's `counts.unread`)."""
        counts = await self.get_unread_counts(user_id, None)
        return sum(c.notifications for threads in counts.values() for c in threads.values())

    # -- pushers -----------------------------------------------------------------------

    async def set_pusher(self, pusher: Pusher, append: bool) -> None:
        """Create or replace a pusher; without `append`, other users' pushers with the same
        app_id and pushkey go (pusher.yaml `append`). A new pusher starts at
        pusher.last_stream_ordering; a replaced one keeps its place."""
        async with self.db.transaction() as txn:
            if not append:
                await txn.execute(
                    "DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3",
                    pusher.app_id,
                    pusher.pushkey,
                    pusher.user_id,
                )
            await txn.execute(
                "INSERT INTO pushers (user_id, app_id, pushkey, kind, app_display_name,"
                " device_display_name, profile_tag, lang, data, pushkey_ts, device_id,"
                " last_stream_ordering) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,"
                " app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name,"
                " profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data,"
                " device_id = excluded.device_id",
                pusher.user_id,
                pusher.app_id,
                pusher.pushkey,
                pusher.kind,
                pusher.app_display_name,
                pusher.device_display_name,
                pusher.profile_tag,
                pusher.lang,
                json.dumps(pusher.data),
                pusher.pushkey_ts,
                pusher.device_id,
                pusher.last_stream_ordering,
            )

    async def delete_pusher(self, user_id: str, app_id: str, pushkey: str) -> None:
        await self.db.execute(
            "DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            user_id,
            app_id,
            pushkey,
        )

    async def get_pushers(self, user_ids: Collection[str]) -> list[Pusher]:
        if not user_ids:
            return []
        cond, arg = self.db.in_list("user_id", 1, user_ids)
        return await self._pushers(f"WHERE {cond}", arg)

    async def get_all_pushers(self) -> list[Pusher]:
        return await self._pushers("")

    async def _pushers(self, where: str, *args: Any) -> list[Pusher]:
        rows = await self.db.fetch(
            "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name,"
            " profile_tag, lang, data, pushkey_ts, device_id, last_stream_ordering,"
            f" failing_since FROM pushers {where} ORDER BY user_id, app_id, pushkey",
            *args,
        )
        return [
            Pusher(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                json.loads(r[8]),
                r[9],
                r[10],
                r[11],
                r[12],
            )
            for r in rows
        ]

    async def pusher_exists(self, pusher: Pusher) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            pusher.user_id,
            pusher.app_id,
            pusher.pushkey,
        )
        return row is not None

    async def set_pusher_position(
        self, pusher: Pusher, position: int, failing_since: int | None
    ) -> None:
        await self.db.execute(
            "UPDATE pushers SET last_stream_ordering = $4, failing_since = $5"
            " WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            pusher.user_id,
            pusher.app_id,
            pusher.pushkey,
            position,
            failing_since,
        )


def _index_of(order: list[str], rule_id: str) -> int:
    try:
        return order.index(rule_id)
    except ValueError:
        raise AnchorNotFound(rule_id) from None
