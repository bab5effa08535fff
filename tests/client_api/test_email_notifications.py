"""Email notifications (C-S API "Pushers", kind "email"): a user with an email pusher gets
one email per room for the notifications they left unread for notif_delay, sent to a real
SMTP server (aiosmtpd) on 127.0.0.1; and the `email` config section."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from homeserver.config import ConfigError, EmailConfig, RegistrationConfig, parse_config
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage
from tests.client_api.conftest import UNLIMITED, ClientFactory, client_app
from tests.helpers.mail import Mailbox, bind_email, email_config, start_smtp
from tests.helpers.rest import V3, RestHelper, User
from tests.helpers.spec_schemas import assert_response_valid

DELAY_S = 1.0
ADDRESS = "bob@example.org"
LINK = "https://chat.example/#/room/{room_id}"
PUSHER = {
    "kind": "email",
    "app_id": "m.email",
    "pushkey": ADDRESS,
    "app_display_name": "Email notifications",
    "device_display_name": ADDRESS,
    "lang": "en",
    "data": {},
}


def _email_config(port: int) -> EmailConfig:
    return email_config(port, client_base_url=LINK, notif_delay_s=DELAY_S)


@pytest.fixture
async def email_server(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory, smtp: Any
) -> AsyncIterator[tuple[RestHelper, Core]]:
    core = _core(storage, server_keys, _email_config(smtp[1]))
    try:
        yield RestHelper(await aiohttp_client(client_app(core))), core
    finally:
        await core.pusher_pool.close()


def _core(storage: Storage, server_keys: ServerKeys, config: EmailConfig | None) -> Core:
    return build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=UNLIMITED,
        email=config,
    )


async def _set_pusher(rest: RestHelper, user: User, expect: int = 200, **changes: Any) -> Any:
    return await rest.request("POST", f"{V3}/pushers/set", user, {**PUSHER, **changes}, expect)


def _parts(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and rich is not None
    # Lines end in CRLF on the wire (RFC 5322).
    return (
        plain.get_content().replace("\r\n", "\n"),
        rich.get_content().replace("\r\n", "\n"),
    )


def _link(room_id: str) -> str:
    return LINK.replace("{room_id}", quote(room_id, safe="!:"))


async def test_one_email_per_room(email_server: tuple[RestHelper, Core], smtp: Any) -> None:
    rest, _ = email_server
    mailbox: Mailbox = smtp[0]
    alice, bob, carol = [await rest.register(n) for n in ("alice", "bob", "carol")]
    # A display name with markup: the HTML part must show it, not run it.
    await rest.request(
        "PUT", f"{V3}/profile/{alice.user_id}/displayname", alice, {"displayname": "Al <i>ce"}
    )
    await rest.request(
        "PUT", f"{V3}/profile/{carol.user_id}/displayname", carol, {"displayname": "Carol"}
    )
    garden = await rest.create_room(alice, preset="public_chat", name="Garden & Co")
    await rest.join(bob, garden)
    await rest.join(carol, garden)
    direct = await rest.create_room(carol, preset="trusted_private_chat", invite=[bob.user_id])
    await rest.join(bob, direct)
    await bind_email(rest, bob, mailbox, ADDRESS)
    await _set_pusher(rest, bob)
    listed = await rest.request("GET", f"{V3}/pushers", bob)
    assert_response_valid("client-server/pusher.yaml", "/pushers", "get", 200, listed)
    assert [(p["kind"], p["app_id"], p["pushkey"]) for p in listed["pushers"]] == [
        ("email", "m.email", ADDRESS)
    ]

    await rest.send(alice, garden, "hello <b>bob</b>")
    await rest.send(alice, garden, "second line\nof a <script>")
    encrypted = {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEnAC", "sender_key": "k"}
    await rest.send(carol, direct, encrypted, event_type="m.room.encrypted")
    # Nothing before the delay.
    await asyncio.sleep(DELAY_S / 2)
    assert mailbox.received == []
    await mailbox.wait_for(2)
    # One email per room, and no other: carol (no pusher) gets none, bob no second one.
    await asyncio.sleep(DELAY_S + 0.5)
    assert len(mailbox.received) == 2
    by_subject = {m["Subject"]: (rcpt, m) for rcpt, m in mailbox.received}
    assert set(by_subject) == {
        "[Test Chat] 2 unread messages in Garden & Co",
        "[Test Chat] An unread message in Carol",
    }

    rcpt, garden_mail = by_subject["[Test Chat] 2 unread messages in Garden & Co"]
    assert rcpt == [ADDRESS]
    assert garden_mail["To"] == ADDRESS
    assert garden_mail["From"] == "Test Chat <noreply@test.local>"
    assert garden_mail["Auto-Submitted"] == "auto-generated"
    plain, rich = _parts(garden_mail)
    assert "Al <i>ce: hello <b>bob</b>" in plain
    assert "Al <i>ce: second line\n    of a <script>" in plain
    assert _link(garden) in plain
    assert "<b>Al &lt;i&gt;ce</b>: hello &lt;b&gt;bob&lt;/b&gt;" in rich
    assert "second line<br>of a &lt;script&gt;" in rich
    assert "Garden &amp; Co" in rich and f'href="{_link(garden)}"' in rich
    assert "<script>" not in rich and "<i>" not in rich

    rcpt, direct_mail = by_subject["[Test Chat] An unread message in Carol"]
    assert rcpt == [ADDRESS]
    plain, rich = _parts(direct_mail)
    # The server cannot read encrypted messages; the unnamed room is called after Carol.
    assert "Carol: encrypted message" in plain
    assert _link(direct) in plain and f'href="{_link(direct)}"' in rich
    assert "AwgAEnAC" not in plain + rich


async def test_read_in_time_is_not_mailed(email_server: tuple[RestHelper, Core], smtp: Any) -> None:
    rest, _ = email_server
    mailbox: Mailbox = smtp[0]
    alice, bob = await rest.register("alice"), await rest.register("bob")
    room_id = await rest.create_room(alice, preset="public_chat", name="Porch")
    await rest.join(bob, room_id)
    await bind_email(rest, bob, mailbox, ADDRESS)
    await _set_pusher(rest, bob)
    first = await rest.send(alice, room_id, "seen in time")
    path = f"{V3}/rooms/{quote(room_id)}/receipt/m.read/{quote(first)}"
    await rest.request("POST", path, bob, {})
    await asyncio.sleep(DELAY_S + 1.0)
    assert mailbox.received == []
    # The pusher still works: what bob leaves unread is mailed, without the read message.
    await rest.send(alice, room_id, "left unread")
    await mailbox.wait_for(1)
    plain, _ = _parts(mailbox.received[0][1])
    assert "left unread" in plain and "seen in time" not in plain


async def test_smtp_failure_is_retried(
    storage: Storage, server_keys: ServerKeys, aiohttp_client: ClientFactory
) -> None:
    # A port the SMTP server leaves once bob's address is bound: the first attempts to
    # mail the notification fail, the server starts again later.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    core = _core(storage, server_keys, _email_config(port))
    rest = RestHelper(await aiohttp_client(client_app(core)))
    mailbox = Mailbox()
    server: asyncio.Server | None
    server, _ = await start_smtp(mailbox, port)
    try:
        alice, bob = await rest.register("alice"), await rest.register("bob")
        room_id = await rest.create_room(alice, preset="public_chat")
        await rest.join(bob, room_id)
        await bind_email(rest, bob, mailbox, ADDRESS)
        server.close()
        await server.wait_closed()
        server = None
        await _set_pusher(rest, bob)
        await rest.send(alice, room_id, "are you there?")
        for _ in range(200):
            [pusher] = await storage.push.get_pushers([bob.user_id])
            if pusher.failing_since is not None:
                break
            await asyncio.sleep(0.05)
        assert pusher.failing_since is not None
        server, _ = await start_smtp(mailbox, port)
        await mailbox.wait_for(1)
        plain, _ = _parts(mailbox.received[0][1])
        assert "are you there?" in plain
        for _ in range(100):
            [pusher] = await storage.push.get_pushers([bob.user_id])
            if pusher.failing_since is None:
                break
            await asyncio.sleep(0.05)
        assert pusher.failing_since is None and pusher.last_stream_ordering > 0
    finally:
        await core.pusher_pool.close()
        if server is not None:
            server.close()
            await server.wait_closed()


@pytest.mark.parametrize(
    "changes",
    [
        {"app_id": "org.example.mail"},  # pusher.yaml: email pushers have app_id m.email
        {"pushkey": "not-an-address"},
        {"pushkey": "two@@example.org"},
        {"pushkey": "bob@example.org\r\nBcc: eve@example.org"},
        {"pushkey": "Bob <bob@example.org>"},
        {"pushkey": "bob@-example.org"},
    ],
)
async def test_bad_email_pusher(
    email_server: tuple[RestHelper, Core], changes: dict[str, Any]
) -> None:
    rest, _ = email_server
    bob = await rest.register("bob")
    error = await _set_pusher(rest, bob, 400, **changes)
    assert error["errcode"] == "M_INVALID_PARAM"
    assert (await rest.request("GET", f"{V3}/pushers", bob))["pushers"] == []


@pytest.mark.parametrize("enable_notifs", [None, False])
async def test_email_kind_needs_smtp(
    storage: Storage,
    server_keys: ServerKeys,
    aiohttp_client: ClientFactory,
    enable_notifs: bool | None,
) -> None:
    """Without the email section, or with notifications off, kind email is unknown."""
    config = None
    if enable_notifs is not None:
        config = _email_config(25)
        config.enable_notifs = enable_notifs
    core = _core(storage, server_keys, config)
    rest = RestHelper(await aiohttp_client(client_app(core)))
    bob = await rest.register("bob")
    error = await _set_pusher(rest, bob, 400)
    assert error["errcode"] == "M_INVALID_PARAM"


# -- the config section (no database: these run once) ---------------------------------------


def test_email_config(tmp_path: Path) -> None:
    assert parse_config("server_name: example.org\n", tmp_path).email is None
    config = parse_config(
        """
server_name: example.org
email:
  enable_notifs: true
  notif_from: "Chat <noreply@example.org>"
  smtp_host: smtp.example.org
  smtp_port: 587
  smtp_user: hs
  smtp_pass: secret
  require_transport_security: true
  client_base_url: "https://app.element.io"
  notif_delay: 2m
""",
        tmp_path,
    )
    assert config.email is not None
    assert config.email.notif_delay_s == 120
    assert config.email.smtp_port == 587 and config.email.require_transport_security
    assert "secret" not in repr(config.email)
    assert parse_config(
        'server_name: e.org\nemail: {notif_from: "a@e.org", notif_delay: 30}\n', tmp_path
    ).email == EmailConfig("a@e.org", notif_delay_s=30)


def test_email_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            """
server_name: example.org
email:
  smtp_user: hs
  smtp_port: 70000
  notif_delay: soon
  enable_tls: false
  require_transport_security: true
  client_base_url: "app.element.io"
  smpt_host: typo
""",
            tmp_path,
        )
    problems = "\n".join(raised.value.problems)
    for key in (
        "email.notif_from: required",
        "email.smtp_port",
        "email.notif_delay",
        "email.smtp_pass: set both or neither",
        "email.require_transport_security",
        "email.client_base_url",
        "email.smpt_host: unknown key (did you mean 'smtp_host'?)",
    ):
        assert key in problems, problems
