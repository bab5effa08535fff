"""The content repository (C-S API "Content repository"): uploads hashed and written to disk as
they arrive, asynchronous uploads (POST /create, then PUT), downloads, thumbnails, and the
operator's quarantine and delete. No HTTP here: media_repo/routes.py is the transport.

Blocking work (file writes, hashing, Pillow) runs in threads, in batches large enough that the
hand-offs cost little next to the work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, cast

from homeserver.clock import Clock
from homeserver.config import MediaConfig
from homeserver.core import Core
from homeserver.errors import Codes, Forbidden, InvalidParam, MatrixError, NotFound, TooLarge
from homeserver.identifiers import is_valid_server_name
from homeserver.lru import LruCache
from homeserver.ratelimit import RateLimiter
from homeserver.storage.stores.media import MediaRecord, MediaStore, ThumbnailRecord
from media_repo.filepaths import is_valid_media_id, mxc_uri, new_media_id
from media_repo.storage_backend import LocalMediaStorage, MediaStorageProvider
from media_repo.thumbnailer import (
    PREGENERATED,
    THUMBNAILABLE_TYPES,
    ImageTooLargeError,
    Thumbnail,
    ThumbnailError,
    ThumbnailSpec,
    choose_spec,
    make_thumbnail,
)

logger = logging.getLogger(__name__)

CANNOT_OVERWRITE_MEDIA = "M_CANNOT_OVERWRITE_MEDIA"
NOT_YET_UPLOADED = "M_NOT_YET_UPLOADED"

DEFAULT_OCTET_STREAM = "application/octet-stream"
# Bytes handed to the writer thread at a time: one hand-off per MiB, not per network chunk.
WRITE_BATCH = 1024 * 1024
# timeout_ms: the spec's default, and the most a download waits for a pending upload.
DEFAULT_TIMEOUT_MS = 20_000
MAX_TIMEOUT_MS = 60_000
# last_access_ts is refreshed at most this often per media (a write per download otherwise).
TOUCH_INTERVAL_MS = 60 * 60 * 1000
# Sizes made on demand are cached up to this many per content; beyond, made and not kept, so
# clients asking for ever new sizes cannot fill the disk.
MAX_CACHED_THUMBNAILS = 32
# Temporary files older than this at start-up were left by a crash.
STALE_UPLOAD_S = 24 * 60 * 60
# Formats that may hold an animation (APNG is a PNG); other sources are asked for stills.
_ANIMATABLE_TYPES = frozenset({"image/gif", "image/webp", "image/png", "image/apng"})
_LOCK_STRIPES = 64


class RemoteMediaSource(Protocol):
    """Media of other servers. The federation issue implements it: fetch the media from its
    origin into the local store and record it under the origin's server name."""

    async def fetch_remote_media(self, server_name: str, media_id: str) -> MediaRecord | None:
        """The cached copy, fetching it first if needed; None if the origin has no such media."""
        ...


class NoRemoteMedia:
    """Until federation: remote media is unknown here."""

    async def fetch_remote_media(self, server_name: str, media_id: str) -> MediaRecord | None:
        return None


@dataclass(frozen=True)
class MediaFile:
    """Content to serve: a local file and how to describe it."""

    path: Path
    content_type: str
    upload_name: str | None
    size: int


@dataclass(frozen=True)
class ThumbnailFile:
    """A thumbnail to serve: a cached file (`path`) or, when not cached, its bytes."""

    content_type: str
    path: Path | None = None
    data: bytes | None = None


def media_type(content_type: str | None) -> str:
    """`type/subtype` of a Content-Type, lower-cased, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def _spec_of(thumbnail: ThumbnailRecord) -> ThumbnailSpec:
    method = cast(Literal["crop", "scale"], thumbnail.method)
    return ThumbnailSpec(thumbnail.width, thumbnail.height, method, thumbnail.animated)


def too_large(limit: int) -> MatrixError:
    return TooLarge(f"Cannot upload files larger than {limit} bytes")


class _Spool:
    """A new content being written to a temporary file and hashed. Blocking: each method runs
    in a thread, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sha256 = hashlib.sha256()
        self._file: BinaryIO | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed by finish() or discard()

    def write(self, data: bytes | bytearray) -> None:
        assert self._file is not None
        self._file.write(data)
        self.sha256.update(data)

    def finish(self) -> None:
        """Flush to disk: the content must survive a crash once its row is committed."""
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)


def _write_new_file(path: Path, data: bytes) -> str:
    """Blocking: write `data` to a new file; returns its SHA-256."""
    spool = _Spool(path)
    spool.open()
    try:
        spool.write(data)
        spool.finish()
    except BaseException:
        spool.discard()
        raise
    return spool.sha256.hexdigest()


class MediaRepository:
    def __init__(
        self,
        store: MediaStore,
        provider: MediaStorageProvider,
        server_name: str,
        config: MediaConfig,
        clock: Clock,
        upload_limiter: RateLimiter,
        remote: RemoteMediaSource | None = None,
    ) -> None:
        self.store = store
        self.provider = provider
        self.server_name = server_name
        self.config = config
        self.clock = clock
        self.upload_limiter = upload_limiter
        self.remote = remote or NoRemoteMedia()
        # A content's file is stored, released and deleted under its stripe's lock, so a
        # delete cannot remove a file that an upload of the same content is about to record.
        # (Within this process; the CLI's delete beside a running server is not covered.)
        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]
        # Downloads waiting for a pending upload, by (server_name, media_id).
        self._waiters: dict[tuple[str, str], set[asyncio.Future[None]]] = {}
        self._pregenerating: dict[str, asyncio.Task[None]] = {}
        self._generating: dict[tuple[str, ThumbnailSpec], asyncio.Task[ThumbnailFile]] = {}
        # Contents that could not be thumbnailed (corrupt, too many pixels), by SHA-256, so a
        # bad file is decoded once, not on every request. Never stale: a content never changes.
        # (too many pixels, reason)
        self._unthumbnailable: LruCache[str, tuple[bool, str]] = LruCache(10_000)

    @property
    def max_upload_size(self) -> int:
        return self.config.max_upload_size

    async def start(self) -> None:
        removed = await self.provider.remove_stale_temp_files(STALE_UPLOAD_S)
        if removed:
            logger.info("removed uploads left by a crash count=%d", removed)
        await self.store.delete_expired_pending(self.clock.time_ms())

    async def close(self) -> None:
        """Stop thumbnail work in progress (the uploads themselves are complete)."""
        tasks = [*self._pregenerating.values(), *self._generating.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- uploads -----------------------------------------------------------------------------

    async def upload(
        self,
        user_id: str,
        content_type: str,
        upload_name: str | None,
        body: AsyncIterable[bytes],
        content_length: int | None,
    ) -> str:
        """POST /upload: store the body as new media; returns its mxc:// URI."""
        self.upload_limiter.check(user_id)
        temp, sha256, size = await self._receive(body, content_length)
        media_id = new_media_id()
        now = self.clock.time_ms()

        async def record() -> bool:
            await self.store.add_media(
                self.server_name, media_id, user_id, content_type, upload_name, size, sha256, now
            )
            return True

        await self._keep(temp, sha256, record)
        self._pregenerate_thumbnails(sha256, content_type)
        return mxc_uri(self.server_name, media_id)

    async def store_remote(
        self,
        server_name: str,
        media_id: str,
        content_type: str,
        upload_name: str | None,
        body: AsyncIterable[bytes],
        content_length: int | None,
    ) -> MediaRecord:
        """Keep a copy of another server's media, fetched by the remote source, as an upload
        is kept (hashed, stored once per content, same size limit); returns its record."""
        temp, sha256, size = await self._receive(body, content_length)
        now = self.clock.time_ms()

        async def record() -> bool:
            await self.store.add_media(
                server_name, media_id, None, content_type, upload_name, size, sha256, now
            )
            return True

        await self._keep(temp, sha256, record)
        self._pregenerate_thumbnails(sha256, content_type)
        return MediaRecord(
            server_name=server_name,
            media_id=media_id,
            user_id=None,
            content_type=content_type,
            upload_name=upload_name,
            size=size,
            sha256=sha256,
            created_ts=now,
            last_access_ts=None,
            expires_ts=None,
            quarantined=False,
        )

    async def create(self, user_id: str) -> tuple[str, int]:
        """POST /create: a media ID for content to come; returns (mxc:// URI, expiry in ms)."""
        self.upload_limiter.check(user_id)
        now = self.clock.time_ms()
        await self.store.delete_expired_pending(now, user_id)
        if await self.store.count_pending(user_id, now) >= self.config.max_pending_uploads:
            # Spec: too many pending uploads is 429 M_LIMIT_EXCEEDED, like a rate limit.
            raise MatrixError("Too many pending uploads", Codes.LIMIT_EXCEEDED)
        media_id = new_media_id()
        expires_ts = now + self.config.pending_upload_lifetime_s * 1000
        await self.store.add_pending(self.server_name, media_id, user_id, now, expires_ts)
        return mxc_uri(self.server_name, media_id), expires_ts

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        content_type: str,
        upload_name: str | None,
        body: AsyncIterable[bytes],
        content_length: int | None,
    ) -> None:
        """PUT /upload/{serverName}/{mediaId}: the content of a media ID made by create()."""
        await self._check_can_fill(user_id, server_name, media_id)
        temp, sha256, size = await self._receive(body, content_length)
        now = self.clock.time_ms()

        async def record() -> bool:
            return await self.store.fill_pending(
                server_name, media_id, content_type, upload_name, size, sha256, now
            )

        if not await self._keep(temp, sha256, record):
            # Filled by a concurrent upload meanwhile (or purged): say which, as up front.
            await self._check_can_fill(user_id, server_name, media_id)
            raise MatrixError("Media already uploaded", CANNOT_OVERWRITE_MEDIA, status=409)
        self._wake_waiters((server_name, media_id))
        self._pregenerate_thumbnails(sha256, content_type)

    async def _check_can_fill(self, user_id: str, server_name: str, media_id: str) -> None:
        # Checked before the body is read, so a refused upload costs no disk.
        record = None
        if server_name == self.server_name and is_valid_media_id(media_id):
            record = await self.store.get_media(server_name, media_id)
        if record is None:
            raise NotFound("Unknown media ID")
        if record.user_id != user_id:
            raise Forbidden("This media ID was created by another user")
        if not record.pending:
            raise MatrixError("Media already uploaded", CANNOT_OVERWRITE_MEDIA, status=409)
        if record.expires_ts is not None and record.expires_ts <= self.clock.time_ms():
            raise NotFound("This media ID has expired")

    async def _receive(
        self, body: AsyncIterable[bytes], content_length: int | None
    ) -> tuple[Path, str, int]:
        """Write `body` to a temporary file while hashing it; returns (path, SHA-256, size).
        Over the size limit: 413 M_TOO_LARGE as soon as it is passed, nothing left on disk."""
        limit = self.config.max_upload_size
        if content_length is not None and content_length > limit:
            raise too_large(limit)
        spool = _Spool(self.provider.new_temp_path())
        await asyncio.to_thread(spool.open)
        # One batch is written while the next one arrives; at most two are held at once.
        writing: asyncio.Future[None] | None = None
        try:
            size = 0
            batch = bytearray()
            async for chunk in body:
                size += len(chunk)
                if size > limit:
                    raise too_large(limit)
                batch += chunk
                if len(batch) >= WRITE_BATCH:
                    if writing is not None:
                        await writing
                    writing = asyncio.ensure_future(asyncio.to_thread(spool.write, batch))
                    batch = bytearray()
            if writing is not None:
                await writing
                writing = None
            if batch:
                await asyncio.to_thread(spool.write, batch)
            await asyncio.to_thread(spool.finish)
        except BaseException:
            if writing is not None:
                # The file is removed only once the thread writing to it is done.
                await asyncio.gather(writing, return_exceptions=True)
            await asyncio.to_thread(spool.discard)
            raise
        return spool.path, spool.sha256.hexdigest(), size

    def _lock(self, sha256: str) -> asyncio.Lock:
        return self._locks[int(sha256[:8], 16) % _LOCK_STRIPES]

    async def _keep(self, temp: Path, sha256: str, record: Callable[[], Awaitable[bool]]) -> bool:
        """Move a finished temporary file into the store and record it; returns what `record`
        returned. A content nothing recorded is removed again."""
        async with self._lock(sha256):
            try:
                await self.provider.store(temp, sha256)
            except BaseException:
                await asyncio.to_thread(temp.unlink, missing_ok=True)
                raise
            try:
                recorded = await record()
            except BaseException:
                await self._remove_if_unused_locked(sha256)
                raise
            if not recorded:
                await self._remove_if_unused_locked(sha256)
            return recorded

    async def _remove_if_unused_locked(self, sha256: str) -> None:
        if not await self.store.file_in_use(sha256):
            await self.provider.delete(sha256)

    # -- downloads ---------------------------------------------------------------------------

    async def download(self, server_name: str, media_id: str, timeout_ms: int) -> MediaFile:
        record = await self._available(server_name, media_id, timeout_ms)
        assert record.sha256 is not None
        path = await self._content_file(record.sha256, f"mxc://{server_name}/{media_id}")
        now = self.clock.time_ms()
        if record.last_access_ts is None or now - record.last_access_ts > TOUCH_INTERVAL_MS:
            await self.store.touch(server_name, media_id, now)
        return MediaFile(
            path=path,
            content_type=record.content_type or DEFAULT_OCTET_STREAM,
            upload_name=record.upload_name,
            size=record.size or 0,
        )

    async def _content_file(self, sha256: str, what: str) -> Path:
        if not await self.provider.exists(sha256):
            logger.error("media file missing media=%s sha256=%s", what, sha256)
            raise NotFound("Media not found")
        return self.provider.local_path(sha256)

    async def _available(self, server_name: str, media_id: str, timeout_ms: int) -> MediaRecord:
        """The media to serve, waiting up to timeout_ms for a pending upload: 404 M_NOT_FOUND
        when there is none (or it is quarantined), 504 M_NOT_YET_UPLOADED after the wait."""
        if not is_valid_server_name(server_name):
            raise InvalidParam("Invalid server name")
        if not is_valid_media_id(media_id):
            raise NotFound("Media not found")
        key = (server_name, media_id)
        record = await self.store.get_media(server_name, media_id)
        if record is None and server_name != self.server_name:
            record = await self.remote.fetch_remote_media(server_name, media_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        while record is not None and record.pending:
            now = self.clock.time_ms()
            if record.expires_ts is not None and record.expires_ts <= now:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise MatrixError(
                    "Content has not yet been uploaded", NOT_YET_UPLOADED, status=504
                )
            await self._wait_for_upload(key, remaining)
            # Read again even after a timeout: another process may have taken the upload.
            record = await self.store.get_media(server_name, media_id)
        if record is None or record.pending or record.quarantined:
            raise NotFound("Media not found")
        return record

    async def _wait_for_upload(self, key: tuple[str, str], timeout_s: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(key, set())
        waiters.add(waiter)
        try:
            await asyncio.wait([waiter], timeout=timeout_s)
        finally:
            waiters.discard(waiter)
            if not waiters and self._waiters.get(key) is waiters:
                del self._waiters[key]

    def _wake_waiters(self, key: tuple[str, str]) -> None:
        for waiter in self._waiters.pop(key, ()):
            if not waiter.done():
                waiter.set_result(None)

    # -- thumbnails --------------------------------------------------------------------------

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        width: int,
        height: int,
        method: Literal["crop", "scale"],
        animated: bool,
        timeout_ms: int,
    ) -> ThumbnailFile:
        """The best stored thumbnail for the request (C-S API "Thumbnails"), else one made now."""
        record = await self._available(server_name, media_id, timeout_ms)
        assert record.sha256 is not None
        sha256 = record.sha256
        source_type = media_type(record.content_type)
        if source_type not in THUMBNAILABLE_TYPES:
            raise MatrixError(
                "Cannot generate thumbnails for the requested content", Codes.UNKNOWN, status=400
            )
        # Spec: animated=true for media that cannot animate behaves as false.
        animated = animated and source_type in _ANIMATABLE_TYPES
        pregenerating = self._pregenerating.get(sha256)
        if pregenerating is not None:
            await asyncio.wait([pregenerating])
        stored = {_spec_of(t): t for t in await self.store.get_thumbnails(sha256)}
        chosen = choose_spec(list(stored), width, height, method, animated)
        if chosen is not None:
            found = stored[chosen]
            if await self.provider.exists(found.sha256):
                path = self.provider.local_path(found.sha256)
                return ThumbnailFile(found.content_type, path=path)
            logger.error("thumbnail file missing sha256=%s", found.sha256)
        spec = chosen or ThumbnailSpec(width, height, method, animated)
        keep = chosen is not None or len(stored) < MAX_CACHED_THUMBNAILS
        return await self._generate_once(sha256, source_type, spec, keep)

    async def _generate_once(
        self, sha256: str, source_type: str, spec: ThumbnailSpec, keep: bool
    ) -> ThumbnailFile:
        # Concurrent requests for the same new size share one generation, which a client
        # hanging up does not cancel for the others.
        key = (sha256, spec)
        task = self._generating.get(key)
        if task is None:
            task = asyncio.create_task(self._generate(sha256, source_type, spec, keep))
            self._generating[key] = task
            task.add_done_callback(lambda _: self._generating.pop(key, None))
        return await asyncio.shield(task)

    async def _generate(
        self, sha256: str, source_type: str, spec: ThumbnailSpec, keep: bool
    ) -> ThumbnailFile:
        thumbnail = await self._make(sha256, source_type, spec)
        if not keep:
            return ThumbnailFile(thumbnail.content_type, data=thumbnail.data)
        stored = await self._save_thumbnail(sha256, spec, thumbnail)
        return ThumbnailFile(stored.content_type, path=self.provider.local_path(stored.sha256))

    async def _make(self, sha256: str, source_type: str, spec: ThumbnailSpec) -> Thumbnail:
        refusal = self._unthumbnailable.get_hit(sha256)
        if refusal is None:
            source = await self._content_file(sha256, f"content {sha256}")
            try:
                return await asyncio.to_thread(
                    make_thumbnail, source, source_type, spec, self.config.max_image_pixels
                )
            except ThumbnailError as e:
                refusal = (isinstance(e, ImageTooLargeError), str(e))
                self._unthumbnailable.put(sha256, refusal)
        too_many_pixels, reason = refusal
        if too_many_pixels:
            # Spec "Security considerations": 413 M_TOO_LARGE for images too large to thumbnail.
            raise TooLarge(f"Content is too large to thumbnail: {reason}")
        raise MatrixError(f"Cannot generate a thumbnail: {reason}", Codes.UNKNOWN, status=400)

    async def _save_thumbnail(
        self, source_sha256: str, spec: ThumbnailSpec, thumbnail: Thumbnail
    ) -> ThumbnailRecord:
        temp = self.provider.new_temp_path()
        sha256 = await asyncio.to_thread(_write_new_file, temp, thumbnail.data)
        stored = ThumbnailRecord(
            source_sha256=source_sha256,
            width=spec.width,
            height=spec.height,
            method=spec.method,
            animated=spec.animated,
            content_type=thumbnail.content_type,
            sha256=sha256,
            size=len(thumbnail.data),
        )

        async def record() -> bool:
            await self.store.add_thumbnail(stored, self.clock.time_ms())
            return True

        await self._keep(temp, sha256, record)
        return stored

    def _pregenerate_thumbnails(self, sha256: str, content_type: str) -> None:
        """Make the spec's recommended sizes in the background; the upload is already stored."""
        source_type = media_type(content_type)
        if source_type not in THUMBNAILABLE_TYPES or sha256 in self._pregenerating:
            return
        task = asyncio.create_task(self._pregenerate(sha256, source_type))
        self._pregenerating[sha256] = task
        task.add_done_callback(lambda _: self._pregenerating.pop(sha256, None))

    async def _pregenerate(self, sha256: str, source_type: str) -> None:
        try:
            done = {_spec_of(t) for t in await self.store.get_thumbnails(sha256)}
            for spec in PREGENERATED:
                if spec not in done:
                    thumbnail = await self._make(sha256, source_type, spec)
                    await self._save_thumbnail(sha256, spec, thumbnail)
        except MatrixError as e:
            logger.info("no thumbnails for an upload sha256=%s reason=%s", sha256, e.message)
        except Exception:
            # The upload succeeded; its thumbnails can still be made on demand.
            logger.exception("thumbnail pre-generation failed sha256=%s", sha256)

    # -- operators ---------------------------------------------------------------------------

    async def quarantine(self, server_name: str, media_id: str, quarantined: bool = True) -> bool:
        """Hide (or show again) a media from every download; False if there is no such media.
        The file stays: quarantine is reversible."""
        return await self.store.set_quarantined(server_name, media_id, quarantined)

    async def delete(self, server_name: str, media_id: str) -> bool:
        """Delete a media; its file and thumbnails go too once no other media has the same
        content. False if there is no such media."""
        record = await self.store.delete_media(server_name, media_id)
        if record is None:
            return False
        if record.sha256 is not None:
            await self._release_content(record.sha256)
        return True

    async def _release_content(self, sha256: str) -> None:
        async with self._lock(sha256):
            if await self.store.media_uses(sha256):
                return
            pregenerating = self._pregenerating.get(sha256)
            if pregenerating is not None:
                pregenerating.cancel()
                await asyncio.gather(pregenerating, return_exceptions=True)
            thumbnails = await self.store.delete_thumbnails(sha256)
            await self._remove_if_unused_locked(sha256)
        for thumbnail_sha256 in thumbnails:
            async with self._lock(thumbnail_sha256):
                await self._remove_if_unused_locked(thumbnail_sha256)


def build_media_repository(core: Core, config: MediaConfig) -> MediaRepository:
    """The repository over `core`'s storage, clock and upload rate limit, with files on the
    local disk under config.path."""
    return MediaRepository(
        core.storage.media,
        LocalMediaStorage(config.path),
        core.server.server_name,
        config,
        core.clock,
        core.rate_limits.media_uploads,
    )
