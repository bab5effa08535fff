"""Server discovery (S2S "Resolving server names", steps 1-6): a server name becomes the
ordered addresses to connect to, each with the certificate name and Host header to use; and
the address policy every outbound connection passes first.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import logging
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from homeserver.address_policy import OutboundAddressPolicy
from homeserver.clock import Clock, SystemClock
from homeserver.identifiers import is_valid_server_name
from homeserver.lru import LruCache

logger = logging.getLogger(__name__)


WELL_KNOWN_PATH = "/.well-known/matrix/server"
# Recommended by the spec (step 3): 24 h when the response says nothing, at most 48 h.
WELL_KNOWN_DEFAULT_TTL_S = 24 * 3600
WELL_KNOWN_MAX_TTL_S = 48 * 3600
# A floor, so a server answering max-age=0 is not asked again before every request.
WELL_KNOWN_MIN_TTL_S = 5 * 60
# Errors are cached for up to an hour, doubling from this for each failure in a row.
WELL_KNOWN_ERROR_FIRST_TTL_S = 5 * 60
WELL_KNOWN_ERROR_MAX_TTL_S = 3600
WELL_KNOWN_MAX_REDIRECTS = 5
WELL_KNOWN_MAX_BYTES = 50 * 1024
# Resolved targets live as long as the shortest DNS TTL behind them, within these bounds.
RESOLVED_MIN_TTL_S = 60
RESOLVED_MAX_TTL_S = 3600
DNS_LIFETIME_S = 10.0

class FederationError(Exception):
    """Base of the errors outbound federation requests raise."""


class Unreachable(FederationError):
    """No connection could be made to the server: discovery, DNS, connect, TLS or timeout."""


class AddressForbidden(Unreachable):
    """Every address the server name led to is one we refuse to connect to."""


@dataclass(frozen=True, slots=True)
class Target:
    """One place to send a request: connect to `address`:`port`, check that the certificate
    is valid for `tls_hostname` (also the SNI, unless it is an IP address), send `Host:
    host_header`."""

    address: str
    port: int
    tls_hostname: str
    host_header: str


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpsFetcher(Protocol):
    """One request, no redirects followed, to the first of `targets` that accepts a
    connection (the transport implements it; the address policy applies)."""

    async def fetch(
        self,
        targets: Sequence[Target],
        method: str,
        request_target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        max_bytes: int,
    ) -> HttpResponse: ...


class AddressPolicy(OutboundAddressPolicy):
    """The outbound address policy, refusing with the federation client's error."""

    def check(self, address: str) -> None:
        if not self.is_allowed(address):
            raise AddressForbidden(f"Refusing to connect to the non-public address {address}")


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    # Empty: the system's resolvers (/etc/resolv.conf). Tests point this at their own server.
    nameservers: tuple[str, ...] = ()
    dns_port: int = 53
    # The spec's port for server names without one (steps 1, 3.1, 3.5 and 6); tests change it.
    federation_port: int = 8448
    well_known_port: int = 443
    cache_size: int = 10_000


def split_server_name(server_name: str) -> tuple[str, int | None]:
    """(hostname, port) of a server name; an IPv6 literal's hostname keeps its brackets."""
    if not is_valid_server_name(server_name):
        raise Unreachable(f"{server_name!r} is not a valid server name")
    match = re.fullmatch(r"(.*?)(?::([0-9]{1,5}))?", server_name)
    assert match is not None  # the pattern matches every string
    host, port = match.group(1), match.group(2)
    if port is not None and not 0 < int(port) < 65536:
        raise Unreachable(f"{server_name!r} has an invalid port")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise Unreachable(f"{server_name!r} has an invalid IPv6 address") from None
    return host, int(port) if port is not None else None


def ip_literal(host: str) -> str | None:
    """The address of an IP literal hostname ("1.2.3.4", "[::1]"), None for a DNS name."""
    if host.startswith("["):
        return str(ipaddress.IPv6Address(host[1:-1]))  # checked by split_server_name
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        return None


@dataclass(slots=True)
class _WellKnown:
    delegated: str | None  # m.server, None after an error
    expires_ms: int
    failures: int = 0  # errors in a row, for the back-off


@dataclass(slots=True)
class _Lookup:
    """Targets found so far, and the shortest TTL of the answers they came from."""

    targets: list[Target] = field(default_factory=list)
    ttl_s: int = RESOLVED_MAX_TTL_S

    def saw_ttl(self, ttl_s: int) -> None:
        self.ttl_s = min(self.ttl_s, ttl_s)


class ServerResolver:
    """Server name -> ordered connection targets, following the spec's steps exactly."""

    def __init__(
        self,
        https: HttpsFetcher,
        settings: DiscoverySettings = DiscoverySettings(),
        clock: Clock | None = None,
    ) -> None:
        self._https = https
        self._settings = settings
        self._clock = clock or SystemClock()
        self._dns: dns.asyncresolver.Resolver | None = None
        self._well_known: LruCache[str, _WellKnown] = LruCache(settings.cache_size)
        self._resolved: LruCache[str, tuple[list[Target], int]] = LruCache(settings.cache_size)

    async def resolve(self, server_name: str) -> list[Target]:
        """The targets to try in order; Unreachable when there are none."""
        host, port = split_server_name(server_name)
        address = ip_literal(host)
        if address is not None:  # step 1
            return [Target(address, port or self._settings.federation_port, address, server_name)]
        now_ms = self._clock.time_ms()
        cached = self._resolved.get_hit(server_name)
        if cached is not None and cached[1] > now_ms:
            return cached[0]
        lookup = _Lookup()
        if port is not None:  # step 2
            await self._add_addresses(lookup, host, port, host, server_name)
        else:
            await self._resolve_without_port(lookup, host)
        if not lookup.targets:
            raise Unreachable(f"No address found for {server_name}")
        self._resolved.put(server_name, (lookup.targets, now_ms + lookup.ttl_s * 1000))
        return lookup.targets

    async def _resolve_without_port(self, lookup: _Lookup, host: str) -> None:
        well_known = await self._well_known_entry(host)
        delegated = well_known.delegated
        if delegated is not None:
            # The targets must not outlive the delegation they came from.
            lookup.saw_ttl((well_known.expires_ms - self._clock.time_ms()) // 1000)
            d_host, d_port = split_server_name(delegated)
            d_address = ip_literal(d_host)
            if d_address is not None:  # step 3.1
                port = d_port or self._settings.federation_port
                lookup.targets.append(Target(d_address, port, d_address, delegated))
            elif d_port is not None:  # step 3.2
                await self._add_addresses(lookup, d_host, d_port, d_host, delegated)
            else:  # steps 3.3 to 3.5
                await self._srv_or_default(lookup, d_host)
            return
        await self._srv_or_default(lookup, host)  # steps 4 to 6

    async def _srv_or_default(self, lookup: _Lookup, host: str) -> None:
        """SRV _matrix-fed._tcp, then the deprecated _matrix._tcp, then host:8448; the
        certificate and Host header are always `host`'s (the spec's note on SRV)."""
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            records = await self._srv(lookup, f"{service}.{host}")
            if records:
                for srv_target, srv_port in records:
                    await self._add_addresses(lookup, srv_target, srv_port, host, host)
                return
        await self._add_addresses(lookup, host, self._settings.federation_port, host, host)

    async def _add_addresses(
        self, lookup: _Lookup, host: str, port: int, tls_hostname: str, host_header: str
    ) -> None:
        for address in await self._addresses(lookup, host):
            lookup.targets.append(Target(address, port, tls_hostname, host_header))

    # --- DNS ---------------------------------------------------------------------------

    async def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            if self._settings.nameservers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = list(self._settings.nameservers)
                resolver.port = self._settings.dns_port
            else:
                # Reads /etc/resolv.conf: off the event loop.
                resolver = await asyncio.to_thread(dns.asyncresolver.Resolver)
            resolver.lifetime = DNS_LIFETIME_S
            self._dns = resolver
        return self._dns

    async def _query(self, lookup: _Lookup, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The answer, or None when the name has no such records; Unreachable when DNS
        itself fails (so a broken resolver does not send us to the wrong port)."""
        resolver = await self._resolver()
        try:
            answer = await resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as e:
            raise Unreachable(f"DNS lookup of {rdtype} {name} failed: {e}") from e
        if answer.rrset is not None:
            lookup.saw_ttl(max(answer.rrset.ttl, RESOLVED_MIN_TTL_S))
        return answer

    async def _addresses(self, lookup: _Lookup, host: str) -> list[str]:
        """IPv4 first: hosts without IPv6 routes are common, and a failed connect moves on
        to the next target anyway. CNAMEs are followed by the resolver."""
        addresses: list[str] = []
        for rdtype in ("A", "AAAA"):
            answer = await self._query(lookup, host, rdtype)
            if answer is not None:
                addresses.extend(str(rdata.address) for rdata in answer)
        return addresses

    async def _srv(self, lookup: _Lookup, name: str) -> list[tuple[str, int]]:
        answer = await self._query(lookup, name, "SRV")
        if answer is None:
            return []
        if [r.target for r in answer] == [dns.name.root]:
            # RFC 2782: a target of "." means the service is decidedly not available here.
            raise Unreachable(f"{name} says the service is not available")
        return srv_order(
            (r.priority, r.weight, r.target.to_text(omit_final_dot=True), r.port) for r in answer
        )

    # --- /.well-known/matrix/server -------------------------------------------------------

    async def _well_known_entry(self, host: str) -> _WellKnown:
        """The (cached) well-known answer: m.server, or None after any error."""
        now_ms = self._clock.time_ms()
        entry = self._well_known.get_hit(host)
        if entry is not None and entry.expires_ms > now_ms:
            return entry
        failures = entry.failures if entry is not None and entry.delegated is None else 0
        try:
            delegated, ttl_s = await self._fetch_well_known(host)
        except FederationError as e:
            failures += 1
            ttl_s = min(
                WELL_KNOWN_ERROR_FIRST_TTL_S * 2 ** (failures - 1), WELL_KNOWN_ERROR_MAX_TTL_S
            )
            logger.info("no well-known delegation host=%s failures=%d reason=%s", host, failures, e)
            entry = _WellKnown(None, now_ms + ttl_s * 1000, failures)
        else:
            entry = _WellKnown(delegated, now_ms + ttl_s * 1000)
        self._well_known.put(host, entry)
        return entry

    async def _fetch_well_known(self, host: str) -> tuple[str, int]:
        port = self._settings.well_known_port
        url = f"https://{host}{'' if port == 443 else f':{port}'}{WELL_KNOWN_PATH}"
        seen = {url}
        for _ in range(WELL_KNOWN_MAX_REDIRECTS + 1):
            response = await self._get(url)
            location = response.headers.get("Location")
            if response.status in (301, 302, 303, 307, 308) and location:
                url = urljoin(url, location)
                if url in seen:
                    raise FederationError(f"Redirect loop at {url}")
                seen.add(url)
                continue
            if response.status != 200:
                raise FederationError(f"The well-known response has status {response.status}")
            try:
                body = json.loads(response.body)
            except ValueError:
                raise FederationError("The well-known response is not JSON") from None
            delegated = body.get("m.server") if isinstance(body, dict) else None
            if not isinstance(delegated, str):
                raise FederationError("The well-known response has no m.server string")
            # Checked here, so an invalid m.server is an invalid response: cached, then step 4.
            split_server_name(delegated)
            return delegated, well_known_ttl_s(response.headers, self._clock.time_ms())
        raise FederationError(f"More than {WELL_KNOWN_MAX_REDIRECTS} redirects")

    async def _get(self, url: str) -> HttpResponse:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise FederationError(f"Not an https URL: {url}")
        try:
            port = parts.port or 443
        except ValueError:
            raise FederationError(f"Invalid port in {url}") from None
        hostname = parts.hostname  # lower-cased, IPv6 without brackets
        host_header = parts.netloc.rpartition("@")[2]
        try:
            address: str | None = str(ipaddress.ip_address(hostname))
        except ValueError:
            address = None
        if address is not None:
            targets = [Target(address, port, address, host_header)]
        else:
            lookup = _Lookup()
            await self._add_addresses(lookup, hostname, port, hostname, host_header)
            targets = lookup.targets
            if not targets:
                raise Unreachable(f"No address found for {hostname}")
        request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return await self._https.fetch(
            targets, "GET", request_target, {}, None, WELL_KNOWN_MAX_BYTES
        )


def well_known_ttl_s(headers: Mapping[str, str], now_ms: int) -> int:
    """How long to keep a valid well-known response: Cache-Control max-age, else Expires,
    else the default; within [WELL_KNOWN_MIN_TTL_S, WELL_KNOWN_MAX_TTL_S]."""
    ttl_s: float = WELL_KNOWN_DEFAULT_TTL_S
    cache_control = {
        name.strip().lower(): value.strip().strip('"')
        for name, _, value in (
            directive.partition("=") for directive in headers.get("Cache-Control", "").split(",")
        )
    }
    expires = headers.get("Expires")
    if "no-store" in cache_control or "no-cache" in cache_control:
        ttl_s = 0
    elif cache_control.get("max-age", "").isdigit():
        ttl_s = int(cache_control["max-age"])
    elif expires:
        try:
            ttl_s = email.utils.parsedate_to_datetime(expires).timestamp() - now_ms / 1000
        except (TypeError, ValueError):
            ttl_s = 0  # RFC 9111: an invalid Expires means already expired
    return int(min(max(ttl_s, WELL_KNOWN_MIN_TTL_S), WELL_KNOWN_MAX_TTL_S))


def srv_order(records: Iterable[tuple[int, int, str, int]]) -> list[tuple[str, int]]:
    """(target, port) of SRV (priority, weight, target, port) records in the order RFC 2782
    asks clients to try them: lowest priority first, then a weighted random order."""
    by_priority: dict[int, list[tuple[int, str, int]]] = {}
    for priority, weight, target, port in records:
        by_priority.setdefault(priority, []).append((weight, target, port))
    ordered = []
    for priority in sorted(by_priority):
        # Zero weights first, so that they have a small chance of being picked early.
        group = sorted(by_priority[priority], key=lambda record: record[0] != 0)
        while group:
            pick = random.randint(0, sum(weight for weight, _, _ in group))
            running = 0
            for index, (weight, target, port) in enumerate(group):
                running += weight
                if running >= pick:
                    ordered.append((target, port))
                    del group[index]
                    break
    return ordered
