"""PushRulesHandler: a user's push rule set, the server-default rules merged with their own
(C-S API "Push Rules: API", pushrules.yaml), its edits, and the compiled rule sets the
notification counts evaluate. Every edit is mirrored into the `m.push_rules` account data
that /sync shows ("Push Rules: Events")."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol

from homeserver.errors import Codes, InvalidParam, MatrixError, NotFound
from homeserver.lru import LruCache
from homeserver.push.default_rules import (
    DEFAULT_RULE_KINDS,
    DEFAULT_RULES,
    KINDS,
    USER_ID,
    for_user,
)
from homeserver.push.evaluator import CompiledRuleset
from homeserver.storage.database import Queryable
from homeserver.storage.stores.push import AnchorNotFound, PushStore, StoredRule, UserRules

JsonDict = dict[str, Any]
PUSH_RULES = "m.push_rules"
SCOPE = "global"


class AccountDataWriter(Protocol):
    async def set(
        self, user_id: str, room_id: str | None, data_type: str, content: Mapping[str, Any]
    ) -> int: ...


def ruleset_json(user_id: str, stored: UserRules) -> dict[str, list[JsonDict]]:
    """The rule set in evaluation order: `.m.rule.master` first, then per kind the user's
    rules before the server-default ones ("Predefined Rules")."""
    out: dict[str, list[JsonDict]] = {kind: [] for kind in KINDS}
    for rule in stored.rules:
        entry: JsonDict = {
            "rule_id": rule.rule_id,
            "default": False,
            "enabled": rule.enabled,
            "actions": rule.actions,
        }
        if rule.kind in ("override", "underride"):
            entry["conditions"] = rule.conditions
        elif rule.kind == "content":
            entry["pattern"] = rule.pattern or ""
        out[rule.kind].append(entry)
    for kind, defaults in DEFAULT_RULES.items():
        filled = []
        for default in defaults:
            filled_rule = for_user(default, user_id)
            change = stored.default_changes.get(filled_rule["rule_id"])
            if change is not None and change.enabled is not None:
                filled_rule["enabled"] = change.enabled
            if change is not None and change.actions is not None:
                filled_rule["actions"] = change.actions
            filled.append(filled_rule)
        if kind == "override":
            out[kind] = filled[:1] + out[kind] + filled[1:]
        else:
            out[kind].extend(filled)
    return out


class PushRulesHandler:
    def __init__(
        self, store: PushStore, account_data: AccountDataWriter, cache_size: int = 10_000
    ) -> None:
        self.store = store
        self.account_data = account_data
        # Compiled once per rule set and kept until the user edits it: every event in a room
        # is evaluated for each local member.
        self._compiled: LruCache[str, CompiledRuleset] = LruCache(cache_size)
        # Every user who changed nothing shares this one, so an event is evaluated once for
        # all of them.
        self.defaults = CompiledRuleset(USER_ID, ruleset_json(USER_ID, UserRules([], {})))
        # Counts edits: a rule set read while an edit committed is used but not cached (on
        # PostgreSQL the read may predate the edit, and the edit's invalidation already ran).
        self._edits = 0

    async def get_ruleset(self, user_id: str) -> dict[str, list[JsonDict]]:
        stored = (await self.store.get_rules([user_id]))[user_id]
        return ruleset_json(user_id, stored)

    async def compiled_rulesets(
        self, user_ids: Collection[str], q: Queryable | None = None
    ) -> dict[str, CompiledRuleset]:
        """Each user's compiled rule set (the same object for every user who shares it); `q`
        reads the missing ones inside a transaction."""
        out: dict[str, CompiledRuleset] = {}
        missing = []
        for user_id in user_ids:
            cached = self._compiled.get_hit(user_id)
            if cached is None:
                missing.append(user_id)
            else:
                out[user_id] = cached
        edits_before = self._edits
        for user_id, stored in (await self.store.get_rules(missing, q)).items():
            if stored.rules or stored.default_changes:
                compiled = CompiledRuleset(user_id, ruleset_json(user_id, stored))
            else:
                compiled = self.defaults
            if self._edits == edits_before:
                self._compiled.put(user_id, compiled)
            out[user_id] = compiled
        return out

    async def get_rule(self, user_id: str, kind: str, rule_id: str) -> JsonDict:
        _check_kind(kind)
        for rule in (await self.get_ruleset(user_id))[kind]:
            if rule["rule_id"] == rule_id:
                return rule
        raise NotFound("The push rule was not found.")

    async def put_rule(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        body: Mapping[str, Any],
        before: str | None,
        after: str | None,
    ) -> None:
        _check_kind(kind)
        if rule_id.startswith("."):
            raise InvalidParam("Rule IDs starting with '.' are reserved for server rules")
        if not rule_id or "/" in rule_id or "\\" in rule_id:
            raise InvalidParam("Rule IDs may not be empty or contain '/' or '\\'")
        for anchor in (before, after):
            if anchor is not None and anchor.startswith("."):
                raise MatrixError(
                    "Cannot place a rule relative to a server-default rule", Codes.UNKNOWN, 400
                )
        actions = _actions(body.get("actions"))
        conditions: list[Any] = []
        pattern: str | None = None
        if kind in ("override", "underride"):
            raw = body.get("conditions", [])
            if not isinstance(raw, list) or not all(
                isinstance(c, dict) and isinstance(c.get("kind"), str) for c in raw
            ):
                raise InvalidParam("conditions must be a list of objects with a kind")
            conditions = raw
        elif kind == "content":
            pattern = body.get("pattern")
            if not isinstance(pattern, str):
                raise InvalidParam("Content rules need a string pattern")
        elif kind == "room" and not rule_id.startswith("!"):
            raise InvalidParam("The rule ID of a room rule is a room ID")
        elif kind == "sender" and not rule_id.startswith("@"):
            raise InvalidParam("The rule ID of a sender rule is a user ID")
        rule = StoredRule(kind, rule_id, conditions, pattern, actions, True)
        try:
            await self.store.put_rule(user_id, rule, before, after)
        except AnchorNotFound as e:
            raise MatrixError(f"before/after rule not found: {e}", Codes.UNKNOWN, 400) from None
        await self._changed(user_id)

    async def delete_rule(self, user_id: str, kind: str, rule_id: str) -> None:
        _check_kind(kind)
        if not await self.store.delete_rule(user_id, kind, rule_id):
            raise NotFound("The push rule was not found.")
        await self._changed(user_id)

    async def set_enabled(self, user_id: str, kind: str, rule_id: str, enabled: Any) -> None:
        if not isinstance(enabled, bool):
            raise InvalidParam("enabled must be a boolean")
        await self._update(user_id, kind, rule_id, enabled=enabled)

    async def set_actions(self, user_id: str, kind: str, rule_id: str, actions: Any) -> None:
        await self._update(user_id, kind, rule_id, actions=_actions(actions))

    async def _update(
        self,
        user_id: str,
        kind: str,
        rule_id: str,
        *,
        enabled: bool | None = None,
        actions: list[Any] | None = None,
    ) -> None:
        _check_kind(kind)
        if DEFAULT_RULE_KINDS.get(rule_id) == kind:
            await self.store.change_default_rule(user_id, rule_id, enabled=enabled, actions=actions)
        elif not await self.store.update_rule(
            user_id, kind, rule_id, enabled=enabled, actions=actions
        ):
            raise NotFound("The push rule was not found.")
        await self._changed(user_id)

    async def copy_room_rules(self, user_id: str, old_room: str, new_room: str) -> None:
        """The user's rules about `old_room` (its room rule; override and underride rules
        matching its ID, as clients mute a room) apply to `new_room` too, unless rules of
        the same IDs exist there: a muted room stays muted once upgraded."""
        stored = (await self.store.get_rules([user_id]))[user_id]
        existing = {(r.kind, r.rule_id) for r in stored.rules}
        copies: list[StoredRule] = []
        for rule in stored.rules:
            if rule.kind == "room" and rule.rule_id == old_room:
                copies.append(StoredRule("room", new_room, [], None, rule.actions, rule.enabled))
            elif rule.kind in ("override", "underride") and any(
                _names_room(c, old_room) for c in rule.conditions
            ):
                if old_room in rule.rule_id:
                    rule_id = rule.rule_id.replace(old_room, new_room)
                else:
                    rule_id = f"{rule.rule_id}-{new_room}"
                conditions = [
                    {**c, "pattern": new_room} if _names_room(c, old_room) else c
                    for c in rule.conditions
                ]
                copies.append(
                    StoredRule(rule.kind, rule_id, conditions, None, rule.actions, rule.enabled)
                )
        copies = [c for c in copies if (c.kind, c.rule_id) not in existing]
        for copy in copies:
            await self.store.put_rule(user_id, copy, None, None)
            if not copy.enabled:
                await self.store.update_rule(user_id, copy.kind, copy.rule_id, enabled=False)
        if copies:
            await self._changed(user_id)

    async def account_data_content(self, user_id: str) -> JsonDict:
        """The user's rules as the m.push_rules account data holds them."""
        return {SCOPE: await self.get_ruleset(user_id)}

    async def _changed(self, user_id: str) -> None:
        self._edits += 1
        self._compiled.pop(user_id)
        content = await self.account_data_content(user_id)
        await self.account_data.set(user_id, None, PUSH_RULES, content)


def _names_room(condition: Any, room_id: str) -> bool:
    return (
        isinstance(condition, dict)
        and condition.get("kind") == "event_match"
        and condition.get("key") == "room_id"
        and condition.get("pattern") == room_id
    )


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InvalidParam(f"Unknown push rule kind {kind}")


def _actions(value: Any) -> list[Any]:
    if not isinstance(value, list) or not all(isinstance(a, str | dict) for a in value):
        raise InvalidParam("actions must be a list of strings and objects")
    return value
