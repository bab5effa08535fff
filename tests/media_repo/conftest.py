"""A real aiohttp server with the client API and the media repository over a real Storage (both
databases) and a temporary media directory."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from client_api.http import CORE
from client_api.middleware import install_client_middleware
from client_api.routes import install_client_routes
from homeserver.config import LimitsConfig, MediaConfig, RegistrationConfig
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage
from media_repo.repository import MediaRepository, build_media_repository
from media_repo.routes import MEDIA, install_media_routes
from tests.client_api.conftest import UNLIMITED, ClientFactory
from tests.helpers.rest import RestHelper, User

MEDIA_V3 = "/_matrix/media/v3"
CLIENT_MEDIA = "/_matrix/client/v1/media"
# Big enough for the test of an upload over 50 MB.
MAX_UPLOAD = 64 * 1024 * 1024


def media_app(core: Core, config: MediaConfig) -> web.Application:
    """The client and media routes as homeserver/app.py wires them (without the listeners)."""
    app = web.Application(client_max_size=LimitsConfig().max_request_body_size)
    install_client_middleware(app)
    install_client_routes(app.router)
    install_media_routes(app.router, config.allow_legacy_unauthenticated)
    app[CORE] = core
    media = app[MEDIA] = build_media_repository(core, config)

    async def start(_app: web.Application) -> None:
        await media.start()

    async def close(_app: web.Application) -> None:
        await media.close()
        await core.persister.close()

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    return app


@pytest.fixture
def media_config(tmp_path: Path) -> MediaConfig:
    return MediaConfig(path=tmp_path / "media", max_upload_size=MAX_UPLOAD)


@pytest.fixture
def media_core(storage: Storage, server_keys: ServerKeys) -> Core:
    return build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=UNLIMITED,
    )


@dataclass
class MediaHarness:
    client: TestClient[Any, Any]
    rest: RestHelper
    media: MediaRepository
    config: MediaConfig

    def files(self) -> list[Path]:
        """Every file under the media directory (contents, thumbnails, temporary files)."""
        return sorted(p for p in self.config.path.rglob("*") if p.is_file())

    async def upload(
        self,
        user: User,
        data: bytes,
        content_type: str | None = "application/octet-stream",
        filename: str | None = None,
        expect: int = 200,
    ) -> Any:
        """POST /upload; returns the body (the content_uri on success)."""
        headers = dict(user.headers)
        if content_type is not None:
            headers["Content-Type"] = content_type
        params = {"filename": filename} if filename is not None else None
        response = await self.client.post(
            f"{MEDIA_V3}/upload", data=data, headers=headers, params=params
        )
        body = await response.json()
        assert response.status == expect, (response.status, body)
        return body["content_uri"] if expect == 200 else body

    async def download(self, user: User | None, uri: str, **params: str) -> bytes:
        response = await self.client.get(
            download_path(uri), headers=user.headers if user else None, params=params or None
        )
        assert response.status == 200, (response.status, await response.text())
        return await response.read()


def download_path(uri: str, prefix: str = CLIENT_MEDIA) -> str:
    return f"{prefix}/download/{uri.removeprefix('mxc://')}"


def thumbnail_path(uri: str, prefix: str = CLIENT_MEDIA) -> str:
    return f"{prefix}/thumbnail/{uri.removeprefix('mxc://')}"


HarnessFactory = Callable[[Core, MediaConfig], Awaitable[MediaHarness]]


@pytest.fixture
async def make_harness(
    storage: Storage, aiohttp_client: ClientFactory
) -> AsyncIterator[HarnessFactory]:
    """Builds servers over `storage`, and closes them before the database closes: the media
    repository finishes its background work (thumbnails) on the database as it stops."""
    made: list[MediaHarness] = []

    async def make(core: Core, config: MediaConfig) -> MediaHarness:
        app = media_app(core, config)
        client = await aiohttp_client(app)
        made.append(MediaHarness(client, RestHelper(client), app[MEDIA], config))
        return made[-1]

    yield make
    for harness in made:
        await harness.client.close()


@pytest.fixture
async def harness(
    make_harness: HarnessFactory, media_core: Core, media_config: MediaConfig
) -> MediaHarness:
    return await make_harness(media_core, media_config)


@pytest.fixture
async def alice(harness: MediaHarness) -> User:
    return await harness.rest.register("alice")


def _blocks(total: int, chunk: int) -> Iterator[bytes]:
    # Each block starts with its number, so a block delivered twice or out of order shows.
    filler = hashlib.sha256(b"seed").digest() * (chunk // 32 + 1)
    for number, start in enumerate(range(0, total, chunk)):
        n = min(chunk, total - start)
        yield (number.to_bytes(8, "big") + filler)[:n]


async def stream(total: int, chunk: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """`total` bytes, generated as they are sent (never all in memory)."""
    for block in _blocks(total, chunk):
        yield block


def stream_sha256(total: int, chunk: int = 1024 * 1024) -> str:
    """The SHA-256 of what stream(total, chunk) yields."""
    digest = hashlib.sha256()
    for block in _blocks(total, chunk):
        digest.update(block)
    return digest.hexdigest()
