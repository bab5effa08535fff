"""Third-party identifiers of an account (C-S API "Adding Account Administrative Contact
Information", administrative_contact.yaml): email validation by this server, add, list and
delete. Binding to identity servers is not offered: this server talks to none."""

from __future__ import annotations

import html

from aiohttp import web

from client_api.http import client_ip, core_of, field, json_body, ok, requester
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.threepids import SUBMIT_TOKEN_PATH, check_medium

# Spec: the delete and unbind answer when no identity server was unbound from (we never
# bind to one).
_NO_SUPPORT = {"id_server_unbind_result": "no-support"}


async def request_email_token(request: web.Request) -> web.Response:
    # No access token (administrative_contact.yaml): the address is checked, not the asker.
    core = core_of(request)
    body = await json_body(request)
    # id_server and id_access_token are ignored: this server validates the address itself.
    sid = await core.threepids.request_email_token(
        field(body, "client_secret", str),
        field(body, "email", str),
        field(body, "send_attempt", int),
        field(body, "next_link", str, required=False),
        client_ip(request),
    )
    return ok({"sid": sid, "submit_url": core.threepids.submit_url})


async def request_msisdn_token(_request: web.Request) -> web.Response:
    raise MatrixError(
        "This server does not validate phone numbers", Codes.THREEPID_MEDIUM_NOT_SUPPORTED
    )


async def submit_token(request: web.Request) -> web.Response:
    """The submit_url: the Identity Service API's POST /validate/email/submitToken."""
    body = await json_body(request)
    await core_of(request).threepids.submit_token(
        field(body, "sid", str), field(body, "client_secret", str), field(body, "token", str)
    )
    return ok({"success": True})


async def submit_token_link(request: web.Request) -> web.Response:
    """The link in the validation email, opened in a browser: a page for a person (the
    Identity Service API's GET /validate/email/submitToken), or the next_link."""
    try:
        values = [request.query.get(k) for k in ("sid", "client_secret", "token")]
        sid, client_secret, token = values
        if sid is None or client_secret is None or token is None:
            raise MatrixError("The link is incomplete", Codes.MISSING_PARAM)
        next_link = await core_of(request).threepids.submit_token(sid, client_secret, token)
    except MatrixError as e:
        return _page(e.status, "Your email address was not validated", e.message)
    if next_link is not None:
        raise web.HTTPFound(next_link)
    return _page(
        200,
        "Your email address is validated",
        "Return to your Matrix client to finish adding it to your account.",
    )


def _page(status: int, title: str, text: str) -> web.Response:
    e = html.escape
    return web.Response(
        status=status,
        content_type="text/html",
        charset="utf-8",
        text=(
            '<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8">'
            f"<title>{e(title)}</title></head>\n"
            f"<body>\n<h1>{e(title)}</h1>\n<p>{e(text)}</p>\n</body>\n</html>\n"
        ),
    )


async def get_threepids(request: web.Request) -> web.Response:
    who = await requester(request)
    threepids = await core_of(request).threepids.get_threepids(who.user_id)
    return ok(
        {
            "threepids": [
                {
                    "medium": t.medium,
                    "address": t.address,
                    "validated_at": t.validated_ts,
                    "added_at": t.added_ts,
                }
                for t in threepids
            ]
        }
    )


async def add_threepid(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    # Parsed before user-interactive auth, so a malformed request does not use up a session.
    sid = field(body, "sid", str)
    client_secret = field(body, "client_secret", str)
    await core_of(request).threepids.add_threepid(
        who.user_id, sid, client_secret, field(body, "auth", dict, required=False)
    )
    return ok()


async def delete_threepid(request: web.Request) -> web.Response:
    who = await requester(request)
    body = await json_body(request)
    field(body, "id_server", str, required=False)
    await core_of(request).threepids.delete_threepid(
        who.user_id, field(body, "medium", str), field(body, "address", str)
    )
    return ok(_NO_SUPPORT)


async def unbind_threepid(request: web.Request) -> web.Response:
    await requester(request)
    body = await json_body(request)
    check_medium(field(body, "medium", str))
    field(body, "address", str)
    field(body, "id_server", str, required=False)
    return ok(_NO_SUPPORT)


async def bind_threepid(request: web.Request) -> web.Response:
    await requester(request)
    raise MatrixError(
        "This server does not use identity servers: there is none it trusts to bind to",
        Codes.SERVER_NOT_TRUSTED,
    )


async def add_threepid_deprecated(request: web.Request) -> web.Response:
    """The deprecated POST /account/3pid: what /3pid/bind does (credentials from an identity
    server), so nothing this server can verify; its documented refusal."""
    await requester(request)
    raise MatrixError(
        "This server does not use identity servers: add addresses with /account/3pid/add",
        Codes.THREEPID_AUTH_FAILED,
        status=403,
    )


def routes() -> list[web.RouteDef]:
    v3 = "/_matrix/client/v3/account/3pid"
    return [
        web.get(v3, get_threepids),
        web.post(v3, add_threepid_deprecated),
        web.post(f"{v3}/email/requestToken", request_email_token),
        web.post(f"{v3}/msisdn/requestToken", request_msisdn_token),
        web.post(f"{v3}/add", add_threepid),
        web.post(f"{v3}/delete", delete_threepid),
        web.post(f"{v3}/bind", bind_threepid),
        web.post(f"{v3}/unbind", unbind_threepid),
        web.get(f"/{SUBMIT_TOKEN_PATH}", submit_token_link),
        web.post(f"/{SUBMIT_TOKEN_PATH}", submit_token),
    ]
