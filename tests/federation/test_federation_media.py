"""Remote media across real servers (S-S API "Content Repository"): a user of one server
downloads and thumbnails another server's media through its own server, which fetches it once
over federation and then serves its copy; the federation endpoints themselves."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from federation.transport import FederationTransport
from media_repo.routes import MEDIA
from tests.federation.homeservers import Homeserver, homeservers
from tests.helpers.rest import User
from tests.helpers.spec_schemas import assert_response_valid

CLIENT_MEDIA = "/_matrix/client/v1/media"
FEDERATION_MEDIA = "/_matrix/federation/v1/media"
# Several write batches and network reads: more than one of anything.
BINARY_SIZE = 3 * 1024 * 1024 + 17


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def upload(server: Homeserver, user: User, data: bytes, content_type: str, name: str) -> str:
    """POST /upload; the media ID of the new mxc:// URI."""
    response = await server.rest.client.request(
        "POST",
        f"/_matrix/media/v3/upload?filename={name}",
        data=data,
        headers={**user.headers, "Content-Type": content_type},
    )
    body = await response.json()
    assert response.status == 200, body
    server_name, media_id = body["content_uri"].removeprefix("mxc://").split("/")
    assert server_name == server.server_name
    return str(media_id)


async def get(server: Homeserver, path: str, user: User | None = None) -> tuple[int, Any, bytes]:
    """status, headers, body of a GET on `server`."""
    async with server.rest.client.request(
        "GET", path, headers=user.headers if user else None
    ) as response:
        return response.status, response.headers, await response.read()


def download_path(origin: Homeserver, media_id: str) -> str:
    return f"{CLIENT_MEDIA}/download/{origin.server_name}/{media_id}"


def parse_multipart(content_type: str, body: bytes) -> list[EmailMessage]:
    """The parts of a multipart/mixed body, read by the standard library's MIME parser."""
    message = BytesParser(policy=policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert isinstance(message, EmailMessage)
    assert message.get_content_type() == "multipart/mixed"
    return [part for part in message.iter_parts() if isinstance(part, EmailMessage)]


def transport_of(server: Homeserver) -> FederationTransport:
    """A federation client signing as `server`, whose keys the other servers fetch from it."""
    keys = server.core.server.keys
    return FederationTransport(server.server_name, keys.signing_key, server.config.federation)


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
async def test_remote_media_is_fetched_once_then_served_from_the_copy(
    tmp_path: Path, engine: str
) -> None:
    async with homeservers(tmp_path, 2, engine) as (a, b):
        alice = await a.rest.register("alice")
        bob = await b.rest.register("bob")
        image = png(320, 240)
        binary = os.urandom(BINARY_SIZE)
        image_id = await upload(a, alice, image, "image/png", "cat.png")
        binary_id = await upload(a, alice, binary, "application/x-thing", "blob.bin")

        # Concurrent first requests: one fetch, every request served.
        answers = await asyncio.gather(
            *(get(b, download_path(a, binary_id), bob) for _ in range(3))
        )
        for status, headers, body in answers:
            assert status == 200
            assert headers["Content-Type"] == "application/x-thing"
            assert hashlib.sha256(body).digest() == hashlib.sha256(binary).digest()
            assert 'filename="blob.bin"' in headers["Content-Disposition"]
        status, headers, body = await get(b, download_path(a, image_id), bob)
        assert (status, headers["Content-Type"], body) == (200, "image/png", image)
        assert headers["Content-Disposition"] == 'inline; filename="cat.png"'

        # B keeps a copy under A's name, recorded as nobody's upload of its own.
        copy = await b.core.storage.media.get_media(a.server_name, binary_id)
        assert copy is not None
        assert (copy.user_id, copy.size) == (None, BINARY_SIZE)
        assert copy.sha256 == hashlib.sha256(binary).hexdigest()

        thumbnail_path = (
            f"{CLIENT_MEDIA}/thumbnail/{a.server_name}/{image_id}?width=32&height=32&method=crop"
        )
        status, headers, body = await get(b, thumbnail_path, bob)
        assert status == 200, body
        assert headers["Content-Type"] in ("image/png", "image/jpeg")
        assert Image.open(io.BytesIO(body)).size == (32, 32)

        missing = await get(b, download_path(a, "nothingHere"), bob)
        assert missing[0] == 404
        assert json.loads(missing[2])["errcode"] == "M_NOT_FOUND"
        unauthenticated = await get(b, download_path(a, image_id))
        assert unauthenticated[0] == 401

        # With A gone, B still serves what it fetched (from its copy: A is never asked)...
        await a.stop()
        for media_id, data in ((binary_id, binary), (image_id, image)):
            status, _, body = await get(b, download_path(a, media_id), bob)
            assert (status, body == data) == (200, True)
        status, _, body = await get(b, thumbnail_path, bob)
        assert status == 200
        assert Image.open(io.BytesIO(body)).size == (32, 32)
        # ...and media it never fetched cannot be had: 502.
        unreachable = await get(b, download_path(a, "neverFetched"), bob)
        assert unreachable[0] == 502
        assert json.loads(unreachable[2])["errcode"] == "M_UNKNOWN"


async def test_remote_media_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        binary_id = await upload(a, alice, os.urandom(200_000), "application/x-thing", "big")
        await b.stop()
        b.config.media = dataclasses.replace(b.config.media, max_upload_size=100_000)
        await b.start()
        bob = await b.rest.register("bob")

        status, _, body = await get(b, download_path(a, binary_id), bob)
        assert status == 502
        error = json.loads(body)
        assert error["errcode"] == "M_TOO_LARGE"
        assert_response_valid(
            "client-server/authed-content-repo.yaml",
            "/media/download/{serverName}/{mediaId}",
            "get",
            502,
            error,
        )
        assert await b.core.storage.media.get_media(a.server_name, binary_id) is None


async def test_federation_media_endpoints(tmp_path: Path) -> None:
    async with homeservers(tmp_path, 2) as (a, b):
        alice = await a.rest.register("alice")
        image = png(100, 80)
        image_id = await upload(a, alice, image, "image/png", "photo.png")
        download = f"{FEDERATION_MEDIA}/download/{image_id}"

        # Only servers may ask: an unsigned request is refused.
        status, _, body = await get(a, download)
        assert status == 401
        assert json.loads(body)["errcode"] == "M_UNAUTHORIZED"

        transport = transport_of(b)
        try:
            response = await transport.request_raw(a.server_name, "GET", download)
            assert response.status == 200
            metadata, content = parse_multipart(response.headers["Content-Type"], response.body)
            assert metadata.get_content_type() == "application/json"
            assert json.loads(metadata.get_payload(decode=True)) == {}
            assert content.get_content_type() == "image/png"
            assert content["Content-Disposition"] == 'inline; filename="photo.png"'
            assert content.get_payload(decode=True) == image

            response = await transport.request_raw(
                a.server_name,
                "GET",
                f"{FEDERATION_MEDIA}/thumbnail/{image_id}",
                {"width": "32", "height": "32", "method": "crop"},
            )
            assert response.status == 200
            parts = parse_multipart(response.headers["Content-Type"], response.body)
            assert [p.get_content_type() for p in parts][0] == "application/json"
            assert parts[1].get_content_type() in ("image/png", "image/jpeg")
            thumbnail = parts[1].get_payload(decode=True)
            assert isinstance(thumbnail, bytes)
            assert Image.open(io.BytesIO(thumbnail)).size == (32, 32)

            # Unknown and quarantined media are not found.
            assert await a.app[MEDIA].quarantine(a.server_name, image_id)
            for media_id in ("unknownMedia", image_id):
                path = f"{FEDERATION_MEDIA}/download/{media_id}"
                response = await transport.request_raw(a.server_name, "GET", path)
                assert response.status == 404
                assert json.loads(response.body)["errcode"] == "M_NOT_FOUND"
        finally:
            await transport.close()
