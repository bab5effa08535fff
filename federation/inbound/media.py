"""GET /_matrix/federation/v1/media/download and /media/thumbnail (S-S API "Content
Repository"): this server's own media for other servers, as multipart/mixed with an empty JSON
metadata part and then the content, streamed from its file."""

from __future__ import annotations

import asyncio
import json
from typing import BinaryIO, Literal

from aiohttp import MultipartWriter, hdrs

from media_repo.repository import MediaRepository
from media_repo.routes import content_disposition

THUMBNAIL_DISPOSITION = "inline"


class FederationMedia:
    """Media of this server only: another server never makes us fetch from a third."""

    def __init__(self, repository: MediaRepository) -> None:
        self.repository = repository

    async def download(self, media_id: str, timeout_ms: int) -> MultipartWriter:
        found = await self.repository.download(self.repository.server_name, media_id, timeout_ms)
        content = await asyncio.to_thread(found.path.open, "rb")
        return _multipart(
            content,
            found.content_type,
            content_disposition(found.content_type, found.upload_name),
        )

    async def thumbnail(
        self,
        media_id: str,
        width: int,
        height: int,
        method: Literal["crop", "scale"],
        animated: bool,
        timeout_ms: int,
    ) -> MultipartWriter:
        found = await self.repository.thumbnail(
            self.repository.server_name, media_id, width, height, method, animated, timeout_ms
        )
        content: BinaryIO | bytes
        if found.path is not None:
            content = await asyncio.to_thread(found.path.open, "rb")
        else:
            assert found.data is not None  # a thumbnail not kept comes with its bytes
            content = found.data
        return _multipart(content, found.content_type, THUMBNAIL_DISPOSITION)


def _multipart(content: BinaryIO | bytes, content_type: str, disposition: str) -> MultipartWriter:
    """The two parts the spec asks for; a file is read in chunks as the response is written,
    and closed by the response once sent."""
    writer = MultipartWriter("mixed")
    writer.append(json.dumps({}), {hdrs.CONTENT_TYPE: "application/json"})
    writer.append(content, {hdrs.CONTENT_TYPE: content_type, hdrs.CONTENT_DISPOSITION: disposition})
    return writer
