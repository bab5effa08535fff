"""The one place client-facing errors are rendered (spec: client-server-api "Standard error
response", "Web Browser Clients" for CORS).

Handlers raise `MatrixError`; this turns it, unknown routes, wrong methods and unexpected
exceptions into `{"errcode", "error"}` JSON, and puts CORS headers on every response.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from homeserver.errors import Codes, MatrixError

logger = logging.getLogger(__name__)

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization, Date",
}

# aiohttp raises these itself (body too large, malformed request...); keep their status and
# give them the nearest errcode.
_ERRCODE_FOR_HTTP_STATUS = {
    401: Codes.UNAUTHORIZED,
    403: Codes.FORBIDDEN,
    413: Codes.TOO_LARGE,
    429: Codes.LIMIT_EXCEEDED,
}


def error_response(status: int, errcode: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message, **extra}, status=status)


def _render_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status == 404:
        # Spec: an unknown endpoint is 404 M_UNRECOGNIZED. Handlers that mean "no such thing"
        # raise NotFound (M_NOT_FOUND) instead of aiohttp's HTTPNotFound.
        return error_response(404, Codes.UNRECOGNIZED, "Unrecognized request")
    if exc.status == 405:
        # Spec: a known endpoint with an unsupported method is 405 M_UNRECOGNIZED.
        response = error_response(405, Codes.UNRECOGNIZED, "Unrecognized request")
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    errcode = _ERRCODE_FOR_HTTP_STATUS.get(exc.status, Codes.UNKNOWN)
    # exc.reason is the status phrase ("Bad Request"), never internal detail.
    return error_response(exc.status, errcode, exc.reason)


@web.middleware
async def client_error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS":
        # CORS preflight: answered for every path, before routing, without authentication.
        return web.Response(status=204)
    try:
        return await handler(request)
    except MatrixError as exc:
        return web.json_response(exc.to_json(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects and the like are not errors
        return _render_http_exception(exc)
    except Exception:
        # Only method and path: the query string may carry an access token.
        logger.exception("unhandled error method=%s path=%s", request.method, request.path)
        return error_response(500, Codes.UNKNOWN, "Internal server error")


async def _add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare also reaches streamed responses (media downloads), whose headers a
    # middleware can no longer change once the handler has started writing the body.
    response.headers.update(CORS_HEADERS)


def install_client_middleware(app: web.Application) -> None:
    """Render errors and add CORS headers for every route of `app`."""
    app.middlewares.append(client_error_middleware)
    app.on_response_prepare.append(_add_cors_headers)
