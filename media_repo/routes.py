"""The content repository's HTTP endpoints (C-S API "Content repository"): uploads under
/_matrix/media, authenticated downloads, thumbnails and config under /_matrix/client/v1/media,
and the deprecated unauthenticated /_matrix/media/v3 reads when the config allows them.

Bodies stream in from `request.content`, which the application's client_max_size does not
limit (only `request.read()` and `post()` do); the repository enforces media.max_upload_size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from client_api.http import ok, requester
from homeserver.errors import Codes, InvalidParam, MatrixError
from media_repo.filepaths import is_valid_upload_name
from media_repo.repository import (
    DEFAULT_OCTET_STREAM,
    DEFAULT_TIMEOUT_MS,
    MediaFile,
    MediaRepository,
    ThumbnailFile,
    media_type,
)

MEDIA: web.AppKey[MediaRepository] = web.AppKey("media", MediaRepository)

# Spec "Serving inline content": the types a browser only ever renders as what they claim to
# be. Anything else (text/html, image/svg+xml, application/javascript...) is an attachment.
INLINE_CONTENT_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

# Spec: the recommended Content-Security-Policy (plus media-src, so audio and video still play
# when opened directly), and Cross-Origin-Resource-Policy (v1.4). nosniff: browsers must not
# guess a type more dangerous than the one declared.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf;"
        " style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
    ),
    "Cross-Origin-Resource-Policy": "cross-origin",
    "X-Content-Type-Options": "nosniff",
}

_THUMBNAIL_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
# RFC 5987 attr-char beyond letters and digits (which quote() never escapes).
_ATTR_CHARS = "!#$&+-.^_`|~"
_UPLOAD_READ_ERRORS = (HttpProcessingError, ConnectionError)


def _media(request: web.Request) -> MediaRepository:
    return request.app[MEDIA]


# -- request parsing ---------------------------------------------------------------------------


def _upload_name(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not is_valid_upload_name(value):
        raise InvalidParam("Invalid file name")
    return value


def _int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise MatrixError(f"Missing parameter: {name}", Codes.MISSING_PARAM)
        return default
    try:
        return int(raw, 10)
    except ValueError:
        raise InvalidParam(f"{name} must be an integer") from None


def _bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise InvalidParam(f"{name} must be true or false")
    return raw == "true"


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.content.iter_any():
            yield chunk
    except _UPLOAD_READ_ERRORS:
        # The client went away mid-upload: nobody is left to read an answer, but this is no
        # server error either.
        raise MatrixError("The upload was interrupted", Codes.UNKNOWN, status=400) from None


def _content_type(request: web.Request) -> str:
    # Spec v1.12: optional, application/octet-stream when absent.
    return request.headers.get(hdrs.CONTENT_TYPE) or DEFAULT_OCTET_STREAM


# -- response headers --------------------------------------------------------------------------


def _filename_parameter(name: str) -> str:
    """RFC 6266 `filename`, as a quoted string when plain ASCII allows, else RFC 5987's
    `filename*` in UTF-8."""
    if all(" " <= c <= "~" and c not in '"\\' for c in name):
        return f'filename="{name}"'
    return "filename*=utf-8''" + quote(name, safe=_ATTR_CHARS)


def content_disposition(content_type: str, filename: str | None) -> str:
    disposition = "inline" if media_type(content_type) in INLINE_CONTENT_TYPES else "attachment"
    if filename:
        disposition += "; " + _filename_parameter(filename)
    return disposition


def _file_response(media: MediaFile, filename: str | None) -> web.FileResponse:
    # FileResponse streams the file (sendfile where it can) and answers Range requests; the
    # Content-Type given here stops it guessing one from the file name.
    return web.FileResponse(
        media.path,
        headers={
            hdrs.CONTENT_TYPE: media.content_type,
            hdrs.CONTENT_DISPOSITION: content_disposition(media.content_type, filename),
            **SECURITY_HEADERS,
        },
    )


def _thumbnail_response(thumbnail: ThumbnailFile) -> web.StreamResponse:
    extension = _THUMBNAIL_EXTENSIONS.get(thumbnail.content_type, "png")
    headers = {
        hdrs.CONTENT_TYPE: thumbnail.content_type,
        # Spec v1.12: a thumbnail is always inline.
        hdrs.CONTENT_DISPOSITION: f'inline; filename="thumbnail.{extension}"',
        **SECURITY_HEADERS,
    }
    if thumbnail.path is not None:
        return web.FileResponse(thumbnail.path, headers=headers)
    return web.Response(body=thumbnail.data, headers=headers)


# -- handlers ----------------------------------------------------------------------------------


async def upload(request: web.Request) -> web.Response:
    who = await requester(request)
    uri = await _media(request).upload(
        who.user_id,
        _content_type(request),
        _upload_name(request.query.get("filename")),
        _body(request),
        request.content_length,
    )
    return ok({"content_uri": uri})


async def create(request: web.Request) -> web.Response:
    who = await requester(request)
    uri, expires_at = await _media(request).create(who.user_id)
    return ok({"content_uri": uri, "unused_expires_at": expires_at})


async def upload_to(request: web.Request) -> web.Response:
    who = await requester(request)
    await _media(request).upload_to(
        who.user_id,
        request.match_info["serverName"],
        request.match_info["mediaId"],
        _content_type(request),
        _upload_name(request.query.get("filename")),
        _body(request),
        request.content_length,
    )
    return ok({})


async def config(request: web.Request) -> web.Response:
    await requester(request)
    return ok({"m.upload.size": _media(request).max_upload_size})


async def download(request: web.Request) -> web.FileResponse:
    override = request.match_info.get("fileName")
    filename = _upload_name(override) if override is not None else None
    media = await _media(request).download(
        request.match_info["serverName"],
        request.match_info["mediaId"],
        _int_param(request, "timeout_ms", DEFAULT_TIMEOUT_MS),
    )
    return _file_response(media, filename or media.upload_name)


@dataclass(frozen=True)
class ThumbnailRequest:
    """The query of a thumbnail request, client or federation (the same parameters)."""

    width: int
    height: int
    method: Literal["crop", "scale"]
    animated: bool
    timeout_ms: int


def thumbnail_request(request: web.Request) -> ThumbnailRequest:
    width = _int_param(request, "width")
    height = _int_param(request, "height")
    if width < 1 or height < 1:
        raise InvalidParam("width and height must be positive")
    method: Literal["crop", "scale"]
    match request.query.get("method", "scale"):
        case "crop":
            method = "crop"
        case "scale":
            method = "scale"
        case _:
            raise InvalidParam("method must be crop or scale")
    return ThumbnailRequest(
        width,
        height,
        method,
        _bool_param(request, "animated"),
        _int_param(request, "timeout_ms", DEFAULT_TIMEOUT_MS),
    )


async def thumbnail(request: web.Request) -> web.StreamResponse:
    asked = thumbnail_request(request)
    found = await _media(request).thumbnail(
        request.match_info["serverName"],
        request.match_info["mediaId"],
        asked.width,
        asked.height,
        asked.method,
        asked.animated,
        asked.timeout_ms,
    )
    return _thumbnail_response(found)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _authenticated(handler: Handler) -> Handler:
    async def authenticated(request: web.Request) -> web.StreamResponse:
        await requester(request)
        return await handler(request)

    return authenticated


def routes(legacy_unauthenticated: bool) -> list[web.RouteDef]:
    """Every media route; the deprecated unauthenticated reads only when asked for (otherwise
    they are unknown endpoints: 404 M_UNRECOGNIZED)."""
    client = "/_matrix/client/v1/media"
    media = "/_matrix/media"
    table = [
        web.post(f"{media}/v3/upload", upload),
        web.post(f"{media}/v1/create", create),
        web.put(f"{media}/v3/upload/{{serverName}}/{{mediaId}}", upload_to),
        web.get(f"{client}/config", config),
        web.get(f"{client}/download/{{serverName}}/{{mediaId}}", _authenticated(download)),
        web.get(
            f"{client}/download/{{serverName}}/{{mediaId}}/{{fileName}}", _authenticated(download)
        ),
        web.get(f"{client}/thumbnail/{{serverName}}/{{mediaId}}", _authenticated(thumbnail)),
    ]
    if legacy_unauthenticated:
        table += [
            web.get(f"{media}/v3/config", config),
            web.get(f"{media}/v3/download/{{serverName}}/{{mediaId}}", download),
            web.get(f"{media}/v3/download/{{serverName}}/{{mediaId}}/{{fileName}}", download),
            web.get(f"{media}/v3/thumbnail/{{serverName}}/{{mediaId}}", thumbnail),
        ]
    return table


def install_media_routes(router: web.UrlDispatcher, legacy_unauthenticated: bool) -> None:
    router.add_routes(routes(legacy_unauthenticated))
