"""End-to-end encryption keys (C-S API "End-to-End Encryption", keys.yaml and
cross_signing.yaml): upload, query, claim and changes, cross-signing keys and signatures."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester
from homeserver.errors import Codes, MatrixError
from homeserver.streams import StreamToken

PREFIX = "/_matrix/client/v3/keys"


async def upload(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    return ok(await core_of(request).e2e_keys.upload_keys(who.user_id, who.device_id, body))


async def query(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    return ok(await core_of(request).e2e_keys.query_keys(who.user_id, body))


async def claim(request: web.Request) -> web.Response:
    await requester(request)
    body = await json_body(request)
    return ok(await core_of(request).e2e_keys.claim_keys(body))


async def changes(request: web.Request) -> web.Response:
    who = await requester(request)
    tokens = []
    for name in ("from", "to"):
        text = request.query.get(name)
        if text is None:
            raise MatrixError(f"Missing parameter: {name}", Codes.MISSING_PARAM)
        tokens.append(StreamToken.parse(text))
    found = await core_of(request).device_lists.changes(who.user_id, tokens[0], tokens[1])
    return ok({"changed": sorted(found.changed), "left": sorted(found.left)})


async def upload_cross_signing(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    auth = body.get("auth")
    if auth is not None and not isinstance(auth, dict):
        raise MatrixError("auth must be an object", Codes.BAD_JSON)
    await core_of(request).e2e_keys.upload_cross_signing_keys(who.user_id, body, auth)
    return ok()


async def upload_signatures(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    return ok(await core_of(request).e2e_keys.upload_signatures(who.user_id, body))


# MSC3814's unstable prefix, which clients (Element X, matrix-rust-sdk) use.
DEHYDRATED = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"


async def put_dehydrated_device(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    return ok(await core_of(request).dehydrated_devices.put(who.user_id, body))


async def get_dehydrated_device(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok(await core_of(request).dehydrated_devices.get(who.user_id))


async def delete_dehydrated_device(request: web.Request) -> web.Response:
    who = await requester(request)
    return ok(await core_of(request).dehydrated_devices.delete(who.user_id))


async def dehydrated_device_events(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    next_batch = body.get("next_batch")
    if next_batch is not None and not isinstance(next_batch, str):
        raise MatrixError("next_batch must be a string", Codes.INVALID_PARAM)
    device_id = request.match_info["deviceId"]
    return ok(await core_of(request).dehydrated_devices.events(who.user_id, device_id, next_batch))


def routes() -> list[web.RouteDef]:
    return [
        web.post(f"{PREFIX}/upload", upload),
        web.post(f"{PREFIX}/query", query),
        web.post(f"{PREFIX}/claim", claim),
        web.get(f"{PREFIX}/changes", changes),
        web.post(f"{PREFIX}/device_signing/upload", upload_cross_signing),
        web.post(f"{PREFIX}/signatures/upload", upload_signatures),
        web.put(DEHYDRATED, put_dehydrated_device),
        web.get(DEHYDRATED, get_dehydrated_device),
        web.delete(DEHYDRATED, delete_dehydrated_device),
        web.post(DEHYDRATED + "/{deviceId}/events", dehydrated_device_events),
    ]
