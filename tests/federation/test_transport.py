"""The outbound federation transport against real HTTPS servers on 127.0.0.1: X-Matrix
signatures that verify on arrival, Host headers, certificate checks, the address policy,
errors, timeouts and the response size cap."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.types import SigningKey

from federation.auth import check_signature, parse_x_matrix
from federation.discovery import WELL_KNOWN_PATH, AddressForbidden, DiscoverySettings, Unreachable
from federation.transport import (
    MAX_RESPONSE_BYTES,
    REQUEST_TIMEOUT_S,
    FederationTransport,
    InvalidResponse,
    RemoteError,
    ResponseTooLarge,
)
from homeserver.config import FederationConfig
from tests.helpers.dns_server import DnsServer, dns_server
from tests.helpers.tls import CertAuthority, RecordingServer, https_server, make_ca, unused_port

ORIGIN = "origin.test"
HOSTS = ("remote.test", "deleg.test")


@dataclass
class Net:
    ca: CertAuthority
    dns: DnsServer
    web: RecordingServer
    port: int
    signing_key: SigningKey

    def transport(
        self,
        config: FederationConfig | None = None,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> FederationTransport:
        return FederationTransport(
            ORIGIN,
            self.signing_key,
            config
            or FederationConfig(allowed_ip_ranges=["127.0.0.0/8"], tls_ca_file=self.ca.ca_file),
            discovery=DiscoverySettings(
                nameservers=("127.0.0.1",),
                dns_port=self.dns.port,
                federation_port=self.port,
                well_known_port=self.port,
            ),
            timeout_s=timeout_s,
            max_response_bytes=max_response_bytes,
        )


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    ca = make_ca(tmp_path)
    server = RecordingServer()
    async with (
        dns_server() as dns,
        https_server(server.app, ca.server_context(*HOSTS, "127.0.0.1")) as port,
    ):
        for host in (*HOSTS, "wrong-name.test"):
            dns.add(host, "A", "127.0.0.1")
        yield Net(ca, dns, server, port, generate_signing_key("k1"))


@pytest.fixture
async def transport(net: Net) -> AsyncIterator[FederationTransport]:
    transport = net.transport()
    yield transport
    await transport.close()


def assert_signed(net: Net, destination: str, content: object) -> None:
    """The last request carries an X-Matrix header that verifies with the sender's key, over
    the path and query exactly as they arrived."""
    request = net.web.requests[-1]
    auth = parse_x_matrix(request.headers["Authorization"])
    assert (auth.origin, auth.destination, auth.key) == (ORIGIN, destination, "ed25519:k1")
    check_signature(
        auth, request.method, request.raw_path, content, get_verify_key(net.signing_key)
    )


async def test_signed_get_with_query(net: Net, transport: FederationTransport) -> None:
    net.web.json("/_matrix/federation/v1/query/profile", {"displayname": "Alice"})
    got = await transport.request(
        "remote.test",
        "GET",
        "/_matrix/federation/v1/query/profile",
        {"user_id": "@alice:remote.test", "field": ["displayname", "a b/c"]},
    )
    assert got == {"displayname": "Alice"}
    [request] = net.web.seen("/_matrix/federation/v1/query/profile")
    assert request.raw_path == (
        "/_matrix/federation/v1/query/profile"
        "?user_id=%40alice%3Aremote.test&field=displayname&field=a%20b%2Fc"
    )
    assert request.host == "remote.test"  # step 6: the server name
    assert request.body == b"" and "Content-Type" not in request.headers
    assert_signed(net, "remote.test", None)


async def test_signed_put_through_delegation(net: Net, transport: FederationTransport) -> None:
    net.web.json(WELL_KNOWN_PATH, {"m.server": f"deleg.test:{net.port}"}, host="remote.test")
    net.web.json("/_matrix/federation/v1/send/t/1", {"pdus": {}})  # routes see decoded paths
    content = {"origin": ORIGIN, "pdus": [], "edus": [{"edu_type": "m.typing", "é": "ü"}]}
    got = await transport.request(
        "remote.test", "PUT", "/_matrix/federation/v1/send/t%2F1", content=content
    )
    assert got == {"pdus": {}}
    request = net.web.requests[-1]
    assert request.raw_path == "/_matrix/federation/v1/send/t%2F1"
    # Step 3.2: Host is the delegated name; the signature names the server before delegation.
    assert request.host == f"deleg.test:{net.port}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == content
    assert_signed(net, "remote.test", content)


async def test_post_without_content_sends_an_empty_object(
    net: Net, transport: FederationTransport
) -> None:
    net.web.json("/_matrix/federation/v1/user/keys/query", {"device_keys": {}})
    await transport.request(
        f"127.0.0.1:{net.port}", "POST", "/_matrix/federation/v1/user/keys/query"
    )
    request = net.web.requests[-1]
    assert json.loads(request.body) == {}
    assert request.host == f"127.0.0.1:{net.port}"  # step 1: the IP literal server name
    assert_signed(net, f"127.0.0.1:{net.port}", {})


async def test_unsigned_request(net: Net, transport: FederationTransport) -> None:
    net.web.json("/_matrix/key/v2/server", {"server_name": "remote.test"})
    got = await transport.request("remote.test", "GET", "/_matrix/key/v2/server", signed=False)
    assert got == {"server_name": "remote.test"}
    assert "Authorization" not in net.web.requests[-1].headers


async def test_targets_are_tried_in_order(net: Net, transport: FederationTransport) -> None:
    net.dns.add(
        "_matrix-fed._tcp.remote.test",
        "SRV",
        f"10 0 {unused_port()} closed.test.",
        f"20 0 {net.port} deleg.test.",
    )
    net.dns.add("closed.test", "A", "127.0.0.1")
    net.web.json("/_matrix/federation/v1/version", {"server": {"name": "x"}})
    assert await transport.request("remote.test", "GET", "/_matrix/federation/v1/version") == {
        "server": {"name": "x"}
    }
    assert net.web.requests[-1].host == "remote.test"  # step 4: the server name, not the target


# --- errors -------------------------------------------------------------------------------------


async def test_non_2xx_carries_status_errcode_and_error(
    net: Net, transport: FederationTransport
) -> None:
    net.web.json(
        "/_matrix/federation/v1/event/x", {"errcode": "M_NOT_FOUND", "error": "No such event"}, 404
    )
    with pytest.raises(RemoteError) as caught:
        await transport.request("remote.test", "GET", "/_matrix/federation/v1/event/x")
    assert (caught.value.status, caught.value.errcode, caught.value.error) == (
        404,
        "M_NOT_FOUND",
        "No such event",
    )

    async def broken(request: web.Request) -> web.StreamResponse:
        return web.Response(status=502, text="Bad gateway")

    net.web.route("/_matrix/federation/v1/event/y", broken)
    with pytest.raises(RemoteError) as caught:
        await transport.request("remote.test", "GET", "/_matrix/federation/v1/event/y")
    assert (caught.value.status, caught.value.errcode, caught.value.body) == (502, None, None)


async def test_2xx_without_json(net: Net, transport: FederationTransport) -> None:
    async def text(request: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>")

    net.web.route("/_matrix/federation/v1/version", text)
    with pytest.raises(InvalidResponse):
        await transport.request("remote.test", "GET", "/_matrix/federation/v1/version")


async def test_response_size_cap(net: Net) -> None:
    big = {"data": "x" * 2000}
    net.web.json("/sized", big)

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse up front
        await response.prepare(request)
        for _ in range(10):
            await response.write(b" " * 500)
        await response.write(b"{}")
        return response

    net.web.route("/chunked", streamed)
    transport = net.transport(max_response_bytes=1000)
    try:
        for path in ("/sized", "/chunked"):
            with pytest.raises(ResponseTooLarge):
                await transport.request("remote.test", "GET", path)
        net.web.json("/small", {"ok": True})
        assert await transport.request("remote.test", "GET", "/small") == {"ok": True}
    finally:
        await transport.close()


async def test_timeout_is_unreachable(net: Net) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.json_response({})

    net.web.route("/slow", slow)
    transport = net.transport(timeout_s=0.3)
    try:
        with pytest.raises(Unreachable):
            await transport.request("remote.test", "GET", "/slow")
    finally:
        release.set()
        await transport.close()


async def test_nothing_listening_is_unreachable(net: Net, transport: FederationTransport) -> None:
    with pytest.raises(Unreachable) as caught:
        await transport.request(f"remote.test:{unused_port()}", "GET", "/x")
    assert not isinstance(caught.value, AddressForbidden)


# --- TLS --------------------------------------------------------------------------------------


async def test_certificate_must_match_the_discovered_name(
    net: Net, transport: FederationTransport
) -> None:
    net.web.json("/x", {})
    with pytest.raises(Unreachable, match="(?i)certificate"):
        await transport.request(f"wrong-name.test:{net.port}", "GET", "/x")
    assert net.web.requests == []


async def test_unknown_ca_is_unreachable_unless_checks_are_off(net: Net, tmp_path: Path) -> None:
    net.web.json("/x", {"ok": 1})
    other_ca = make_ca(tmp_path, "other").ca_file
    strict = net.transport(
        FederationConfig(allowed_ip_ranges=["127.0.0.0/8"], tls_ca_file=other_ca)
    )
    lax = net.transport(
        FederationConfig(allowed_ip_ranges=["127.0.0.0/8"], tls_ca_file=other_ca, tls_verify=False)
    )
    try:
        with pytest.raises(Unreachable, match="(?i)certificate"):
            await strict.request("remote.test", "GET", "/x")
        assert net.web.requests == []
        # Checks off: even the name mismatch passes.
        assert await lax.request(f"wrong-name.test:{net.port}", "GET", "/x") == {"ok": 1}
    finally:
        await strict.close()
        await lax.close()


# --- address policy ---------------------------------------------------------------------------


async def test_non_public_addresses_are_refused_without_connecting(net: Net) -> None:
    net.web.json("/x", {})
    transport = net.transport(FederationConfig(tls_ca_file=net.ca.ca_file))
    try:
        for destination in (f"127.0.0.1:{net.port}", f"remote.test:{net.port}", "10.0.0.1"):
            with pytest.raises(AddressForbidden):
                await transport.request(destination, "GET", "/x")
    finally:
        await transport.close()
    assert net.web.requests == []


async def test_allowed_ranges_let_a_private_address_through(net: Net) -> None:
    net.web.json("/x", {"ok": 1})
    transport = net.transport(
        FederationConfig(allowed_ip_ranges=["127.0.0.1/32"], tls_ca_file=net.ca.ca_file)
    )
    try:
        assert await transport.request(f"127.0.0.1:{net.port}", "GET", "/x") == {"ok": 1}
    finally:
        await transport.close()
