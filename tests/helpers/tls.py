"""A throwaway certificate authority and HTTPS test servers on 127.0.0.1, for the outbound
federation tests: real TLS with certificates for DNS names and IP addresses."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from aiohttp import web


@dataclass
class CertAuthority:
    """A CA whose certificate is in `ca_file`, for FederationConfig.tls_ca_file."""

    ca: trustme.CA
    ca_file: Path

    def server_context(self, *names: str) -> ssl.SSLContext:
        """A server context presenting one certificate valid for all `names` (DNS names or
        IP addresses)."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*names).configure_cert(context)
        return context


def make_ca(directory: Path, name: str = "ca") -> CertAuthority:
    ca = trustme.CA()
    ca_file = directory / f"{name}.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return CertAuthority(ca, ca_file)


def unused_port() -> int:
    """A port nothing listens on (bound, then released): connecting there is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def https_server(app: web.Application, context: ssl.SSLContext) -> AsyncIterator[int]:
    """Serves `app` over TLS on 127.0.0.1; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=context).start()
    try:
        yield port
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    raw_path: str  # path and query exactly as they arrived
    host: str  # the Host header
    headers: dict[str, str]
    body: bytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RecordingServer:
    """An app that records every request and answers from handlers chosen by (hostname of
    the Host header, path), falling back to the path alone; 404 M_UNRECOGNIZED otherwise."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._routes: dict[tuple[str | None, str], Handler] = {}
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)

    def route(self, path: str, handler: Handler, host: str | None = None) -> None:
        self._routes[(host, path)] = handler

    def json(
        self,
        path: str,
        body: Any,
        status: int = 200,
        host: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        async def answer(request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status, headers=headers)

        self.route(path, answer, host)

    def seen(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.raw_path.split("?")[0] == path]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            RecordedRequest(
                request.method,
                request.raw_path,
                request.headers.get("Host", ""),
                dict(request.headers),
                await request.read(),
            )
        )
        handler = self._routes.get((request.url.host, request.path)) or self._routes.get(
            (None, request.path)
        )
        if handler is None:
            return web.json_response(
                {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, status=404
            )
        return await handler(request)
