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

    async def add_push_actions_txn(self, txn: Txn, rows: Sequence[PushActionRow]) -> None:
        await txn.executemany(
            "INSERT INTO event_push_actions (user_id, event_id, room_id, stream_ordering,"
            " thread_id, notif, highlight, actions, ts)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            [
                (
                    r.user_id,
                    r.event_id,
                    r.room_id,
                    r.stream_ordering,
                    r.thread_id,
                    r.notify,
                    r.highlight,
                    json.dumps(r.actions),
                    r.ts,
                )
                for r in rows
            ],
        )

    async def mark_read(
        self,
        user_id: str,
        room_id: str,
        up_to: int,
        thread_id: str | None,
        q: Queryable | None = None,
    ) -> None:
        """Rows of the room up to and including stream position `up_to` become read: those
        of `thread_id` (MAIN_THREAD for the main timeline), or of every thread with None."""
        q = q or self.db
        sql = (
            "UPDATE event_push_actions SET is_read = TRUE WHERE user_id = $1 AND room_id = $2"
            " AND stream_ordering <= $3 AND NOT is_read"
        )
        if thread_id is None:
            await q.execute(sql, user_id, room_id, up_to)
        else:
            await q.execute(sql + " AND thread_id = $4", user_id, room_id, up_to, thread_id)

    async def get_unread_counts(
        self, user_id: str, room_ids: Collection[str]
    ) -> dict[str, dict[str, UnreadCounts]]:
        """room_id -> thread_id -> unread counts, for the rooms with any."""
        if not room_ids:
            return {}
        cond, arg = self.db.in_list("room_id", 2, room_ids)
        rows = await self.db.fetch(
            "SELECT room_id, thread_id, SUM(CASE WHEN notif THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN highlight THEN 1 ELSE 0 END) FROM event_push_actions"
            f" WHERE user_id = $1 AND {cond} AND NOT is_read GROUP BY room_id, thread_id",
            user_id,
            arg,
        )
        out: dict[str, dict[str, UnreadCounts]] = {}
        for room_id, thread_id, notifications, highlights in rows:
            out.setdefault(room_id, {})[thread_id] = UnreadCounts(
                int(notifications), int(highlights)
            )
        return out

    async def get_notifications(
        self, user_id: str, before: int | None, limit: int, only_highlight: bool
    ) -> list[NotificationRow]:
        """A user's notification rows, newest first, below stream position `before`."""
        sql = (
            "SELECT event_id, room_id, stream_ordering, actions, ts, is_read"
            " FROM event_push_actions WHERE user_id = $1 AND notif"
        )
        args: list[Any] = [user_id]
        if before is not None:
            args.append(before)
            sql += f" AND stream_ordering < ${len(args)}"
        if only_highlight:
            sql += " AND highlight"
        args.append(limit)
        sql += f" ORDER BY stream_ordering DESC LIMIT ${len(args)}"
        return [
            NotificationRow(r[0], r[1], r[2], json.loads(r[3]), r[4], bool(r[5]))
            for r in await self.db.fetch(sql, *args)
        ]

    # -- pushers -----------------------------------------------------------------------

    async def set_pusher(self, pusher: Pusher, append: bool) -> None:
        """Create or replace a pusher; without `append`, other users' pushers with the same
        app_id and pushkey go (pusher.yaml `append`)."""
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
                " device_display_name, profile_tag, lang, data, pushkey_ts)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                " ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET kind = excluded.kind,"
                " app_display_name = excluded.app_display_name,"
                " device_display_name = excluded.device_display_name,"
                " profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data",
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
        rows = await self.db.fetch(
            "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name,"
            f" profile_tag, lang, data, pushkey_ts FROM pushers WHERE {cond}"
            " ORDER BY user_id, app_id, pushkey",
            arg,
        )
        return [
            Pusher(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]), r[9])
            for r in rows
        ]

    async def count_unread(self, user_id: str) -> int:
        """Unread notifications in all the user's rooms (the push gateway's `counts.unread`)."""
        count = await self.db.fetchval(
            "SELECT COUNT(*) FROM event_push_actions WHERE user_id = $1 AND notif AND NOT is_read",
            user_id,
        )
        return int(count or 0)


def _index_of(order: list[str], rule_id: str) -> int:
    try:
        return order.index(rule_id)
    except ValueError:
        raise AnchorNotFound(rule_id) from None
