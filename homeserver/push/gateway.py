"""HttpPushGateway: POST /_matrix/push/v1/notify to a push gateway over HTTPS (Push Gateway
API). The gateway's URL comes from a user (their pusher's `data.url`), so every address it
resolves to is checked like a federation peer's: no private, loopback or link-local
destinations unless configured. The client session is opened on the first notification:
most servers never push."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from homeserver.push.http_pusher import PushGatewayError

JsonDict = dict[str, Any]
TIMEOUT_SECONDS = 30

AddressCheck = Callable[[str], bool]  # an IP address -> whether we may connect to it


class _CheckedResolver(AbstractResolver):
    """The system resolver, keeping only the addresses the policy allows."""

    def __init__(self, allowed: AddressCheck) -> None:
        self._allowed = allowed
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if self._allowed(r["host"])]
        if not kept:
            raise OSError(f"{host} has no address we may connect to")
        return kept

    async def close(self) -> None:
        await self._inner.close()


class HttpPushGateway:
    def __init__(
        self,
        allowed: AddressCheck,
        ssl_context: Callable[[], ssl.SSLContext] = ssl.create_default_context,
    ) -> None:
        self._allowed = allowed
        self._make_ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            # Loading CA certificates reads files: off the event loop.
            context = await asyncio.to_thread(self._make_ssl_context)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                connector=aiohttp.TCPConnector(
                    ssl=context, resolver=_CheckedResolver(self._allowed)
                ),
            )
        return self._session

    async def notify(self, url: str, body: JsonDict) -> list[str]:
        host = URL(url).host or ""
        try:
            literal = str(ip_address(host.strip("[]")))
        except ValueError:
            literal = None
        # aiohttp connects to an IP literal without asking the resolver.
        if literal is not None and not self._allowed(literal):
            raise PushGatewayError(f"{literal} is not an address we may connect to")
        session = await self._open()
        try:
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    raise PushGatewayError(f"HTTP {response.status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
            raise PushGatewayError(str(e) or type(e).__name__) from e
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        return [k for k in rejected if isinstance(k, str)] if isinstance(rejected, list) else []

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
