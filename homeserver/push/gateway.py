"""HttpPushGateway: POST /_matrix/push/v1/notify to a push gateway over HTTPS (Push Gateway
API). The client session is opened on the first notification: most servers never push."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import aiohttp

JsonDict = dict[str, Any]
TIMEOUT_SECONDS = 30


class HttpPushGateway:
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            if self._ssl_context is None:
                # Loading the system's CA certificates reads files: off the event loop.
                self._ssl_context = await asyncio.to_thread(ssl.create_default_context)
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
                connector=aiohttp.TCPConnector(ssl=self._ssl_context),
            )
        return self._session

    async def notify(self, url: str, body: JsonDict) -> list[str]:
        session = await self._open()
        async with session.post(url, json=body) as response:
            response.raise_for_status()
            answer = await response.json()
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        return [k for k in rejected if isinstance(k, str)] if isinstance(rejected, list) else []

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
