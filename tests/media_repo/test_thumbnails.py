"""Thumbnails through the endpoint: PNG, JPEG, animated GIF and WebP at the requested sizes,
pre-generated and on-demand ones (cached), and Matrix errors for what cannot be thumbnailed."""

from __future__ import annotations

import asyncio
import hashlib
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from homeserver.config import MediaConfig
from homeserver.core import Core
from media_repo import repository
from media_repo.thumbnailer import PREGENERATED, ThumbnailSpec, make_thumbnail
from tests.helpers.rest import User
from tests.helpers.spec_schemas import assert_response_valid
from tests.media_repo.conftest import HarnessFactory, MediaHarness, thumbnail_path

AUTHED_REPO = "client-server/authed-content-repo.yaml"
THUMBNAIL = "/media/thumbnail/{serverName}/{mediaId}"
THUMBNAIL_TYPES = {"image/jpeg", "image/png", "image/apng", "image/gif", "image/webp"}


def image_bytes(fmt: str, size: tuple[int, int], frames: int = 1, **save: Any) -> bytes:
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 20)]
    images = [Image.new("RGB", size, colours[i % len(colours)]) for i in range(frames)]
    for i, image in enumerate(images):
        # A diagonal band, so a crop and a scale of the same image differ.
        for x in range(0, min(size), 3):
            image.putpixel((x, x), (i * 40, 0, 0))
    buffer = BytesIO()
    if frames > 1:
        images[0].save(
            buffer, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0
        )
    else:
        images[0].save(buffer, format=fmt, **save)
    return buffer.getvalue()


async def get_thumbnail(
    harness: MediaHarness, user: User, uri: str, width: int, height: int, method: str, **extra: str
) -> tuple[Image.Image, Any]:
    response = await harness.client.get(
        thumbnail_path(uri),
        headers=user.headers,
        params={"width": str(width), "height": str(height), "method": method, **extra},
    )
    assert response.status == 200, (response.status, await response.text())
    assert response.headers["Content-Type"] in THUMBNAIL_TYPES
    extension = response.headers["Content-Type"].split("/")[1].replace("jpeg", "jpg")
    assert response.headers["Content-Disposition"] == f'inline; filename="thumbnail.{extension}"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Security-Policy"].startswith("sandbox;")
    image = Image.open(BytesIO(await response.read()))
    assert image.format is not None
    assert Image.MIME[image.format] == response.headers["Content-Type"]
    return image, response.headers


async def test_png_thumbnails(harness: MediaHarness, alice: User) -> None:
    data = image_bytes("PNG", (1000, 800))
    uri = await harness.upload(alice, data, "image/png")
    image, _ = await get_thumbnail(harness, alice, uri, 96, 96, "crop")
    assert image.size == (96, 96)
    # Smaller requests get the nearest larger pre-generated size (never a smaller one).
    image, _ = await get_thumbnail(harness, alice, uri, 64, 64, "crop")
    assert image.size == (96, 96)
    image, _ = await get_thumbnail(harness, alice, uri, 320, 240, "scale")
    assert image.size == (300, 240)  # fits the box, aspect ratio kept
    # The spec's recommended sizes were made at upload.
    sha256 = hashlib.sha256(data).hexdigest()
    stored = await harness.media.store.get_thumbnails(sha256)
    assert {(t.width, t.height, t.method) for t in stored} == {
        (s.width, s.height, s.method) for s in PREGENERATED
    }
    # Another size is made on demand, then cached.
    image, _ = await get_thumbnail(harness, alice, uri, 150, 150, "crop")
    assert image.size == (150, 150)
    stored = await harness.media.store.get_thumbnails(sha256)
    assert len(stored) == len(PREGENERATED) + 1
    files = harness.files()
    again, _ = await get_thumbnail(harness, alice, uri, 150, 150, "crop")
    assert again.size == (150, 150)
    assert harness.files() == files


async def test_jpeg_thumbnails(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, image_bytes("JPEG", (1200, 900)), "image/jpeg")
    image, headers = await get_thumbnail(harness, alice, uri, 640, 480, "scale")
    assert image.size == (640, 480)
    assert headers["Content-Type"] == "image/jpeg"
    image, _ = await get_thumbnail(harness, alice, uri, 32, 32, "crop")
    assert image.size == (32, 32)
    image, _ = await get_thumbnail(harness, alice, uri, 500, 100, "crop")
    assert image.size == (500, 100)
    # animated=true on a format that cannot animate behaves as false.
    image, _ = await get_thumbnail(harness, alice, uri, 96, 96, "crop", animated="true")
    assert image.size == (96, 96) and not getattr(image, "is_animated", False)


async def test_animated_gif_thumbnails(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, image_bytes("GIF", (400, 300), frames=4), "image/gif")
    animated, headers = await get_thumbnail(harness, alice, uri, 96, 96, "crop", animated="true")
    assert headers["Content-Type"] == "image/webp"  # spec: SHOULD prefer WebP for animation
    assert animated.size == (96, 96)
    assert getattr(animated, "n_frames", 1) == 4
    # animated=false (and no animated parameter): MUST NOT be animated.
    for extra in ({"animated": "false"}, {}):
        still, _ = await get_thumbnail(harness, alice, uri, 96, 96, "crop", **extra)
        assert still.size == (96, 96)
        assert getattr(still, "n_frames", 1) == 1
    scaled, _ = await get_thumbnail(harness, alice, uri, 200, 200, "scale", animated="true")
    assert scaled.size == (200, 150)
    assert getattr(scaled, "n_frames", 1) == 4


async def test_webp_thumbnails(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, image_bytes("WEBP", (640, 640)), "image/webp")
    image, _ = await get_thumbnail(harness, alice, uri, 320, 240, "scale")
    assert image.size == (240, 240)
    image, _ = await get_thumbnail(harness, alice, uri, 96, 96, "crop")
    assert image.size == (96, 96)
    animated_uri = await harness.upload(
        alice, image_bytes("WEBP", (300, 300), frames=3), "image/webp"
    )
    image, headers = await get_thumbnail(
        harness, alice, animated_uri, 100, 100, "crop", animated="true"
    )
    assert headers["Content-Type"] == "image/webp"
    assert image.size == (100, 100) and getattr(image, "n_frames", 1) == 3


async def test_small_images_are_never_upscaled(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, image_bytes("PNG", (20, 10)), "image/png")
    image, _ = await get_thumbnail(harness, alice, uri, 320, 240, "scale")
    assert image.size == (20, 10)


async def test_identical_images_share_thumbnails(harness: MediaHarness, alice: User) -> None:
    data = image_bytes("PNG", (400, 400))
    first = await harness.upload(alice, data, "image/png")
    await get_thumbnail(harness, alice, first, 32, 32, "crop")
    files = harness.files()
    second = await harness.upload(alice, data, "image/png")
    await get_thumbnail(harness, alice, second, 32, 32, "crop")
    assert harness.files() == files
    # Deleting the media removes its thumbnails once no other media has the content.
    assert await harness.media.delete("test.local", first.rsplit("/", 1)[1])
    assert harness.files() == files
    assert await harness.media.delete("test.local", second.rsplit("/", 1)[1])
    assert harness.files() == []
    assert await harness.media.store.get_thumbnails(hashlib.sha256(data).hexdigest()) == []


async def assert_thumbnail_error(
    harness: MediaHarness, user: User, uri: str, status: int, errcode: str, **params: str
) -> dict[str, Any]:
    query = {"width": "32", "height": "32", **params}
    response = await harness.client.get(thumbnail_path(uri), headers=user.headers, params=query)
    body: dict[str, Any] = await response.json()
    assert (response.status, body.get("errcode")) == (status, errcode), body
    return body


async def test_what_cannot_be_thumbnailed_gets_matrix_errors(
    harness: MediaHarness, alice: User
) -> None:
    png = image_bytes("PNG", (300, 300))
    for data, content_type in (
        (b"this is not an image", "image/png"),
        (png[: len(png) // 2], "image/png"),  # truncated
        (image_bytes("JPEG", (50, 50))[:200], "image/jpeg"),
        (b"GIF89a" + b"\xff" * 100, "image/gif"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        (b"plain words", "text/plain"),
        (b"%PDF-1.4", "application/pdf"),
    ):
        # The upload itself succeeds: thumbnailing failures at upload are not fatal.
        uri = await harness.upload(alice, data, content_type)
        body = await assert_thumbnail_error(harness, alice, uri, 400, "M_UNKNOWN")
        assert_response_valid(AUTHED_REPO, THUMBNAIL, "get", 400, body)
        assert await harness.download(alice, uri) == data


async def test_thumbnail_parameters_are_checked(harness: MediaHarness, alice: User) -> None:
    uri = await harness.upload(alice, image_bytes("PNG", (100, 100)), "image/png")
    for params, errcode in (
        ({"width": "0"}, "M_INVALID_PARAM"),
        ({"height": "-5"}, "M_INVALID_PARAM"),
        ({"width": "abc"}, "M_INVALID_PARAM"),
        ({"width": "1.5"}, "M_INVALID_PARAM"),
        ({"method": "stretch"}, "M_INVALID_PARAM"),
        ({"animated": "yes"}, "M_INVALID_PARAM"),
        ({"timeout_ms": "soon"}, "M_INVALID_PARAM"),
    ):
        body = await assert_thumbnail_error(harness, alice, uri, 400, errcode, **params)
        assert_response_valid(AUTHED_REPO, THUMBNAIL, "get", 400, body)
    response = await harness.client.get(
        thumbnail_path(uri), headers=alice.headers, params={"width": "32"}
    )
    assert response.status == 400
    assert (await response.json())["errcode"] == "M_MISSING_PARAM"


async def test_images_over_the_pixel_limit_are_not_thumbnailed(
    make_harness: HarnessFactory, media_core: Core, media_config: MediaConfig
) -> None:
    config = MediaConfig(path=media_config.path, max_image_pixels=100 * 100)
    harness = await make_harness(media_core, config)
    alice = await harness.rest.register("alice")
    uri = await harness.upload(alice, image_bytes("PNG", (101, 100)), "image/png")
    # Spec "Security considerations": 413 M_TOO_LARGE.
    body = await assert_thumbnail_error(harness, alice, uri, 413, "M_TOO_LARGE")
    assert_response_valid(AUTHED_REPO, THUMBNAIL, "get", 413, body)
    assert "pixels" in body["error"]
    ok = await harness.upload(alice, image_bytes("PNG", (100, 100)), "image/png")
    image, _ = await get_thumbnail(harness, alice, ok, 32, 32, "crop")
    assert image.size == (32, 32)


async def test_concurrent_requests_for_a_new_size_share_one_thumbnail(
    harness: MediaHarness, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[ThumbnailSpec] = []

    def counting(source: Path, content_type: str, spec: ThumbnailSpec, max_pixels: int) -> Any:
        made.append(spec)
        return make_thumbnail(source, content_type, spec, max_pixels)

    monkeypatch.setattr(repository, "make_thumbnail", counting)
    data = image_bytes("JPEG", (1600, 1200))
    uri = await harness.upload(alice, data, "image/jpeg")
    results = await asyncio.gather(
        *(get_thumbnail(harness, alice, uri, 333, 222, "crop") for _ in range(5))
    )
    assert {image.size for image, _ in results} == {(333, 222)}
    assert made.count(ThumbnailSpec(333, 222, "crop")) == 1
    stored = await harness.media.store.get_thumbnails(hashlib.sha256(data).hexdigest())
    assert [(t.width, t.height) for t in stored].count((333, 222)) == 1


async def test_on_demand_sizes_are_cached_up_to_a_limit(
    harness: MediaHarness, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "MAX_CACHED_THUMBNAILS", len(PREGENERATED) + 1)
    data = image_bytes("PNG", (900, 900))
    uri = await harness.upload(alice, data, "image/png")
    image, _ = await get_thumbnail(harness, alice, uri, 123, 123, "crop")  # cached
    assert image.size == (123, 123)
    files = harness.files()
    # Over the limit: still made and served, but not kept.
    for size in (124, 125):
        image, _ = await get_thumbnail(harness, alice, uri, size, size, "crop")
        assert image.size == (size, size)
    assert harness.files() == files
    stored = await harness.media.store.get_thumbnails(hashlib.sha256(data).hexdigest())
    assert len(stored) == len(PREGENERATED) + 1
