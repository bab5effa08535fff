"""Send-to-device messaging (C-S API "Send-to-Device messaging"):
PUT /sendToDevice/{eventType}/{txnId}. Delivery is the to_device section of /sync."""

from __future__ import annotations

from aiohttp import web

from client_api.http import core_of, json_body, ok, requester


async def send_to_device(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    await core_of(request).to_device.send(
        who.user_id,
        who.device_id,
        request.match_info["eventType"],
        request.match_info["txnId"],
        body,
    )
    return ok()


def routes() -> list[web.RouteDef]:
    return [web.put("/_matrix/client/v3/sendToDevice/{eventType}/{txnId}", send_to_device)]
