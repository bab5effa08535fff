"""Serving media safely: authentication, Content-Type and Content-Disposition, the security
headers, unknown and quarantined media, traversal attempts, and the legacy endpoints."""

from __future__ import annotations

from typing import Any

from yarl import URL

from homeserver.config import MediaConfig
from homeserver.core import Core
from tests.helpers.rest import User
from tests.helpers.spec_schemas import assert_response_valid
from tests.media_repo.conftest import (
    CLIENT_MEDIA,
    MEDIA_V3,
    HarnessFactory,
    MediaHarness,
    download_path,
    thumbnail_path,
)

CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf;"
    " style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)
HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def assert_security_headers(headers: Any) -> None:
    assert headers["Content-Security-Policy"] == CSP
    assert headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Access-Control-Allow-Origin"] == "*"  # CORS on streamed responses too


async def test_html_and_svg_are_attachments(harness: MediaHarness, alice: User) -> None:
    for data, content_type, name in (
        (HTML, "text/html", "page.html"),
        (SVG, "image/svg+xml", "image.svg"),
        (HTML, "application/xhtml+xml", "page.xhtml"),
        (b"alert(1)", "application/javascript", "x.js"),
        (HTML, "TEXT/HTML; charset=utf-8", "upper.html"),
    ):
        uri = await harness.upload(alice, data, content_type, filename=name)
        got = await harness.client.get(download_path(uri), headers=alice.headers)
        assert got.status == 200
        assert got.headers["Content-Type"] == content_type  # as uploaded
        assert got.headers["Content-Disposition"] == f'attachment; filename="{name}"'
        assert_security_headers(got.headers)
        assert await got.read() == data


async def test_safe_types_are_inline(harness: MediaHarness, alice: User) -> None:
    for content_type in ("image/png", "image/jpeg", "video/mp4", "audio/ogg", "text/plain"):
        uri = await harness.upload(alice, b"bytes", content_type)
        got = await harness.client.get(download_path(uri), headers=alice.headers)
        assert got.headers["Content-Disposition"] == "inline", content_type
        assert_security_headers(got.headers)


async def test_file_names_in_content_disposition(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, b"%PDF-1.4", "application/pdf", filename="Rapport été.pdf")
    got = await harness.client.get(download_path(uri), headers=alice.headers)
    # RFC 6266 / 5987: a non-ASCII name travels percent-encoded in UTF-8.
    assert got.headers["Content-Disposition"] == (
        "attachment; filename*=utf-8''Rapport%20%C3%A9t%C3%A9.pdf"
    )
    # A name with a quote cannot break out of the header's quoted string.
    uri = await harness.upload(alice, b"x", "text/plain", filename='a"; filename="evil.html')
    got = await harness.client.get(download_path(uri), headers=alice.headers)
    assert got.headers["Content-Disposition"] == (
        "inline; filename*=utf-8''a%22%3B%20filename%3D%22evil.html"
    )
    # The path's file name overrides the uploaded one.
    got = await harness.client.get(download_path(uri) + "/other.txt", headers=alice.headers)
    assert got.status == 200
    assert got.headers["Content-Disposition"] == 'inline; filename="other.txt"'
    assert await got.read() == b"x"
    # Control characters are refused, at upload and in the path.
    bad = await harness.upload(alice, b"x", filename="a\nb", expect=400)
    assert bad["errcode"] == "M_INVALID_PARAM"
    got = await harness.client.get(download_path(uri) + "/a%0Db", headers=alice.headers)
    assert got.status == 400
    assert (await got.json())["errcode"] == "M_INVALID_PARAM"


async def test_downloads_need_an_access_token(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, b"private", "image/png")
    for path in (
        download_path(uri),
        download_path(uri) + "/name.png",
        thumbnail_path(uri) + "?width=32&height=32",
    ):
        missing = await harness.client.get(path)
        assert missing.status == 401, path
        assert (await missing.json())["errcode"] == "M_MISSING_TOKEN"
        wrong = await harness.client.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        assert (await wrong.json())["errcode"] == "M_UNKNOWN_TOKEN"
    # Any user may download: knowing the mxc:// URI is enough (spec "Security considerations").
    bob = await harness.rest.register("bob")
    assert await harness.download(bob, uri) == b"private"
    # The deprecated query parameter still works (matrix-nio sends it).
    got = await harness.client.get(download_path(uri), params={"access_token": bob.access_token})
    assert got.status == 200


async def test_unknown_and_remote_media_are_not_found(harness: MediaHarness, alice: User) -> None:
    for path in (
        f"{CLIENT_MEDIA}/download/test.local/doesNotExist",
        f"{CLIENT_MEDIA}/download/test.local/doesNotExist/name.txt",
        f"{CLIENT_MEDIA}/thumbnail/test.local/doesNotExist?width=32&height=32",
        # Remote media needs federation (not yet): unknown here.
        f"{CLIENT_MEDIA}/download/elsewhere.org/abcdef",
        f"{CLIENT_MEDIA}/thumbnail/elsewhere.org/abcdef?width=32&height=32",
    ):
        got = await harness.client.get(path, headers=alice.headers)
        assert got.status == 404, path
        body = await got.json()
        assert body["errcode"] == "M_NOT_FOUND"
        assert "Content-Security-Policy" not in got.headers


async def test_traversal_attempts_get_matrix_errors(harness: MediaHarness, alice: User) -> None:
    await harness.upload(alice, b"content")
    long_id = "a" * 256
    for raw_path, statuses in (
        ("download/test.local/..%2F..%2F..%2Fetc%2Fpasswd", (404,)),
        ("download/test.local/..%2F..%2Fhomeserver.db/x", (404,)),
        ("download/..%2F..%2Fetc/passwd", (400,)),
        ("download/test.local/%2E%2E", (404,)),
        ("download/test.local/a.b", (404,)),
        ("download/test.local/%00", (404,)),
        ("download/test.local/%C0%AE%C0%AE", (404,)),
        (f"download/test.local/{long_id}", (404,)),
        ("download/bad_server!/abc", (400,)),
        ("thumbnail/test.local/..%2Ftmp?width=1&height=1", (404,)),
        ("download/test.local/../../../etc/passwd", (404,)),
        ("download/test.local/abc/..%2F..%2Fpasswd", (404,)),
    ):
        url = URL(f"{CLIENT_MEDIA}/{raw_path}", encoded=True)
        got = await harness.client.get(url, headers=alice.headers)
        body = await got.json()
        assert got.status in statuses, (raw_path, got.status, body)
        assert body["errcode"] in ("M_NOT_FOUND", "M_INVALID_PARAM", "M_UNRECOGNIZED"), raw_path


async def test_quarantined_media_is_served_to_nobody(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, b"bad content", "image/png")
    media_id = uri.rsplit("/", 1)[1]
    assert await harness.media.quarantine("test.local", media_id)
    for path in (download_path(uri), thumbnail_path(uri) + "?width=32&height=32"):
        got = await harness.client.get(path, headers=alice.headers)
        assert got.status == 404
        assert (await got.json())["errcode"] == "M_NOT_FOUND"
    assert len(harness.files()) == 1  # kept: quarantine can be lifted
    assert await harness.media.quarantine("test.local", media_id, quarantined=False)
    assert await harness.download(alice, uri) == b"bad content"
    assert not await harness.media.quarantine("test.local", "unknownMedia")


async def test_head_request(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, b"12345", "text/plain")
    got = await harness.client.head(download_path(uri), headers=alice.headers)
    assert got.status == 200
    assert got.headers["Content-Length"] == "5"
    assert await got.read() == b""


async def test_legacy_endpoints_are_off_by_default(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, b"legacy", "text/plain")
    for path in (
        download_path(uri, MEDIA_V3),
        download_path(uri, MEDIA_V3) + "/x.txt",
        thumbnail_path(uri, MEDIA_V3) + "?width=32&height=32",
        f"{MEDIA_V3}/config",
    ):
        got = await harness.client.get(path, headers=alice.headers)
        assert got.status == 404, path
        assert (await got.json())["errcode"] == "M_UNRECOGNIZED"


async def test_legacy_endpoints_when_allowed(
    make_harness: HarnessFactory, media_core: Core, media_config: MediaConfig
) -> None:
    config = MediaConfig(path=media_config.path, allow_legacy_unauthenticated=True)
    harness = await make_harness(media_core, config)
    alice = await harness.rest.register("alice")
    uri = await harness.upload(alice, HTML, "text/html", filename="page.html")
    got = await harness.client.get(download_path(uri, MEDIA_V3))  # no access token
    assert got.status == 200
    assert await got.read() == HTML
    assert got.headers["Content-Disposition"] == 'attachment; filename="page.html"'
    assert_security_headers(got.headers)
    named = await harness.client.get(download_path(uri, MEDIA_V3) + "/renamed.html")
    assert named.headers["Content-Disposition"] == 'attachment; filename="renamed.html"'
    missing = await harness.client.get(f"{MEDIA_V3}/download/test.local/nothingHere")
    assert missing.status == 404
    assert (await missing.json())["errcode"] == "M_NOT_FOUND"
    body = await harness.rest.request("GET", f"{MEDIA_V3}/config", alice)
    assert body == {"m.upload.size": config.max_upload_size}
    assert_response_valid("client-server/content-repo.yaml", "/media/v3/config", "get", 200, body)
    thumbnail = await harness.client.get(
        thumbnail_path(uri, MEDIA_V3), params={"width": "32", "height": "32"}
    )
    assert thumbnail.status == 400  # HTML cannot be thumbnailed
    error = await thumbnail.json()
    assert error["errcode"] == "M_UNKNOWN"
    assert_response_valid(
        "client-server/content-repo.yaml",
        "/media/v3/thumbnail/{serverName}/{mediaId}",
        "get",
        400,
        error,
    )
