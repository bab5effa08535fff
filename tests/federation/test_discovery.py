"""Server discovery (S2S "Resolving server names", steps 1-6) against a real DNS server and a
real HTTPS server on 127.0.0.1, and the address policy for outbound connections."""

from __future__ import annotations

import email.utils
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from federation.discovery import (
    WELL_KNOWN_PATH,
    AddressForbidden,
    AddressPolicy,
    DiscoverySettings,
    ServerResolver,
    Target,
    Unreachable,
    srv_order,
    well_known_ttl_s,
)
from federation.transport import HttpsClient
from homeserver.config import FederationConfig
from tests.helpers.dns_server import DnsServer, dns_server
from tests.helpers.tls import RecordingServer, https_server, make_ca

NOW_MS = 1_700_000_000_000
HOUR_MS = 3600 * 1000
# Hosts whose well-known the test server answers: they resolve to the server's address.
WEB_HOSTS = ("hs.test", "hs2.test", "hs3.test")


class MovableClock:
    def __init__(self) -> None:
        self.now_ms = NOW_MS

    def time_ms(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


@dataclass
class Net:
    dns: DnsServer
    web: RecordingServer
    port: int  # the HTTPS server's, also the "8448" of these tests
    resolver: ServerResolver
    clock: MovableClock

    def well_known(self, host: str) -> int:
        """How many times the well-known of `host` was fetched."""
        return sum(1 for r in self.web.seen(WELL_KNOWN_PATH) if r.host.split(":")[0] == host)


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[Net]:
    ca = make_ca(tmp_path)
    server = RecordingServer()
    config = FederationConfig(allowed_ip_ranges=["127.0.0.0/8"], tls_ca_file=ca.ca_file)
    async with (
        dns_server() as dns,
        https_server(server.app, ca.server_context(*WEB_HOSTS, "127.0.0.1")) as port,
    ):
        for host in WEB_HOSTS:
            dns.add(host, "A", "127.0.0.1")
        https = HttpsClient(config)
        clock = MovableClock()
        settings = DiscoverySettings(
            nameservers=("127.0.0.1",),
            dns_port=dns.port,
            federation_port=port,
            well_known_port=port,
        )
        yield Net(dns, server, port, ServerResolver(https, settings, clock), clock)
        await https.close()


# --- step 1: IP literals --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server_name", "address", "port", "host_header"),
    [
        ("203.0.113.7", "203.0.113.7", None, "203.0.113.7"),
        ("203.0.113.7:8000", "203.0.113.7", 8000, "203.0.113.7:8000"),
        ("[2001:db8::1]", "2001:db8::1", None, "[2001:db8::1]"),
        ("[2001:DB8::1]:8000", "2001:db8::1", 8000, "[2001:DB8::1]:8000"),
    ],
)
async def test_ip_literal(
    net: Net, server_name: str, address: str, port: int | None, host_header: str
) -> None:
    targets = await net.resolver.resolve(server_name)
    # The certificate must be for the IP address; the Host header is the server name.
    assert targets == [Target(address, port or net.port, address, host_header)]
    assert net.dns.queries == [] and net.web.requests == []


# --- step 2: explicit port ------------------------------------------------------------------


async def test_explicit_port_uses_a_and_aaaa_without_well_known_or_srv(net: Net) -> None:
    net.dns.add("named.test", "A", "192.0.2.1")
    net.dns.add("named.test", "AAAA", "2001:db8::2")
    targets = await net.resolver.resolve("named.test:9000")
    assert targets == [
        Target("192.0.2.1", 9000, "named.test", "named.test:9000"),
        Target("2001:db8::2", 9000, "named.test", "named.test:9000"),
    ]
    assert net.web.requests == []
    assert {rdtype for _, rdtype in net.dns.queries} == {"A", "AAAA"}


async def test_cname_is_followed(net: Net) -> None:
    net.dns.add("alias.test", "CNAME", "real.test.")
    net.dns.add("real.test", "A", "192.0.2.9")
    assert await net.resolver.resolve("alias.test:9000") == [
        Target("192.0.2.9", 9000, "alias.test", "alias.test:9000")
    ]


# --- step 3: well-known -----------------------------------------------------------------------


async def test_well_known_with_port(net: Net) -> None:
    net.web.json(WELL_KNOWN_PATH, {"m.server": "deleg.test:7000"}, host="hs.test")
    net.dns.add("deleg.test", "A", "192.0.2.3")
    net.dns.add("_matrix-fed._tcp.deleg.test", "SRV", "10 0 1234 nowhere.test.")
    assert await net.resolver.resolve("hs.test") == [
        Target("192.0.2.3", 7000, "deleg.test", "deleg.test:7000")  # step 3.2: no SRV lookup
    ]
    assert ("_matrix-fed._tcp.deleg.test", "SRV") not in net.dns.queries
    [request] = net.web.requests
    assert request.host == f"hs.test:{net.port}"


@pytest.mark.parametrize(
    ("delegated", "target"),
    [
        ("192.0.2.5", Target("192.0.2.5", 0, "192.0.2.5", "192.0.2.5")),
        ("192.0.2.5:7000", Target("192.0.2.5", 7000, "192.0.2.5", "192.0.2.5:7000")),
        ("[2001:db8::5]:7000", Target("2001:db8::5", 7000, "2001:db8::5", "[2001:db8::5]:7000")),
    ],
)
async def test_well_known_ip_literal(net: Net, delegated: str, target: Target) -> None:
    net.web.json(WELL_KNOWN_PATH, {"m.server": delegated}, host="hs.test")
    [got] = await net.resolver.resolve("hs.test")
    assert got == Target(
        target.address, target.port or net.port, target.tls_hostname, target.host_header
    )


async def test_well_known_without_port_uses_srv_of_delegated_host(net: Net) -> None:
    net.web.json(WELL_KNOWN_PATH, {"m.server": "deleg.test"}, host="hs.test")
    net.dns.add(
        "_matrix-fed._tcp.deleg.test", "SRV", "20 0 7002 second.test.", "10 0 7001 first.test."
    )
    net.dns.add("first.test", "A", "192.0.2.11")
    net.dns.add("second.test", "A", "192.0.2.12")
    # Step 3.3: the SRV target's address and port, the delegated hostname's certificate.
    assert await net.resolver.resolve("hs.test") == [
        Target("192.0.2.11", 7001, "deleg.test", "deleg.test"),
        Target("192.0.2.12", 7002, "deleg.test", "deleg.test"),
    ]


async def test_well_known_without_port_deprecated_srv_then_default_port(net: Net) -> None:
    net.web.json(WELL_KNOWN_PATH, {"m.server": "deleg.test"}, host="hs.test")
    net.web.json(WELL_KNOWN_PATH, {"m.server": "deleg2.test"}, host="hs2.test")
    net.dns.add("_matrix._tcp.deleg.test", "SRV", "10 0 7003 old.test.")
    net.dns.add("old.test", "A", "192.0.2.13")
    net.dns.add("deleg2.test", "A", "192.0.2.14")
    # Step 3.4: _matrix._tcp after _matrix-fed._tcp found nothing.
    assert await net.resolver.resolve("hs.test") == [
        Target("192.0.2.13", 7003, "deleg.test", "deleg.test")
    ]
    queries = [q for q in net.dns.queries if q[1] == "SRV"]
    assert queries == [("_matrix-fed._tcp.deleg.test", "SRV"), ("_matrix._tcp.deleg.test", "SRV")]
    # Step 3.5: no SRV at all: the delegated host on the default port.
    assert await net.resolver.resolve("hs2.test") == [
        Target("192.0.2.14", net.port, "deleg2.test", "deleg2.test")
    ]


# --- steps 4 to 6: no (valid) well-known ------------------------------------------------------


def _bad_well_known(net: Net, kind: str) -> None:
    if kind == "404":
        return  # the server's default answer
    if kind == "500":
        net.web.json(WELL_KNOWN_PATH, {"m.server": "deleg.test:1"}, status=500, host="hs.test")
    elif kind == "not json":

        async def text(request: web.Request) -> web.StreamResponse:
            return web.Response(text="{not json", content_type="application/json")

        net.web.route(WELL_KNOWN_PATH, text, host="hs.test")
    elif kind == "no m.server":
        net.web.json(WELL_KNOWN_PATH, {"server": "deleg.test:1"}, host="hs.test")
    elif kind == "m.server invalid":
        net.web.json(WELL_KNOWN_PATH, {"m.server": "bad_name.test:1"}, host="hs.test")
    elif kind == "m.server bad IPv6":
        net.web.json(WELL_KNOWN_PATH, {"m.server": "[1::2::3]:1"}, host="hs.test")
    elif kind == "m.server not a string":
        net.web.json(WELL_KNOWN_PATH, {"m.server": ["deleg.test:1"]}, host="hs.test")
    elif kind == "unreachable":
        net.dns.records.pop(("hs.test", "A"))
        net.dns.add("hs.test", "A", "127.0.0.2")  # nothing listens there


BAD_WELL_KNOWN = [
    "404",
    "500",
    "not json",
    "no m.server",
    "m.server invalid",
    "m.server bad IPv6",
    "m.server not a string",
    "unreachable",
]


@pytest.mark.parametrize("kind", BAD_WELL_KNOWN)
async def test_bad_well_known_falls_through_to_srv(net: Net, kind: str) -> None:
    _bad_well_known(net, kind)
    net.dns.add("_matrix-fed._tcp.hs.test", "SRV", "10 0 7004 fed.test.")
    net.dns.add("_matrix._tcp.hs.test", "SRV", "10 0 7005 old.test.")
    net.dns.add("fed.test", "A", "192.0.2.15")
    # Step 4: the certificate and Host header stay the server name's.
    assert await net.resolver.resolve("hs.test") == [
        Target("192.0.2.15", 7004, "hs.test", "hs.test")
    ]
    assert kind == "unreachable" or net.well_known("hs.test") == 1


@pytest.mark.parametrize("kind", BAD_WELL_KNOWN)
async def test_bad_well_known_falls_through_to_deprecated_srv(net: Net, kind: str) -> None:
    _bad_well_known(net, kind)
    net.dns.add("_matrix._tcp.hs.test", "SRV", "10 0 7005 old.test.")
    net.dns.add("old.test", "AAAA", "2001:db8::15")
    # Step 5.
    assert await net.resolver.resolve("hs.test") == [
        Target("2001:db8::15", 7005, "hs.test", "hs.test")
    ]


@pytest.mark.parametrize("kind", BAD_WELL_KNOWN)
async def test_bad_well_known_falls_through_to_default_port(net: Net, kind: str) -> None:
    _bad_well_known(net, kind)
    # Step 6: the server name's own address, port 8448 (this test server's port here).
    [target] = await net.resolver.resolve("hs.test")
    assert (target.port, target.tls_hostname, target.host_header) == (
        net.port,
        "hs.test",
        "hs.test",
    )


async def test_srv_target_dot_means_no_service(net: Net) -> None:
    net.dns.add("_matrix-fed._tcp.hs.test", "SRV", "0 0 0 .")
    with pytest.raises(Unreachable, match="not available"):
        await net.resolver.resolve("hs.test")


async def test_no_address_at_all(net: Net) -> None:
    with pytest.raises(Unreachable, match="No address"):
        await net.resolver.resolve("missing.test:8448")
    with pytest.raises(Unreachable, match="not a valid server name"):
        await net.resolver.resolve("bad_name.test")
    with pytest.raises(Unreachable, match="invalid port"):
        await net.resolver.resolve("hs.test:0")
    with pytest.raises(Unreachable, match="invalid IPv6"):
        await net.resolver.resolve("[1::2::3]")


# --- redirects --------------------------------------------------------------------------------


def _redirect(net: Net, host: str, location: str) -> None:
    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(location)

    net.web.route(WELL_KNOWN_PATH, redirect, host=host)


async def test_well_known_redirects_are_followed(net: Net) -> None:
    _redirect(net, "hs.test", f"https://hs2.test:{net.port}/other")
    _redirect(net, "hs2.test", "/.well-known/matrix/server?x=1")  # relative to hs2.test
    net.web.json(WELL_KNOWN_PATH, {"m.server": "192.0.2.20:7000"}, host="hs3.test")

    async def last(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently(f"https://hs3.test:{net.port}{WELL_KNOWN_PATH}")

    net.web.route("/other", last, host="hs2.test")
    assert await net.resolver.resolve("hs.test") == [
        Target("192.0.2.20", 7000, "192.0.2.20", "192.0.2.20:7000")
    ]
    assert [(r.host.split(":")[0], r.raw_path) for r in net.web.requests] == [
        ("hs.test", WELL_KNOWN_PATH),
        ("hs2.test", "/other"),
        ("hs3.test", WELL_KNOWN_PATH),
    ]


async def test_redirect_loop_falls_through(net: Net) -> None:
    _redirect(net, "hs.test", f"https://hs2.test:{net.port}{WELL_KNOWN_PATH}")
    _redirect(net, "hs2.test", f"https://hs.test:{net.port}{WELL_KNOWN_PATH}")
    [target] = await net.resolver.resolve("hs.test")
    assert (target.port, target.host_header) == (net.port, "hs.test")
    assert len(net.web.requests) == 2  # noticed the loop instead of going round again


async def test_redirect_chain_is_bounded_and_http_refused(net: Net) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"/hop{len(net.web.requests)}")

    net.web.route(WELL_KNOWN_PATH, endless, host="hs.test")
    for hop in range(1, 20):
        net.web.route(f"/hop{hop}", endless, host="hs.test")
    [target] = await net.resolver.resolve("hs.test")
    assert target.host_header == "hs.test"
    assert len(net.web.requests) == 6  # the first request and five redirects

    _redirect(net, "hs2.test", f"http://hs3.test:{net.port}{WELL_KNOWN_PATH}")
    net.web.json(WELL_KNOWN_PATH, {"m.server": "192.0.2.20:7000"}, host="hs3.test")
    [target] = await net.resolver.resolve("hs2.test")
    assert target.host_header == "hs2.test"  # never followed to plain http


# --- caching ----------------------------------------------------------------------------------


async def test_resolutions_are_cached_for_the_dns_ttl(net: Net) -> None:
    net.dns.add("named.test", "A", "192.0.2.1", ttl=120)
    first = await net.resolver.resolve("named.test:9000")
    queries = len(net.dns.queries)
    assert await net.resolver.resolve("named.test:9000") == first
    assert len(net.dns.queries) == queries
    net.clock.advance(121_000)
    await net.resolver.resolve("named.test:9000")
    assert len(net.dns.queries) > queries


@pytest.mark.parametrize(
    ("headers", "ttl_s"),
    [
        ({}, 24 * 3600),  # the spec's recommended default
        ({"Cache-Control": "public, max-age=7200"}, 7200),
        ({"Cache-Control": "max-age=9999999"}, 48 * 3600),  # capped
        ({"Expires": email.utils.formatdate(NOW_MS / 1000 + 10_800, usegmt=True)}, 10_800),
    ],
)
async def test_well_known_is_cached_per_cache_headers(
    net: Net, headers: dict[str, str], ttl_s: int
) -> None:
    net.web.json(WELL_KNOWN_PATH, {"m.server": "192.0.2.30:7000"}, host="hs.test", headers=headers)
    await net.resolver.resolve("hs.test")
    net.clock.advance(ttl_s * 1000 - 1000)
    await net.resolver.resolve("hs.test")
    assert net.well_known("hs.test") == 1
    net.clock.advance(2000)
    await net.resolver.resolve("hs.test")
    assert net.well_known("hs.test") == 2


def test_well_known_ttl_bounds() -> None:
    assert well_known_ttl_s({"Cache-Control": "no-store"}, NOW_MS) == 300
    assert well_known_ttl_s({"Cache-Control": "max-age=10"}, NOW_MS) == 300
    assert well_known_ttl_s({"Expires": "garbage"}, NOW_MS) == 300
    assert well_known_ttl_s({"Cache-Control": "max-age=600"}, NOW_MS) == 600


async def test_well_known_errors_are_cached_with_back_off(net: Net) -> None:
    net.dns.add("hs.test", "A", "127.0.0.1", ttl=60)
    await net.resolver.resolve("hs.test")  # 404: cached 5 minutes
    schedule_min = [(4, 1), (2, 2), (9, 2), (2, 3), (19, 3), (2, 4), (39, 4), (2, 5)]
    schedule_min += [(59, 5), (2, 6), (59, 6), (2, 7)]  # at most an hour
    for minutes, fetches in schedule_min:
        net.clock.advance(minutes * 60_000)
        await net.resolver.resolve("hs.test")
        assert net.well_known("hs.test") == fetches, (minutes, fetches)
    # A valid answer ends the back-off and is used.
    net.web.json(WELL_KNOWN_PATH, {"m.server": "192.0.2.31:7000"}, host="hs.test")
    net.clock.advance(61 * 60_000)
    assert await net.resolver.resolve("hs.test") == [
        Target("192.0.2.31", 7000, "192.0.2.31", "192.0.2.31:7000")
    ]


# --- SRV order --------------------------------------------------------------------------------


def test_srv_order_priority_then_weight() -> None:
    records = [(20, 0, "c", 3), (10, 0, "a", 1), (10, 65535, "b", 2), (30, 5, "d", 4)]
    firsts = []
    for _ in range(30):
        ordered = srv_order(records)
        assert sorted(ordered) == [("a", 1), ("b", 2), ("c", 3), ("d", 4)]
        assert ordered[2:] == [("c", 3), ("d", 4)]
        firsts.append(ordered[0])
    # Weight 65535 against 0: "a" comes first about once in 65536 tries.
    assert firsts.count(("b", 2)) >= 28


# --- address policy ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.1.1",
        "100.64.0.1",  # CGNAT
        "224.0.0.1",
        "0.0.0.0",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
    ],
)
def test_policy_refuses_non_public_addresses(address: str) -> None:
    policy = AddressPolicy()
    assert not policy.is_allowed(address)
    with pytest.raises(AddressForbidden):
        policy.check(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_policy_allows_public_addresses(address: str) -> None:
    AddressPolicy().check(address)
    assert AddressPolicy().is_allowed(address)


def test_policy_allowed_ranges() -> None:
    policy = AddressPolicy(["10.1.0.0/16", "fd00::/8", "127.0.0.1"])
    assert policy.is_allowed("10.1.2.3")
    assert policy.is_allowed("::ffff:10.1.2.3")
    assert policy.is_allowed("fd12::1")
    assert policy.is_allowed("127.0.0.1")
    assert not policy.is_allowed("10.2.0.1")
    assert not policy.is_allowed("127.0.0.2")


async def test_well_known_fetch_obeys_the_policy(net: Net, tmp_path: Path) -> None:
    """Without 127.0.0.0/8 allowed, the well-known is never fetched from 127.0.0.1."""
    net.web.json(WELL_KNOWN_PATH, {"m.server": "192.0.2.40:7000"}, host="hs.test")
    settings = DiscoverySettings(
        nameservers=("127.0.0.1",),
        dns_port=net.dns.port,
        federation_port=net.port,
        well_known_port=net.port,
    )
    https = HttpsClient(FederationConfig(tls_ca_file=make_ca(tmp_path, "other").ca_file))
    try:
        resolver = ServerResolver(https, settings, net.clock)
        [target] = await resolver.resolve("hs.test")
    finally:
        await https.close()
    assert target == Target("127.0.0.1", net.port, "hs.test", "hs.test")  # step 6
    assert net.web.requests == []
