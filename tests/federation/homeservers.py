"""Several whole homeservers on 127.0.0.1, each built from a config as `homeserver run` builds
it, serving every resource over real TLS (certificates from a throwaway CA that each server's
federation config trusts), with server names "127.0.0.1:<port>". Each has a RestHelper for
its client API. SQLite or PostgreSQL (a schema of its own per server)."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from client_api.http import CORE
from homeserver.app import build_app
from homeserver.config import (
    Config,
    FederationConfig,
    LimitsConfig,
    RateLimit,
    RegistrationConfig,
    default_config,
)
from homeserver.core import Core
from tests.conftest import POSTGRES_DSN, drop_postgres_schema, make_postgres_database
from tests.helpers.rest import RestHelper
from tests.helpers.tls import CertAuthority, make_ca

UNLIMITED = RateLimit(0, 0)


@dataclass
class Homeserver:
    server_name: str
    config: Config
    context: ssl.SSLContext
    rest: RestHelper
    app: web.Application | None = None
    runner: web.AppRunner | None = None

    @property
    def core(self) -> Core:
        assert self.app is not None, "the server is stopped"
        return self.app[CORE]

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    async def start(self) -> None:
        """Serve (again) on the server's port, with the data it had."""
        port = int(self.server_name.rsplit(":", 1)[1])
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        self.app = await build_app(self.config)
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        await web.SockSite(self.runner, sock, ssl_context=self.context).start()

    async def stop(self) -> None:
        """Stop serving and close storage, as a stopped process would."""
        if self.runner is not None:
            await self.runner.cleanup()
        self.app = self.runner = None


@asynccontextmanager
async def homeservers(
    tmp_path: Path, count: int, engine: str = "sqlite", ca: CertAuthority | None = None
) -> AsyncIterator[list[Homeserver]]:
    """`count` servers whose certificates come from `ca` (made here when not given), which
    each server's federation config trusts."""
    ca = ca or make_ca(tmp_path)
    server_context = ca.server_context("127.0.0.1")
    client_context = ssl.create_default_context(cafile=str(ca.ca_file))
    async with AsyncExitStack() as stack:
        servers = []
        for i in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            server_name = f"127.0.0.1:{port}"
            config = default_config(tmp_path / f"hs{i}", server_name=server_name)
            config.registration = RegistrationConfig(enabled=True)
            config.limits = LimitsConfig(
                messages=UNLIMITED,
                login_ip=UNLIMITED,
                login_account=UNLIMITED,
                registration_ip=UNLIMITED,
            )
            config.federation = FederationConfig(
                allowed_ip_ranges=["127.0.0.0/8"], tls_ca_file=ca.ca_file
            )
            if engine == "postgres":
                probe, schema = await make_postgres_database()
                await probe.close()
                stack.push_async_callback(drop_postgres_schema, schema)
                sep = "&" if "?" in POSTGRES_DSN else "?"
                config.database = dataclasses.replace(
                    config.database,
                    engine="postgres",
                    dsn=f"{POSTGRES_DSN}{sep}search_path={schema}",
                )
            sock.close()  # start() binds the port again, as a restarted process would
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context))
            stack.push_async_callback(session.close)
            server = Homeserver(
                server_name,
                config,
                server_context,
                RestHelper(HttpClient(session, f"https://{server_name}")),
            )
            await server.start()
            stack.push_async_callback(server.stop)
            servers.append(server)
        yield servers


class HttpClient:
    """What RestHelper needs of aiohttp's TestClient: request(method, path, **kwargs) on one
    server. The path is used as written (already percent-encoded, as in the other tests)."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, URL(self.base + path, encoded=True), **kwargs)
