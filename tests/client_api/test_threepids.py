"""Email addresses bound to accounts (C-S API "Adding Account Administrative Contact
Information"): validation by a mailed token through a real SMTP server (aiosmtpd), binding
behind user-interactive auth, listing, deleting, and email pushers only for bound addresses.
Both engines."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from homeserver.config import EmailConfig, LimitsConfig, RegistrationConfig
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.threepids import SESSION_LIFETIME_MS
from homeserver.storage import Storage
from homeserver.storage.stores.push import Pusher
from tests.client_api.conftest import OFF, UNLIMITED, ClientFactory, client_app
from tests.helpers.mail import (
    Mailbox,
    add_threepid,
    bind_email,
    email_config,
    read_validation,
    request_token,
    start_smtp,
    submit_token,
)
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

API = "client-server/administrative_contact.yaml"
ADDRESS = "bob@example.org"
BASEURL = "https://chat.example.org/"
SUBMIT_PATH = "/_matrix/client/unstable/add_threepid/email/submit_token"
START_MS = 1_700_000_000_000
PUSHER = {
    "kind": "email",
    "app_id": "m.email",
    "app_display_name": "Email notifications",
    "device_display_name": "email",
    "lang": "en",
    "data": {},
}


class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def time_ms(self) -> int:
        return self.now


@dataclasses.dataclass
class Server:
    rest: RestHelper
    core: Core
    mailbox: Mailbox
    clock: ManualClock


def _email_config(port: int) -> EmailConfig:
    return email_config(port, notif_delay_s=0.5)


def _core(
    storage: Storage,
    server_keys: ServerKeys,
    email: EmailConfig | None,
    clock: ManualClock | None = None,
    limits: LimitsConfig = dataclasses.replace(UNLIMITED, threepid_validation=OFF),
) -> Core:
    return build_core(
        storage,
        "test.local",
        server_keys,
        clock=clock,
        registration=RegistrationConfig(enabled=True),
        public_baseurl=BASEURL,
        limits=limits,
        email=email,
    )


@pytest.fixture
async def server(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory, smtp: Any
) -> AsyncIterator[Server]:
    clock = ManualClock(START_MS)
    core = _core(storage, server_keys, _email_config(smtp[1]), clock)
    try:
        yield Server(RestHelper(await aiohttp_client(client_app(core))), core, smtp[0], clock)
    finally:
        await core.pusher_pool.close()


async def _set_pusher(rest: RestHelper, user: User, pushkey: str, expect: int = 200) -> Any:
    body = {**PUSHER, "pushkey": pushkey}
    return await rest.request("POST", f"{V3}/pushers/set", user, body, expect)


async def _threepids(rest: RestHelper, user: User) -> list[dict[str, Any]]:
    listed = await rest.request("GET", f"{V3}/account/3pid", user)
    assert_response_valid(API, "/account/3pid", "get", 200, listed)
    threepids: list[dict[str, Any]] = listed["threepids"]
    return threepids


async def _started(s: Server, address: str, secret: str) -> tuple[Any, str]:
    """requestToken, and the token from the email it sent."""
    count = len(s.mailbox.received)
    started = await request_token(s.rest, address, secret)
    await s.mailbox.wait_for(count + 1)
    return started, read_validation(s.mailbox.take_validation(address)).token


async def test_whole_flow(server: Server) -> None:
    s = server
    bob = await s.rest.register("bob")
    caps = await s.rest.request("GET", f"{V3}/capabilities", bob)
    assert caps["capabilities"]["m.3pid_changes"] == {"enabled": True}
    secret = "d0nt-T3ll.="
    # The domain is case-insensitive (appendices "3PID Types"): stored and mailed lower-case.
    started = await request_token(s.rest, "bob@Example.ORG", secret)
    assert_response_valid(API, "/account/3pid/email/requestToken", "post", 200, started)
    assert started["submit_url"] == BASEURL + SUBMIT_PATH[1:]
    await s.mailbox.wait_for(1)
    [(rcpt, message)] = s.mailbox.received
    assert rcpt == [ADDRESS] and message["To"] == ADDRESS
    assert message["From"] == "Test Chat <noreply@test.local>"
    assert message["Subject"] == "[Test Chat] Confirm your email address"
    mail = read_validation(message)
    # The link points at the configured public_baseurl, never at the request's Host.
    assert mail.link_path == SUBMIT_PATH
    assert mail.link_query == {"token": mail.token, "client_secret": secret, "sid": started["sid"]}
    assert len(mail.token) >= 32

    # Not validated yet: nothing to add.
    refused = await add_threepid(s.rest, bob, started["sid"], secret, expect=400)
    assert refused["errcode"] == "M_THREEPID_AUTH_FAILED"
    s.clock.now += 60_000
    done = await submit_token(s.rest, started["submit_url"], started["sid"], secret, mail.token)
    assert done == {"success": True}
    s.clock.now += 60_000
    added = await add_threepid(s.rest, bob, started["sid"], secret)
    assert_response_valid(API, "/account/3pid/add", "post", 200, added)
    assert await _threepids(s.rest, bob) == [
        {
            "medium": "email",
            "address": ADDRESS,
            "validated_at": START_MS + 60_000,
            "added_at": START_MS + 120_000,
        }
    ]
    # Adding again is harmless; the address stays once.
    await add_threepid(s.rest, bob, started["sid"], secret)
    assert len(await _threepids(s.rest, bob)) == 1
    # A wrong password does not add anything.
    wrong = await add_threepid(s.rest, bob, started["sid"], secret, password="nope", expect=401)
    assert wrong["errcode"] == "M_FORBIDDEN"


async def test_link_in_the_email(server: Server) -> None:
    s = server
    client: TestClient[Any, Any] = s.rest.client
    started, token = await _started(s, ADDRESS, "secret")
    query = {"sid": started["sid"], "client_secret": "secret", "token": "wrong"}
    response = await client.get(SUBMIT_PATH, params=query)
    assert response.status == 400 and response.content_type == "text/html"
    assert "not validated" in await response.text()
    response = await client.get(SUBMIT_PATH, params={**query, "token": token})
    assert response.status == 200 and response.content_type == "text/html"
    assert "validated" in await response.text()
    bob = await s.rest.register("bob")
    await add_threepid(s.rest, bob, started["sid"], "secret")
    assert [t["address"] for t in await _threepids(s.rest, bob)] == [ADDRESS]
    # An incomplete link is a page too, not JSON.
    response = await client.get(SUBMIT_PATH, params={"sid": started["sid"]})
    assert response.status == 400 and response.content_type == "text/html"


async def test_next_link_redirect(server: Server) -> None:
    s = server
    body = {
        "client_secret": "secret",
        "email": ADDRESS,
        "send_attempt": 1,
        "next_link": "https://app.example/done?step=2",
    }
    started = await s.rest.request("POST", f"{V3}/account/3pid/email/requestToken", body=body)
    await s.mailbox.wait_for(1)
    mail = read_validation(s.mailbox.take_validation(ADDRESS))
    query = {"sid": started["sid"], "client_secret": "secret", "token": mail.token}
    response = await s.rest.client.get(SUBMIT_PATH, params=query, allow_redirects=False)
    assert response.status == 302
    assert response.headers["Location"] == "https://app.example/done?step=2"


async def test_wrong_token_and_session(server: Server) -> None:
    s = server
    started, token = await _started(s, ADDRESS, "secret")
    sid, url = started["sid"], started["submit_url"]
    for sid_, secret, token_, errcode in [
        (sid, "secret", "wrong", "M_TOKEN_INCORRECT"),
        (sid, "secret", token[:-1], "M_TOKEN_INCORRECT"),
        (sid, "other", token, "M_NO_VALID_SESSION"),
        ("nosuchsession", "secret", token, "M_NO_VALID_SESSION"),
        (sid, "not a secret!", token, "M_INVALID_PARAM"),
    ]:
        error = await submit_token(s.rest, url, sid_, secret, token_, expect=400)
        assert error["errcode"] == errcode, (sid_, secret, token_, error)
    bob = await s.rest.register("bob")
    refused = await add_threepid(s.rest, bob, sid, "secret", expect=400)
    assert refused["errcode"] == "M_THREEPID_AUTH_FAILED"
    # The right token still works after wrong ones; the session's secret is needed to add.
    assert await submit_token(s.rest, url, sid, "secret", token) == {"success": True}
    refused = await add_threepid(s.rest, bob, sid, "other", expect=400)
    assert refused["errcode"] == "M_THREEPID_AUTH_FAILED"
    await add_threepid(s.rest, bob, sid, "secret")


async def test_expired_session(server: Server) -> None:
    s = server
    started, token = await _started(s, ADDRESS, "secret")
    s.clock.now += SESSION_LIFETIME_MS
    error = await submit_token(s.rest, started["submit_url"], started["sid"], "secret", token, 400)
    assert error["errcode"] == "M_SESSION_EXPIRED"

    # A validated session must be used within its lifetime too.
    started, token = await _started(s, ADDRESS, "secret2")
    await submit_token(s.rest, started["submit_url"], started["sid"], "secret2", token)
    s.clock.now += SESSION_LIFETIME_MS - 1
    bob = await s.rest.register("bob")
    first = await s.rest.request(
        "POST",
        f"{V3}/account/3pid/add",
        bob,
        {"sid": started["sid"], "client_secret": "secret2"},
        401,
    )
    s.clock.now += 1
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": "correct horse",
        "session": first["session"],
    }
    body = {"sid": started["sid"], "client_secret": "secret2", "auth": auth}
    refused = await s.rest.request("POST", f"{V3}/account/3pid/add", bob, body, 400)
    assert refused["errcode"] == "M_THREEPID_AUTH_FAILED"
    assert await _threepids(s.rest, bob) == []


async def test_send_attempt(server: Server) -> None:
    s = server
    started, first_token = await _started(s, ADDRESS, "secret")
    # The same send_attempt (a retried request) sends nothing and answers the same session.
    again = await request_token(s.rest, ADDRESS, "secret")
    assert again["sid"] == started["sid"]
    await asyncio.sleep(0.2)
    assert s.mailbox.received == []
    # A higher one sends another email in the same session; both emails' tokens work.
    resent = await request_token(s.rest, ADDRESS, "secret", send_attempt=2)
    assert resent["sid"] == started["sid"]
    await s.mailbox.wait_for(1)
    second_token = read_validation(s.mailbox.take_validation(ADDRESS)).token
    assert second_token != first_token
    url, sid = started["submit_url"], started["sid"]
    assert await submit_token(s.rest, url, sid, "secret", first_token) == {"success": True}
    assert await submit_token(s.rest, url, sid, "secret", second_token) == {"success": True}
    # Another client secret is another session.
    other = await request_token(s.rest, ADDRESS, "secret2")
    assert other["sid"] != started["sid"]


async def test_address_of_another_account(server: Server) -> None:
    s = server
    bob, carol = await s.rest.register("bob"), await s.rest.register("carol")
    # Carol validates the address too, but bob adds it first.
    carol_started, carol_token = await _started(s, ADDRESS, "carols")
    await submit_token(
        s.rest, carol_started["submit_url"], carol_started["sid"], "carols", carol_token
    )
    await bind_email(s.rest, bob, s.mailbox, ADDRESS)
    refused = await add_threepid(s.rest, carol, carol_started["sid"], "carols", expect=400)
    assert refused["errcode"] == "M_THREEPID_IN_USE"
    in_use = await request_token(s.rest, "BOB@example.org", "carols2", expect=400)
    assert in_use["errcode"] == "M_THREEPID_IN_USE"
    await asyncio.sleep(0.1)
    assert s.mailbox.received == []
    assert await _threepids(s.rest, carol) == []


async def test_delete(server: Server) -> None:
    s = server
    bob, carol = await s.rest.register("bob"), await s.rest.register("carol")
    await bind_email(s.rest, bob, s.mailbox, ADDRESS)
    await bind_email(s.rest, bob, s.mailbox, "bob@work.example")
    await _set_pusher(s.rest, bob, ADDRESS)
    await _set_pusher(s.rest, bob, "bob@work.example")
    # Deleting an address not bound to the user changes nothing, and is no error.
    body = {"medium": "email", "address": "someone@else.example"}
    await s.rest.request("POST", f"{V3}/account/3pid/delete", bob, body)
    assert len(await _threepids(s.rest, bob)) == 2

    body = {"medium": "email", "address": "Bob@EXAMPLE.org"}
    deleted = await s.rest.request("POST", f"{V3}/account/3pid/delete", bob, body)
    assert_response_valid(API, "/account/3pid/delete", "post", 200, deleted)
    assert deleted == {"id_server_unbind_result": "no-support"}
    assert [t["address"] for t in await _threepids(s.rest, bob)] == ["bob@work.example"]
    # The address's pusher went with it; the other address's stays.
    pushers = (await s.rest.request("GET", f"{V3}/pushers", bob))["pushers"]
    assert [p["pushkey"] for p in pushers] == ["bob@work.example"]
    refused = await _set_pusher(s.rest, bob, ADDRESS, 400)
    assert refused["errcode"] == "M_THREEPID_NOT_FOUND"
    # The address is free for another account.
    await bind_email(s.rest, carol, s.mailbox, ADDRESS)
    assert [t["address"] for t in await _threepids(s.rest, carol)] == [ADDRESS]

    bad = await s.rest.request(
        "POST", f"{V3}/account/3pid/delete", bob, {"medium": "fax", "address": "1"}, 400
    )
    assert bad["errcode"] == "M_INVALID_PARAM"


async def test_email_pusher_needs_a_bound_address(server: Server) -> None:
    s = server
    bob, carol = await s.rest.register("bob"), await s.rest.register("carol")
    refused = await _set_pusher(s.rest, bob, ADDRESS, 400)
    assert refused["errcode"] == "M_THREEPID_NOT_FOUND"
    await bind_email(s.rest, bob, s.mailbox, ADDRESS)
    # Carol cannot have bob's address mailed either.
    refused = await _set_pusher(s.rest, carol, ADDRESS, 400)
    assert refused["errcode"] == "M_THREEPID_NOT_FOUND"
    # Bob can, in any case of its domain; the pusher is kept under the canonical address and
    # deleted by the address as the client gave it.
    await _set_pusher(s.rest, bob, "bob@EXAMPLE.org")
    pushers = (await s.rest.request("GET", f"{V3}/pushers", bob))["pushers"]
    assert [p["pushkey"] for p in pushers] == [ADDRESS]
    await s.rest.request(
        "POST",
        f"{V3}/pushers/set",
        bob,
        {"kind": None, "app_id": "m.email", "pushkey": "bob@EXAMPLE.org"},
    )
    assert (await s.rest.request("GET", f"{V3}/pushers", bob))["pushers"] == []


async def test_deactivation_frees_the_address(server: Server) -> None:
    s = server
    bob, carol = await s.rest.register("bob"), await s.rest.register("carol")
    await bind_email(s.rest, bob, s.mailbox, ADDRESS)
    first = await s.rest.request("POST", f"{V3}/account/deactivate", bob, {}, 401)
    auth = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": bob.user_id},
        "password": "correct horse",
        "session": first["session"],
    }
    await s.rest.request("POST", f"{V3}/account/deactivate", bob, {"auth": auth})
    assert await s.core.storage.threepids.get_threepids(bob.user_id) == []
    await bind_email(s.rest, carol, s.mailbox, ADDRESS)


async def test_identity_server_endpoints(server: Server) -> None:
    s = server
    bob = await s.rest.register("bob")
    creds = {
        "client_secret": "secret",
        "sid": "1",
        "id_server": "id.example",
        "id_access_token": "x",
    }
    bind = await s.rest.request("POST", f"{V3}/account/3pid/bind", bob, creds, 400)
    assert bind["errcode"] == "M_SERVER_NOT_TRUSTED"
    old = await s.rest.request("POST", f"{V3}/account/3pid", bob, {"three_pid_creds": creds}, 403)
    assert old["errcode"] == "M_THREEPID_AUTH_FAILED"
    body = {"medium": "email", "address": ADDRESS, "id_server": "id.example"}
    unbind = await s.rest.request("POST", f"{V3}/account/3pid/unbind", bob, body)
    assert_response_valid(API, "/account/3pid/unbind", "post", 200, unbind)
    assert unbind == {"id_server_unbind_result": "no-support"}
    phone = await s.rest.request(
        "POST",
        f"{V3}/account/3pid/msisdn/requestToken",
        body={"client_secret": "s", "country": "GB", "phone_number": "1", "send_attempt": 1},
        expect=400,
    )
    assert phone["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    for method, path in [
        ("GET", "/account/3pid"),
        ("POST", "/account/3pid/add"),
        ("POST", "/account/3pid/delete"),
        ("POST", "/account/3pid/bind"),
        ("POST", "/account/3pid/unbind"),
    ]:
        error = await s.rest.request(method, f"{V3}{path}", None, {}, 401)
        assert error["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"email": ADDRESS, "send_attempt": 1}, "M_MISSING_PARAM"),
        ({"client_secret": "s", "send_attempt": 1}, "M_MISSING_PARAM"),
        ({"client_secret": "s", "email": ADDRESS}, "M_MISSING_PARAM"),
        ({"client_secret": "", "email": ADDRESS, "send_attempt": 1}, "M_INVALID_PARAM"),
        ({"client_secret": "a b", "email": ADDRESS, "send_attempt": 1}, "M_INVALID_PARAM"),
        ({"client_secret": "s" * 256, "email": ADDRESS, "send_attempt": 1}, "M_INVALID_PARAM"),
        ({"client_secret": 5, "email": ADDRESS, "send_attempt": 1}, "M_INVALID_PARAM"),
        ({"client_secret": "s", "email": "bob", "send_attempt": 1}, "M_INVALID_PARAM"),
        ({"client_secret": "s", "email": "Bob <bob@x.org>", "send_attempt": 1}, "M_INVALID_PARAM"),
        (
            {"client_secret": "s", "email": "b@x.org\r\nBcc: e@x.org", "send_attempt": 1},
            "M_INVALID_PARAM",
        ),
        ({"client_secret": "s", "email": ADDRESS, "send_attempt": "1"}, "M_INVALID_PARAM"),
        ({"client_secret": "s", "email": ADDRESS, "send_attempt": True}, "M_INVALID_PARAM"),
        ({"client_secret": "s", "email": ADDRESS, "send_attempt": 2**63}, "M_INVALID_PARAM"),
        (
            {
                "client_secret": "s",
                "email": ADDRESS,
                "send_attempt": 1,
                "next_link": "javascript:x",
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "client_secret": "s",
                "email": ADDRESS,
                "send_attempt": 1,
                "next_link": "https://a/\r\n",
            },
            "M_INVALID_PARAM",
        ),
    ],
)
async def test_bad_request_token(server: Server, body: dict[str, Any], errcode: str) -> None:
    error = await server.rest.request(
        "POST", f"{V3}/account/3pid/email/requestToken", body=body, expect=400
    )
    assert error["errcode"] == errcode
    assert server.mailbox.received == []


async def test_bad_add_and_submit(server: Server) -> None:
    s = server
    bob = await s.rest.register("bob")
    for body in [
        {},
        {"sid": "1"},
        {"sid": 1, "client_secret": "s"},
        {"sid": "1", "client_secret": "a b"},
    ]:
        error = await s.rest.request("POST", f"{V3}/account/3pid/add", bob, body, 400)
        assert error["errcode"] in ("M_MISSING_PARAM", "M_INVALID_PARAM"), (body, error)
    response = await s.rest.client.post(SUBMIT_PATH, data=b"{not json")
    assert response.status == 400 and (await response.json())["errcode"] == "M_NOT_JSON"


async def test_rate_limited(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory, smtp: Any
) -> None:
    """Anyone may ask for validation emails, so they are limited (default: a burst of 5)."""
    core = _core(storage, server_keys, _email_config(smtp[1]), limits=UNLIMITED)
    rest = RestHelper(await aiohttp_client(client_app(core)))
    for i in range(5):
        await request_token(rest, ADDRESS, f"secret{i}")
    limited = await request_token(rest, "someone@else.example", "secret", expect=429)
    assert limited["errcode"] == "M_LIMIT_EXCEEDED" and limited["retry_after_ms"] > 0
    await smtp[0].wait_for(5)


async def test_without_email_config(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory
) -> None:
    core = _core(storage, server_keys, None)
    rest = RestHelper(await aiohttp_client(client_app(core)))
    bob = await rest.register("bob")
    caps = await rest.request("GET", f"{V3}/capabilities", bob)
    assert_response_valid("client-server/capabilities.yaml", "/capabilities", "get", 200, caps)
    assert caps["capabilities"]["m.3pid_changes"] == {"enabled": False}
    refused = await request_token(rest, ADDRESS, "secret", expect=400)
    assert refused["errcode"] == "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    assert await _threepids(rest, bob) == []


async def test_smtp_server_down(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory
) -> None:
    """No mail, no session: the client may ask again with the same send_attempt."""
    mailbox = Mailbox()
    smtp_server, port = await start_smtp(mailbox)
    smtp_server.close()
    await smtp_server.wait_closed()
    core = _core(storage, server_keys, _email_config(port))
    rest = RestHelper(await aiohttp_client(client_app(core)))
    failed = await request_token(rest, ADDRESS, "secret", expect=500)
    assert failed["errcode"] == "M_UNKNOWN"
    smtp_server, _ = await start_smtp(mailbox, port)
    try:
        await request_token(rest, ADDRESS, "secret")
        await mailbox.wait_for(1)
    finally:
        smtp_server.close()
        await smtp_server.wait_closed()


async def test_pusher_for_an_unbound_address_mails_nothing(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory, smtp: Any
) -> None:
    """A pusher row for an address not bound to its user (as a pusher set while its address
    was being deleted could leave) is dropped when it would mail, unsent."""
    mailbox: Mailbox = smtp[0]
    core = _core(storage, server_keys, _email_config(smtp[1]))
    rest = RestHelper(await aiohttp_client(client_app(core)))
    try:
        alice, bob = await rest.register("alice"), await rest.register("bob")
        room_id = await rest.create_room(alice, preset="public_chat")
        await rest.join(bob, room_id)
        pusher = Pusher(
            bob.user_id,
            "m.email",
            ADDRESS,
            "email",
            "Email",
            ADDRESS,
            None,
            "en",
            {},
            0,
            bob.device_id,
            storage.stream_ids.current,
        )
        await storage.push.set_pusher(pusher, append=False)
        await core.pusher_pool.pusher_set(pusher)
        await rest.send(alice, room_id, "hello")
        for _ in range(100):
            if not await storage.push.get_pushers([bob.user_id]):
                break
            await asyncio.sleep(0.05)
        assert await storage.push.get_pushers([bob.user_id]) == []
        assert mailbox.received == []
    finally:
        await core.pusher_pool.close()
