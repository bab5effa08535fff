"""The HTTPS transport every outbound federation request goes through (S2S "API standards",
"TLS", "Request Authentication"): discovery, the address policy, certificate checks for the
discovered name, X-Matrix signatures, timeouts and a cap on response size.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from signedjson.types import SigningKey
from yarl import URL

from federation.auth import authorization_header
from federation.discovery import (
    AddressForbidden,
    AddressPolicy,
    DiscoverySettings,
    FederationError,
    HttpResponse,
    ServerResolver,
    Target,
    Unreachable,
)
from homeserver.clock import Clock
from homeserver.config import FederationConfig

logger = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 100 * 1024 * 1024
REQUEST_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 20.0
# Bodies larger than this are parsed in a thread, so a big /state answer does not stall the
# event loop.
_PARSE_IN_THREAD_BYTES = 1024 * 1024

Query = Mapping[str, str | Sequence[str]]


class RemoteError(FederationError):
    """The remote server answered with a non-2xx status; errcode and error come from its
    Matrix error body, when it sent one."""

    def __init__(
        self, destination: str, status: int, errcode: str | None, error: str | None, body: Any
    ) -> None:
        super().__init__(f"{destination} answered {status} {errcode or ''}: {error or ''}")
        self.destination = destination
        self.status = status
        self.errcode = errcode
        self.error = error
        self.body = body


class InvalidResponse(FederationError):
    """A 2xx response whose body is not JSON."""


class ResponseTooLarge(InvalidResponse):
    pass


def make_ssl_context(config: FederationConfig) -> ssl.SSLContext:
    """The system's CAs plus the configured file's; no checks at all when tls_verify is off.
    Reads files: call it off the event loop."""
    if not config.tls_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    if config.tls_ca_file is not None:
        context.load_verify_locations(cafile=str(config.tls_ca_file))
    return context


class HttpsClient:
    """One aiohttp session for all outbound federation traffic. Sends a request to the first
    target that accepts a connection, after checking its address against the policy; the
    certificate must be valid for the target's tls_hostname, whatever address it is on."""

    def __init__(
        self,
        config: FederationConfig,
        *,
        timeout_s: float = REQUEST_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self._config = config
        self.policy = AddressPolicy(config.allowed_ip_ranges)
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        self._opening = asyncio.Lock()

    async def _open(self) -> tuple[aiohttp.ClientSession, ssl.SSLContext]:
        async with self._opening:
            if self._session is None or self._ssl is None:
                self._ssl = await asyncio.to_thread(make_ssl_context, self._config)
                self._session = aiohttp.ClientSession(timeout=self._timeout)
            return self._session, self._ssl

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(
        self,
        targets: Sequence[Target],
        method: str,
        request_target: str,
        headers: Mapping[str, str],
        body: bytes | None,
        max_bytes: int,
    ) -> HttpResponse:
        """`request_target` is sent exactly as given (path and query, percent-encoded). The
        next target is tried only when no connection was made, so a request is never sent
        twice."""
        session, context = await self._open()
        failures: list[str] = []
        attempted = False
        for target in targets:
            if not self.policy.is_allowed(target.address):
                failures.append(f"{target.address} is not a public address")
                continue
            attempted = True
            host = f"[{target.address}]" if ":" in target.address else target.address
            url = URL(f"https://{host}:{target.port}{request_target}", encoded=True)
            try:
                async with session.request(
                    method,
                    url,
                    headers={**headers, "Host": target.host_header},
                    data=body,
                    ssl=context,
                    # Python sends no SNI for an IP address, as the spec asks.
                    server_hostname=target.tls_hostname,
                    allow_redirects=False,
                ) as response:
                    return HttpResponse(
                        response.status, dict(response.headers), await _read(response, max_bytes)
                    )
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
                # TLS failures are connector errors too: that server never got the request.
                failures.append(f"{target.address}:{target.port}: {e}")
                logger.info("federation connect failed target=%s reason=%s", target, e)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise Unreachable(f"Request to {target.host_header} failed: {e!r}") from e
        if not attempted and failures:
            raise AddressForbidden("; ".join(failures))
        raise Unreachable("Could not connect: " + ("; ".join(failures) or "no targets"))


async def _read(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if response.content_length is not None and response.content_length > max_bytes:
        raise ResponseTooLarge(f"Response of {response.content_length} bytes is too large")
    chunks = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise ResponseTooLarge(f"Response larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class FederationTransport:
    """Outbound server-server requests: resolve the destination, sign, send, parse JSON."""

    def __init__(
        self,
        server_name: str,
        signing_key: SigningKey,
        config: FederationConfig,
        *,
        discovery: DiscoverySettings = DiscoverySettings(),
        clock: Clock | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        self.server_name = server_name
        self._signing_key = signing_key
        self._max_response_bytes = max_response_bytes
        self.https = HttpsClient(config, timeout_s=timeout_s)
        self.resolver = ServerResolver(self.https, discovery, clock)

    async def close(self) -> None:
        await self.https.close()

    async def request(
        self,
        destination: str,
        method: str,
        path: str,
        query: Query | None = None,
        content: Any = None,
        *,
        signed: bool = True,
    ) -> Any:
        """The parsed JSON response of `method path?query` on `destination` (a server name,
        before delegation). `path` is already percent-encoded. Unsigned requests are for
        /_matrix/key/v2/*, which needs no authentication.

        Raises RemoteError (non-2xx), Unreachable (DNS, connect, TLS, timeout; its subclass
        AddressForbidden for refused addresses), InvalidResponse (not JSON, too large)."""
        response = await self.request_raw(destination, method, path, query, content, signed=signed)
        parsed = await _parse_json(response.body)
        if not 200 <= response.status < 300:
            errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
            error = parsed.get("error") if isinstance(parsed, dict) else None
            raise RemoteError(
                destination,
                response.status,
                errcode if isinstance(errcode, str) else None,
                error if isinstance(error, str) else None,
                None if parsed is _NOT_JSON else parsed,
            )
        if parsed is _NOT_JSON:
            raise InvalidResponse(f"{destination} answered {response.status} without JSON")
        return parsed

    async def request_raw(
        self,
        destination: str,
        method: str,
        path: str,
        query: Query | None = None,
        content: Any = None,
        *,
        signed: bool = True,
        max_bytes: int | None = None,
    ) -> HttpResponse:
        """The response as received, whatever its status and body (media are not JSON): as
        request(), up to `max_bytes` of body (the transport's cap by default).

        Raises Unreachable (and AddressForbidden), ResponseTooLarge."""
        request_target = path
        if query:
            request_target += "?" + urlencode(query, doseq=True, quote_via=quote)
        if content is None and method in ("POST", "PUT"):
            content = {}  # S2S "API standards": POST and PUT always carry a JSON object
        headers: dict[str, str] = {}
        body = None
        if content is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
        if signed:
            headers["Authorization"] = authorization_header(
                self.server_name, self._signing_key, destination, method, request_target, content
            )
        targets = await self.resolver.resolve(destination)
        limit = self._max_response_bytes if max_bytes is None else max_bytes
        return await self.https.fetch(targets, method, request_target, headers, body, limit)


_NOT_JSON = object()


async def _parse_json(body: bytes) -> Any:
    try:
        if len(body) > _PARSE_IN_THREAD_BYTES:
            return await asyncio.to_thread(json.loads, body)
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return _NOT_JSON
