"""RemoteMedia: other servers' media (S-S API "Content Repository"). The first request for
mxc://{server}/{id} fetches it from that server (GET /_matrix/federation/v1/media/download,
multipart/mixed, or the deprecated /_matrix/media/v3/download when the server does not know the
new endpoint) and keeps it in the local store as an upload is kept; later downloads and
thumbnails are served from that copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from email.message import Message
from urllib.parse import quote, urljoin, urlsplit

from federation.discovery import FederationError, HttpResponse, Target, Unreachable
from federation.transport import FederationTransport, ResponseTooLarge
from homeserver.errors import Codes, MatrixError
from homeserver.storage.stores.media import MediaRecord
from media_repo.filepaths import is_valid_upload_name
from media_repo.repository import DEFAULT_OCTET_STREAM, WRITE_BATCH, MediaRepository

logger = logging.getLogger(__name__)

DOWNLOAD = "/_matrix/federation/v1/media/download"
LEGACY_DOWNLOAD = "/_matrix/media/v3/download"
# Room for the multipart framing and the metadata part around content of the largest size.
MULTIPART_OVERHEAD = 64 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class _Content:
    content_type: str
    upload_name: str | None
    data: memoryview


class RemoteMedia:
    """The RemoteMediaSource of a server that federates."""

    def __init__(self, repository: MediaRepository, transport: FederationTransport) -> None:
        self.repository = repository
        self.transport = transport
        self._fetching: dict[tuple[str, str], asyncio.Task[MediaRecord | None]] = {}

    async def fetch_remote_media(self, server_name: str, media_id: str) -> MediaRecord | None:
        # Concurrent first requests share one fetch, which a client hanging up does not
        # cancel for the others.
        key = (server_name, media_id)
        task = self._fetching.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(server_name, media_id))
            self._fetching[key] = task
            task.add_done_callback(lambda _: self._fetching.pop(key, None))
        return await asyncio.shield(task)

    async def _fetch(self, server_name: str, media_id: str) -> MediaRecord | None:
        # A fetch that finished just before this one began has recorded the media already.
        stored = await self.repository.store.get_media(server_name, media_id)
        if stored is not None:
            return stored
        limit = self.repository.max_upload_size
        try:
            content = await self._download(server_name, media_id, limit)
        except ResponseTooLarge as e:
            raise _too_large() from e
        except FederationError as e:
            logger.info("remote media unreachable server=%s reason=%s", server_name, e)
            raise MatrixError(
                f"{server_name} could not be reached", Codes.UNKNOWN, status=502
            ) from e
        if content is None:
            return None
        if len(content.data) > limit:
            raise _too_large()
        return await self.repository.store_remote(
            server_name,
            media_id,
            content.content_type,
            content.upload_name,
            _chunks(content.data),
            len(content.data),
        )

    async def _download(self, server_name: str, media_id: str, limit: int) -> _Content | None:
        """The content, or None when the server has no such media."""
        response = await self.transport.request_raw(
            server_name,
            "GET",
            f"{DOWNLOAD}/{media_id}",
            max_bytes=limit + MULTIPART_OVERHEAD,
        )
        if response.status == 404 and _errcode(response) == Codes.UNRECOGNIZED:
            # Spec: a server without the v1.11 endpoints is asked through the deprecated one,
            # with allow_remote=false so it does not go on to a third server.
            response = await self.transport.request_raw(
                server_name,
                "GET",
                f"{LEGACY_DOWNLOAD}/{quote(server_name, safe='')}/{media_id}",
                {"allow_remote": "false"},
                signed=False,
                max_bytes=limit,
            )
            return _single_content(server_name, response)
        if response.status == 404:
            return None
        _check_ok(server_name, response)
        content_type = _header(response.headers, "Content-Type") or ""
        boundary = _boundary(content_type)
        if boundary is None:
            raise _bad_answer(server_name, f"not multipart/mixed but {content_type!r}")
        parts = _parse_multipart(response.body, boundary.encode())
        if parts is None or len(parts) < 2:
            raise _bad_answer(server_name, "not a two-part multipart body")
        headers, data = parts[1]
        location = headers.get("location")
        if location is not None:
            return await self._follow(server_name, location, limit)
        return _content(headers, data)

    async def _follow(self, server_name: str, location: str, limit: int) -> _Content | None:
        """The content at the URL the origin named instead of sending it, following redirects;
        the address policy applies as to every outbound request."""
        url = location
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._get(url, limit)
            redirect = _header(response.headers, "Location")
            if response.status in _REDIRECTS and redirect:
                url = urljoin(url, redirect)
                continue
            if response.status == 404:
                return None
            return _single_content(server_name, response)
        raise _bad_answer(server_name, f"more than {MAX_REDIRECTS} redirects")

    async def _get(self, url: str, limit: int) -> HttpResponse:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise Unreachable(f"Not an https URL: {url}")
        try:
            port = parts.port or 443
        except ValueError:
            raise Unreachable(f"Invalid port in {url}") from None
        host_header = parts.netloc.rpartition("@")[2]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                parts.hostname, port, type=socket.SOCK_STREAM
            )
        except OSError as e:
            raise Unreachable(f"No address found for {parts.hostname}: {e}") from e
        addresses = dict.fromkeys(str(info[4][0]) for info in infos)
        targets = [Target(a, port, parts.hostname, host_header) for a in addresses]
        request_target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return await self.transport.https.fetch(targets, "GET", request_target, {}, None, limit)


async def _chunks(data: memoryview) -> AsyncIterator[bytes]:
    for start in range(0, len(data), WRITE_BATCH):
        yield bytes(data[start : start + WRITE_BATCH])


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), None)


def _errcode(response: HttpResponse) -> str | None:
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    errcode = body.get("errcode") if isinstance(body, dict) else None
    return errcode if isinstance(errcode, str) else None


def _too_large() -> MatrixError:
    # Spec (C-S download): 502 M_TOO_LARGE when the content is too large to serve.
    return MatrixError("The remote content is too large", Codes.TOO_LARGE, status=502)


def _bad_answer(server_name: str, reason: str) -> MatrixError:
    logger.info("unusable remote media answer server=%s reason=%s", server_name, reason)
    return MatrixError(f"{server_name} sent an unusable answer", Codes.UNKNOWN, status=502)


def _check_ok(server_name: str, response: HttpResponse) -> None:
    if not 200 <= response.status < 300:
        logger.info(
            "remote media refused server=%s status=%d errcode=%s",
            server_name,
            response.status,
            _errcode(response),
        )
        raise MatrixError(f"{server_name} answered {response.status}", Codes.UNKNOWN, status=502)


def _single_content(server_name: str, response: HttpResponse) -> _Content | None:
    """A plain (not multipart) answer whose body is the content."""
    if response.status == 404:
        return None
    _check_ok(server_name, response)
    return _content(response.headers, memoryview(response.body))


def _content(headers: Mapping[str, str], data: memoryview) -> _Content:
    content_type = _header(headers, "Content-Type") or DEFAULT_OCTET_STREAM
    disposition = _header(headers, "Content-Disposition")
    upload_name = None
    if disposition is not None:
        parsed = Message()
        parsed["Content-Disposition"] = disposition
        filename = parsed.get_filename()
        if filename is not None and is_valid_upload_name(filename):
            upload_name = filename
    return _Content(content_type, upload_name, data)


def _boundary(content_type: str) -> str | None:
    parsed = Message()
    parsed["Content-Type"] = content_type
    if parsed.get_content_type() != "multipart/mixed":
        return None
    return parsed.get_boundary()


def _parse_multipart(raw: bytes, boundary: bytes) -> list[tuple[dict[str, str], memoryview]] | None:
    """The parts of a multipart body (RFC 2046 5.1.1): each part's headers, lower-cased
    names, and its content, a view into `raw`; None if the body is not well formed."""
    body = memoryview(raw)
    delimiter = b"\r\n--" + boundary
    # The first delimiter may open the body, without the CRLF before it.
    start = -2 if raw.startswith(delimiter[2:]) else raw.find(delimiter)
    if start == -1:
        return None
    position = start + len(delimiter)
    parts: list[tuple[dict[str, str], memoryview]] = []
    while not raw.startswith(b"--", position):  # the close delimiter ends the parts
        line_end = raw.find(b"\r\n", position)  # past transport padding
        end = raw.find(delimiter, line_end)
        if line_end == -1 or end == -1:
            return None
        head_end = raw.find(b"\r\n\r\n", line_end, end + 2)
        if head_end == -1:
            return None
        headers: dict[str, str] = {}
        for line in raw[line_end + 2 : head_end].decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, body[head_end + 4 : end]))
        position = end + len(delimiter)
    return parts
