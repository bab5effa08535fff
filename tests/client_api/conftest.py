"""A real aiohttp server with the client API over a real Storage (both databases)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from client_api.http import CORE
from client_api.middleware import install_client_middleware
from client_api.routes import install_client_routes
from homeserver.config import LimitsConfig, RateLimit, RegistrationConfig
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage
from tests.helpers.mail import Mailbox, start_smtp
from tests.helpers.rest import RestHelper

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


def client_app(core: Core) -> web.Application:
    app = web.Application(client_max_size=LimitsConfig().max_request_body_size)
    install_client_middleware(app)
    install_client_routes(app.router)
    app[CORE] = core

    async def close(_app: web.Application) -> None:
        await core.persister.close()

    app.on_cleanup.append(close)
    return app


OFF = RateLimit(0, 0)
# Tests register users and send events faster than people do; the limits have their own
# tests (test_limits.py), which build a core with the default limits.
UNLIMITED = LimitsConfig(messages=OFF, login_ip=OFF, login_account=OFF, registration_ip=OFF)


@pytest.fixture
def client_core(storage: Storage, server_keys: ServerKeys) -> Core:
    return build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=UNLIMITED,
    )


@pytest.fixture
async def client(client_core: Core, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    # client_core first: fixtures are torn down in reverse, so the server and its cleanup
    # (which lets queued events commit) go before the database closes.
    return await aiohttp_client(client_app(client_core))


@pytest.fixture
def rest(client: TestClient[Any, Any]) -> RestHelper:
    return RestHelper(client)


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Mailbox, int]]:
    """A real SMTP server on 127.0.0.1: its mailbox and port."""
    mailbox = Mailbox()
    server, port = await start_smtp(mailbox)
    yield mailbox, port
    server.close()
    await server.wait_closed()
