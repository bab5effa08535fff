"""matrix-nio's AsyncClient uploading and downloading through the whole server: plain and
encrypted attachments, and thumbnails, as a real client does them."""

from __future__ import annotations

import io
import os
from typing import Any

from nio import (
    AsyncClient,
    DownloadError,
    MemoryDownloadResponse,
    RegisterResponse,
    ResizingMethod,
    ThumbnailResponse,
    UploadResponse,
)
from nio.crypto.attachments import decrypt_attachment
from PIL import Image


async def registered(server_url: str, name: str) -> AsyncClient:
    client = AsyncClient(server_url, name)
    response = await client.register(name, "correct horse")
    assert isinstance(response, RegisterResponse), response
    return client


async def upload(client: AsyncClient, data: bytes, **kwargs: Any) -> tuple[str, Any]:
    response, keys = await client.upload(io.BytesIO(data), filesize=len(data), **kwargs)
    assert isinstance(response, UploadResponse), response
    return response.content_uri, keys


async def test_upload_and_download_round_trip(server_url: str) -> None:
    alice = await registered(server_url, "alice")
    bob = await registered(server_url, "bob")
    try:
        data = os.urandom(3 * 1024 * 1024 + 7)
        uri, _ = await upload(alice, data, content_type="application/pdf", filename="doc.pdf")
        assert uri.startswith("mxc://e2e.test/")
        for client in (alice, bob):
            got = await client.download(uri)
            assert isinstance(got, MemoryDownloadResponse), got
            assert got.body == data
            assert got.content_type == "application/pdf"
            assert got.filename == "doc.pdf"
        renamed = await bob.download(uri, filename="renamed.pdf")
        assert isinstance(renamed, MemoryDownloadResponse) and renamed.filename == "renamed.pdf"
        missing = await bob.download("mxc://e2e.test/noSuchMedia")
        assert isinstance(missing, DownloadError) and missing.status_code == "M_NOT_FOUND"
    finally:
        await alice.close()
        await bob.close()


async def test_encrypted_attachment_round_trip(server_url: str) -> None:
    alice = await registered(server_url, "alice")
    try:
        secret = b"attachment only the room can read" * 1000
        uri, keys = await upload(alice, secret, content_type="image/jpeg", encrypt=True)
        got = await alice.download(uri)
        assert isinstance(got, MemoryDownloadResponse), got
        assert got.body != secret
        plain = decrypt_attachment(got.body, keys["key"]["k"], keys["hashes"]["sha256"], keys["iv"])
        assert plain == secret
    finally:
        await alice.close()


async def test_thumbnail(server_url: str) -> None:
    alice = await registered(server_url, "alice")
    try:
        buffer = io.BytesIO()
        Image.new("RGB", (640, 480), (10, 120, 200)).save(buffer, format="PNG")
        uri, _ = await upload(alice, buffer.getvalue(), content_type="image/png")
        server_name, media_id = uri.removeprefix("mxc://").split("/")
        thumb = await alice.thumbnail(server_name, media_id, 96, 96, ResizingMethod.crop)
        assert isinstance(thumb, ThumbnailResponse), thumb
        assert thumb.content_type == "image/png"
        assert Image.open(io.BytesIO(thumb.body)).size == (96, 96)
    finally:
        await alice.close()
