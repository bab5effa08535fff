"""Push rules, notifications and pushers (C-S API "Push Rules: API", pushrules.yaml;
"Listing Notifications", notifications.yaml; "Pushers", pusher.yaml): /pushrules/...,
GET /notifications, GET /pushers and POST /pushers/set."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester
from homeserver.errors import InvalidParam, NotFound
from homeserver.push.rules import SCOPE

PUSHRULES = "/_matrix/client/v3/pushrules"


def _kind_and_id(request: web.Request) -> tuple[str, str]:
    if request.match_info["scope"] != SCOPE:
        raise NotFound("Unknown push rule scope")
    return request.match_info["kind"], request.match_info["ruleId"]


async def get_all(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok({SCOPE: await core_of(request).push_rules.get_ruleset(who.user_id)})


async def get_global(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok(await core_of(request).push_rules.get_ruleset(who.user_id))


async def get_rule(request: web.Request) -> web.Response:
    who = await requester(request)
    kind, rule_id = _kind_and_id(request)
    return ok(await core_of(request).push_rules.get_rule(who.user_id, kind, rule_id))


async def put_rule(request: web.Request) -> web.Response:
    who = await requester(request)
    kind, rule_id = _kind_and_id(request)
    body = await json_body(request)
    await core_of(request).push_rules.put_rule(
        who.user_id,
        kind,
        rule_id,
        body,
        before=request.query.get("before"),
        after=request.query.get("after"),
    )
    return ok()


async def delete_rule(request: web.Request) -> web.Response:
    who = await requester(request)
    kind, rule_id = _kind_and_id(request)
    await core_of(request).push_rules.delete_rule(who.user_id, kind, rule_id)
    return ok()


async def get_enabled(request: web.Request) -> web.Response:
    who = await requester(request)
    kind, rule_id = _kind_and_id(request)
    rule = await core_of(request).push_rules.get_rule(who.user_id, kind, rule_id)
    return ok({"enabled": rule["enabled"]})


async def put_enabled(request: web.Request) -> web.Response:
    who = await requester(request)
    kind, rule_id = _kind_and_id(request)
    body = await json_body(request)
    await core_of(request).push_rules.set_enabled(who.user_id, kind, rule_id, body.get("enabled"))
    return ok()


async def get_actions(request: web.Request) -> web.Response:
    who = await requester(request)
    kind, rule_id = _kind_and_id(request)
    rule = await core_of(request).push_rules.get_rule(who.user_id, kind, rule_id)
    return ok({"actions": rule["actions"]})


async def put_actions(request: web.Request) -> web.Response:
    who = await requester(request)
    kind, rule_id = _kind_and_id(request)
    body = await json_body(request)
    await core_of(request).push_rules.set_actions(who.user_id, kind, rule_id, body.get("actions"))
    return ok()


async def get_notifications(request: web.Request) -> web.Response:
    who = await requester(request)
    raw_limit = request.query.get("limit")
    try:
        limit = None if raw_limit is None else int(raw_limit)
    except ValueError:
        raise InvalidParam("limit must be an integer") from None
    return ok(
        await core_of(request).notifications.list_notifications(
            who.user_id, request.query.get("from"), limit, request.query.get("only")
        )
    )


async def get_pushers(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok({"pushers": await core_of(request).pushers.get_pushers(who.user_id)})


async def set_pusher(request: web.Request) -> web.Response:
    who = await requester(request)
    await core_of(request).pushers.set_pusher(who.user_id, who.device_id, await json_body(request))
    return ok()


def routes() -> list[web.RouteDef]:
    rule = f"{PUSHRULES}/{{scope}}/{{kind}}/{{ruleId}}"
    return [
        web.get(f"{PUSHRULES}/", get_all),
        web.get(f"{PUSHRULES}/{SCOPE}/", get_global),
        web.get(rule, get_rule),
        web.put(rule, put_rule),
        web.delete(rule, delete_rule),
        web.get(f"{rule}/enabled", get_enabled),
        web.put(f"{rule}/enabled", put_enabled),
        web.get(f"{rule}/actions", get_actions),
        web.put(f"{rule}/actions", put_actions),
        web.get("/_matrix/client/v3/notifications", get_notifications),
        web.get("/_matrix/client/v3/pushers", get_pushers),
        web.post("/_matrix/client/v3/pushers/set", set_pusher),
    ]
