"""Uploads and downloads through real sockets: byte-identical round trips from empty to over
50 MB, Range requests, the size limit while streaming, content-addressed storage, asynchronous
uploads, the config endpoint and the per-user upload rate limit."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from homeserver.config import LimitsConfig, MediaConfig, RateLimit, RegistrationConfig
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.storage import Storage
from tests.client_api.conftest import UNLIMITED
from tests.helpers.rest import User
from tests.helpers.spec_schemas import assert_response_valid
from tests.media_repo.conftest import (
    CLIENT_MEDIA,
    MEDIA_V3,
    HarnessFactory,
    MediaHarness,
    download_path,
    stream,
    stream_sha256,
)

CONTENT_REPO = "client-server/content-repo.yaml"
AUTHED_REPO = "client-server/authed-content-repo.yaml"
MIB = 1024 * 1024


async def test_small_round_trips_are_byte_identical(harness: MediaHarness, alice: User) -> None:
    five_mb = bytes(range(256)) * (5 * MIB // 256) + b"tail"
    for data in (b"", b"\x00", b"x", five_mb):
        response = await harness.client.post(
            f"{MEDIA_V3}/upload",
            data=data,
            headers={**alice.headers, "Content-Type": "application/x-test"},
        )
        body = await response.json()
        assert response.status == 200, body
        assert_response_valid(CONTENT_REPO, "/media/v3/upload", "post", 200, body)
        uri = body["content_uri"]
        assert uri.startswith("mxc://test.local/")
        got = await harness.client.get(download_path(uri), headers=alice.headers)
        assert got.status == 200
        assert got.headers["Content-Type"] == "application/x-test"
        assert got.headers["Content-Length"] == str(len(data))
        assert await got.read() == data


async def test_a_file_over_50_mb_streams_both_ways(harness: MediaHarness, alice: User) -> None:
    size = 50 * MIB + 12_345
    response = await harness.client.post(
        f"{MEDIA_V3}/upload",
        data=stream(size),  # chunked: the server cannot know the size up front
        headers={**alice.headers, "Content-Type": "video/mp4"},
        params={"filename": "big.mp4"},
    )
    body = await response.json()
    assert response.status == 200, body
    got = await harness.client.get(download_path(body["content_uri"]), headers=alice.headers)
    assert got.status == 200
    assert int(got.headers["Content-Length"]) == size
    digest = hashlib.sha256()
    received = 0
    async for chunk in got.content.iter_chunked(MIB):
        digest.update(chunk)
        received += len(chunk)
    assert received == size
    assert digest.hexdigest() == stream_sha256(size)
    # Stored under its SHA-256: the file on disk is the content itself.
    assert [p.name for p in harness.files()] == [stream_sha256(size)]


async def test_range_requests(harness: MediaHarness, alice: User) -> None:
    data = bytes(range(256)) * 40
    uri = await harness.upload(alice, data)
    path = download_path(uri)
    for header, status, expected in (
        ("bytes=0-9", 206, data[:10]),
        ("bytes=100-", 206, data[100:]),
        ("bytes=-16", 206, data[-16:]),
        ("bytes=5000-5099", 206, data[5000:5100]),
    ):
        got = await harness.client.get(path, headers={**alice.headers, "Range": header})
        assert got.status == status, header
        assert await got.read() == expected, header
    got = await harness.client.get(path, headers={**alice.headers, "Range": "bytes=0-9"})
    assert got.headers["Content-Range"] == f"bytes 0-9/{len(data)}"
    assert got.headers["Accept-Ranges"] == "bytes"
    unsatisfiable = await harness.client.get(
        path, headers={**alice.headers, "Range": f"bytes={len(data)}-"}
    )
    assert unsatisfiable.status == 416


async def test_upload_metadata_content_type_and_filename(
    harness: MediaHarness, alice: User
) -> None:
    uri = await harness.upload(alice, b"hello", "text/plain", filename="greeting.txt")
    got = await harness.client.get(download_path(uri), headers=alice.headers)
    assert got.headers["Content-Type"] == "text/plain"
    assert got.headers["Content-Disposition"] == 'inline; filename="greeting.txt"'
    # No Content-Type header: application/octet-stream (spec v1.12).
    response = await harness.client.post(
        f"{MEDIA_V3}/upload", data=b"\x01\x02", headers={**alice.headers, "Content-Type": ""}
    )
    bare = (await response.json())["content_uri"]
    got = await harness.client.get(download_path(bare), headers=alice.headers)
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["Content-Disposition"] == "attachment"
    record = await harness.media.store.get_media("test.local", uri.rsplit("/", 1)[1])
    assert record is not None
    assert (record.user_id, record.size, record.upload_name) == (alice.user_id, 5, "greeting.txt")
    assert record.sha256 == hashlib.sha256(b"hello").hexdigest()
    assert record.last_access_ts is not None  # the download touched it


async def test_oversize_upload_is_refused_and_leaves_nothing(
    make_harness: HarnessFactory, media_core: Core, media_config: Any
) -> None:
    config = MediaConfig(path=media_config.path, max_upload_size=MIB)
    harness = await make_harness(media_core, config)
    alice = await harness.rest.register("alice")
    # Declared too large: refused before a byte is read.
    body = await harness.upload(alice, b"x" * (MIB + 1), expect=413)
    assert body["errcode"] == "M_TOO_LARGE"
    assert_response_valid(CONTENT_REPO, "/media/v3/upload", "post", 413, body)
    # Chunked, so only the stream tells: refused once the limit is passed.
    response = await harness.client.post(
        f"{MEDIA_V3}/upload", data=stream(3 * MIB, chunk=64 * 1024), headers=alice.headers
    )
    assert response.status == 413
    assert (await response.json())["errcode"] == "M_TOO_LARGE"
    assert harness.files() == []  # no content, no partial temporary file
    # Exactly at the limit is fine.
    uri = await harness.upload(alice, b"y" * MIB)
    assert await harness.download(alice, uri) == b"y" * MIB
    config_body = await harness.rest.request("GET", f"{CLIENT_MEDIA}/config", alice)
    assert config_body == {"m.upload.size": MIB}
    assert_response_valid(AUTHED_REPO, "/media/config", "get", 200, config_body)


async def test_identical_uploads_are_stored_once(harness: MediaHarness, alice: User) -> None:
    bob = await harness.rest.register("bob")
    first = await harness.upload(alice, b"same bytes", "text/plain", filename="a.txt")
    second = await harness.upload(bob, b"same bytes", "application/octet-stream")
    assert first != second
    assert len(harness.files()) == 1
    assert harness.files()[0].name == hashlib.sha256(b"same bytes").hexdigest()
    # Each media keeps its own metadata.
    a = await harness.client.get(download_path(first), headers=alice.headers)
    b = await harness.client.get(download_path(second), headers=alice.headers)
    assert a.headers["Content-Type"] == "text/plain"
    assert b.headers["Content-Type"] == "application/octet-stream"
    assert await a.read() == await b.read() == b"same bytes"
    # Deleting one keeps the file for the other; deleting both removes it.
    assert await harness.media.delete("test.local", first.rsplit("/", 1)[1])
    assert len(harness.files()) == 1
    assert await harness.download(alice, second) == b"same bytes"
    assert await harness.media.delete("test.local", second.rsplit("/", 1)[1])
    assert harness.files() == []
    assert not await harness.media.delete("test.local", second.rsplit("/", 1)[1])


async def test_upload_needs_an_access_token(harness: MediaHarness) -> None:
    for method, path in (
        ("POST", f"{MEDIA_V3}/upload"),
        ("POST", "/_matrix/media/v1/create"),
        ("PUT", f"{MEDIA_V3}/upload/test.local/abcdef"),
        ("GET", f"{CLIENT_MEDIA}/config"),
    ):
        response = await harness.client.request(method, path, data=b"x")
        assert response.status == 401, path
        assert (await response.json())["errcode"] == "M_MISSING_TOKEN"
    assert harness.files() == []


async def test_async_upload(harness: MediaHarness, alice: User) -> None:
    created = await harness.rest.request("POST", "/_matrix/media/v1/create", alice, body={})
    assert_response_valid(CONTENT_REPO, "/media/v1/create", "post", 200, created)
    uri = created["content_uri"]
    now = harness.media.clock.time_ms()
    day = 24 * 60 * 60 * 1000
    assert now + day - 60_000 < created["unused_expires_at"] <= now + day
    server_name, media_id = uri.removeprefix("mxc://").split("/")
    # Not uploaded yet: 504 M_NOT_YET_UPLOADED once timeout_ms has passed.
    waiting = await harness.client.get(
        download_path(uri), headers=alice.headers, params={"timeout_ms": "0"}
    )
    assert waiting.status == 504
    assert (await waiting.json())["errcode"] == "M_NOT_YET_UPLOADED"

    # A download waiting for the content gets it as soon as it is uploaded.
    pending = asyncio.create_task(
        harness.client.get(
            download_path(uri), headers=alice.headers, params={"timeout_ms": "10000"}
        )
    )
    await asyncio.sleep(0.1)
    assert not pending.done()
    put = await harness.client.put(
        f"{MEDIA_V3}/upload/{server_name}/{media_id}",
        data=b"later",
        headers={**alice.headers, "Content-Type": "text/plain"},
        params={"filename": "later.txt"},
    )
    body = await put.json()
    assert put.status == 200, body
    assert_response_valid(CONTENT_REPO, "/media/v3/upload/{serverName}/{mediaId}", "put", 200, body)
    waited = await asyncio.wait_for(pending, 5)
    assert waited.status == 200
    assert await waited.read() == b"later"
    assert waited.headers["Content-Disposition"] == 'inline; filename="later.txt"'

    # Once filled, it cannot be overwritten.
    again = await harness.client.put(
        f"{MEDIA_V3}/upload/{server_name}/{media_id}", data=b"other", headers=alice.headers
    )
    error = await again.json()
    assert again.status == 409
    assert error["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    assert_response_valid(
        CONTENT_REPO, "/media/v3/upload/{serverName}/{mediaId}", "put", 409, error
    )
    assert await harness.download(alice, uri) == b"later"
    assert len(harness.files()) == 1


async def test_async_upload_errors(harness: MediaHarness, alice: User) -> None:
    bob = await harness.rest.register("bob")
    created = await harness.rest.request("POST", "/_matrix/media/v1/create", alice, body={})
    server_name, media_id = created["content_uri"].removeprefix("mxc://").split("/")
    put_path = f"{MEDIA_V3}/upload/{server_name}/{media_id}"

    async def put(user: User, path: str, status: int, errcode: str) -> None:
        response = await harness.client.put(path, data=b"content", headers=user.headers)
        body = await response.json()
        assert (response.status, body["errcode"]) == (status, errcode), body
        assert_response_valid(
            CONTENT_REPO, "/media/v3/upload/{serverName}/{mediaId}", "put", status, body
        )

    await put(bob, put_path, 403, "M_FORBIDDEN")  # not the creator
    await put(alice, f"{MEDIA_V3}/upload/test.local/neverCreated", 404, "M_NOT_FOUND")
    await put(alice, f"{MEDIA_V3}/upload/elsewhere.org/{media_id}", 404, "M_NOT_FOUND")
    await put(alice, f"{MEDIA_V3}/upload/test.local/bad.id", 404, "M_NOT_FOUND")
    # A media ID from /upload has content already.
    uploaded = await harness.upload(alice, b"done")
    await put(
        alice,
        f"{MEDIA_V3}/upload/{uploaded.removeprefix('mxc://')}",
        409,
        "M_CANNOT_OVERWRITE_MEDIA",
    )
    # Expired: as if it had never been made.
    await harness.media.store.db.execute(
        "UPDATE media SET expires_ts = 1 WHERE media_id = $1", media_id
    )
    await put(alice, put_path, 404, "M_NOT_FOUND")
    expired = await harness.client.get(
        download_path(created["content_uri"]), headers=alice.headers, params={"timeout_ms": "0"}
    )
    assert expired.status == 404
    assert len(harness.files()) == 1  # only the /upload one: refusals stored nothing


async def test_pending_uploads_are_limited_per_user(
    make_harness: HarnessFactory, media_core: Core, media_config: Any
) -> None:
    config = MediaConfig(path=media_config.path, max_pending_uploads=2)
    harness = await make_harness(media_core, config)
    alice = await harness.rest.register("alice")
    bob = await harness.rest.register("bob")
    first = await harness.rest.request("POST", "/_matrix/media/v1/create", alice, body={})
    await harness.rest.request("POST", "/_matrix/media/v1/create", alice, body={})
    refused = await harness.rest.request(
        "POST", "/_matrix/media/v1/create", alice, body={}, expect=429
    )
    assert refused["errcode"] == "M_LIMIT_EXCEEDED"
    assert_response_valid(CONTENT_REPO, "/media/v1/create", "post", 429, refused)
    await harness.rest.request("POST", "/_matrix/media/v1/create", bob, body={})  # per user
    # Uploading one frees a slot.
    path = f"{MEDIA_V3}/upload/{first['content_uri'].removeprefix('mxc://')}"
    assert (await harness.client.put(path, data=b"x", headers=alice.headers)).status == 200
    await harness.rest.request("POST", "/_matrix/media/v1/create", alice, body={})


async def test_upload_rate_limit(
    make_harness: HarnessFactory, storage: Storage, server_keys: ServerKeys, media_config: Any
) -> None:
    limits = LimitsConfig(
        messages=UNLIMITED.messages,
        login_ip=UNLIMITED.login_ip,
        login_account=UNLIMITED.login_account,
        registration_ip=UNLIMITED.registration_ip,
        media_uploads=RateLimit(per_second=0.01, burst=2),
    )
    core = build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=limits,
    )
    harness = await make_harness(core, media_config)
    alice = await harness.rest.register("alice")
    bob = await harness.rest.register("bob")
    await harness.upload(alice, b"1")
    await harness.rest.request("POST", "/_matrix/media/v1/create", alice, body={})
    body = await harness.upload(alice, b"3", expect=429)
    assert body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
    assert_response_valid(CONTENT_REPO, "/media/v3/upload", "post", 429, body)
    await harness.upload(bob, b"4")  # per user
    assert len(harness.files()) == 2


async def test_config_endpoint(harness: MediaHarness, alice: User) -> None:
    body = await harness.rest.request("GET", f"{CLIENT_MEDIA}/config", alice)
    assert body == {"m.upload.size": harness.config.max_upload_size}


async def test_interrupted_upload_leaves_nothing(harness: MediaHarness, alice: User) -> None:
    reader, writer = await asyncio.open_connection(harness.client.host, harness.client.port)
    writer.write(
        (
            f"POST {MEDIA_V3}/upload HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {alice.access_token}\r\n"
            "Content-Length: 10000000\r\n\r\n"
        ).encode()
        + b"z" * (3 * MIB)
    )
    await writer.drain()
    for _ in range(100):  # the upload is under way: its temporary file exists
        if any(p.suffix == ".part" for p in harness.files()):
            break
        await asyncio.sleep(0.02)
    assert [p.parent.name for p in harness.files()] == ["tmp"]
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if harness.files() == []:
            break
        await asyncio.sleep(0.05)
    assert harness.files() == []
    del reader
