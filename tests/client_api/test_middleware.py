"""The client error middleware on a real aiohttp server: MatrixError rendering, unknown routes,
wrong methods, unexpected exceptions (logged, not leaked) and CORS."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from client_api.middleware import CORS_HEADERS, install_client_middleware
from homeserver.errors import Codes, Forbidden, MatrixError

ClientFactory = Callable[[web.Application], Awaitable[TestClient[Any, Any]]]


async def forbidden(request: web.Request) -> web.Response:
    raise Forbidden("You are not invited to this room.")


async def limited(request: web.Request) -> web.Response:
    raise MatrixError("Too many requests", Codes.LIMIT_EXCEEDED, retry_after_ms=2000)


async def custom_status(request: web.Request) -> web.Response:
    raise MatrixError("No such thing", Codes.NOT_FOUND, status=410)


async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("secret internal detail /etc/passwd")


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"chunk")
    return response


async def too_big(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({})


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    app = web.Application(client_max_size=10)
    install_client_middleware(app)
    app.router.add_get("/forbidden", forbidden)
    app.router.add_get("/limited", limited)
    app.router.add_get("/custom", custom_status)
    app.router.add_get("/boom", boom)
    app.router.add_get("/ok", ok)
    app.router.add_get("/stream", stream)
    app.router.add_post("/upload", too_big)
    return await aiohttp_client(app)


def assert_cors(headers: Any) -> None:
    for name, value in CORS_HEADERS.items():
        assert headers[name] == value
    assert "Authorization" in headers["Access-Control-Allow-Headers"]


async def test_matrix_error_rendered_with_its_status(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/forbidden")
    assert resp.status == 403
    assert resp.content_type == "application/json"
    assert await resp.json() == {
        "errcode": "M_FORBIDDEN",
        "error": "You are not invited to this room.",
    }
    assert_cors(resp.headers)


async def test_matrix_error_extra_fields_and_explicit_status(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/limited")
    assert resp.status == 429
    assert await resp.json() == {
        "errcode": "M_LIMIT_EXCEEDED",
        "error": "Too many requests",
        "retry_after_ms": 2000,
    }
    resp = await client.get("/custom")
    assert resp.status == 410
    assert (await resp.json())["errcode"] == "M_NOT_FOUND"


async def test_unknown_route_is_404_unrecognized(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/_matrix/client/v3/nothing_here")
    assert resp.status == 404
    assert await resp.json() == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
    assert_cors(resp.headers)


async def test_wrong_method_is_405_unrecognized(client: TestClient[Any, Any]) -> None:
    resp = await client.put("/ok")
    assert resp.status == 405
    assert await resp.json() == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
    assert "GET" in resp.headers["Allow"]
    assert_cors(resp.headers)


async def test_unexpected_exception_is_500_without_details(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="client_api.middleware"):
        resp = await client.get("/boom?access_token=syt_secret_token")
    assert resp.status == 500
    body = await resp.text()
    assert "secret" not in body and "RuntimeError" not in body
    assert await resp.json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    assert_cors(resp.headers)
    # Logged with its traceback, but never with the query string (it may hold a token).
    [record] = [r for r in caplog.records if r.name == "client_api.middleware"]
    assert record.exc_info is not None and record.exc_info[0] is RuntimeError
    assert "path=/boom" in record.getMessage()
    assert "syt_secret_token" not in record.getMessage()


async def test_aiohttp_http_errors_keep_status_and_get_an_errcode(
    client: TestClient[Any, Any],
) -> None:
    resp = await client.post("/upload", data=b"x" * 100)
    assert resp.status == 413
    assert (await resp.json())["errcode"] == "M_TOO_LARGE"


async def test_cors_on_success_and_streamed_responses(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/ok")
    assert resp.status == 200
    assert await resp.json() == {"ok": True}
    assert_cors(resp.headers)
    resp = await client.get("/stream")
    assert await resp.read() == b"chunk"
    assert_cors(resp.headers)


@pytest.mark.parametrize("path", ["/ok", "/_matrix/client/v3/sync", "/forbidden"])
async def test_options_preflight(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.options(
        path,
        headers={
            "Origin": "https://app.element.io",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status in (200, 204)
    assert_cors(resp.headers)
    methods = resp.headers["Access-Control-Allow-Methods"]
    for method in ("GET", "POST", "PUT", "DELETE", "OPTIONS"):
        assert method in methods
