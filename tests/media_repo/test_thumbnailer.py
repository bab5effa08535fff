"""The thumbnail engine: sizes, orientation, formats, animation and hostile files."""

from __future__ import annotations

import struct
import tempfile
import warnings
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFile

from media_repo.thumbnailer import (
    MAX_ANIMATION_FRAMES,
    MAX_DIMENSION,
    PREGENERATED,
    THUMBNAILABLE_TYPES,
    ImageTooLargeError,
    Thumbnail,
    ThumbnailError,
    ThumbnailSpec,
    choose_spec,
    make_thumbnail,
)

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
COLOURS = [RED, GREEN, BLUE, (255, 255, 0), (255, 0, 255)]


@pytest.fixture(autouse=True)
def _pillow_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Importing Synapse (tests/interop) sets this process-wide flag, which makes Pillow decode
    # truncated files with a grey fill; these tests describe Pillow's defaults.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)


def _save(path: Path, image: Image.Image, fmt: str, **params: Any) -> Path:
    image.save(path, format=fmt, **params)
    return path


def _decode(thumbnail: Thumbnail) -> Image.Image:
    """The thumbnail's image, after checking that its declared size and type are true."""
    image = Image.open(BytesIO(thumbnail.data))
    assert image.size == (thumbnail.width, thumbnail.height)
    assert Image.MIME[image.format or ""] == thumbnail.content_type
    return image


def _pixel(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def _close(actual: tuple[int, ...], expected: tuple[int, int, int], slack: int = 40) -> bool:
    return all(abs(a - e) <= slack for a, e in zip(actual[:3], expected, strict=True))


def _stripes(width: int, height: int, colours: list[tuple[int, int, int]]) -> Image.Image:
    """Vertical stripes of equal width, left to right."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    stripe = width // len(colours)
    for index, colour in enumerate(colours):
        draw.rectangle((index * stripe, 0, (index + 1) * stripe - 1, height - 1), fill=colour)
    return image


def _animation(path: Path, fmt: str, frames: int = 5, size: tuple[int, int] = (100, 80)) -> Path:
    images = [Image.new("RGB", size, COLOURS[index % len(COLOURS)]) for index in range(frames)]
    return _save(
        path,
        images[0],
        fmt,
        save_all=True,
        append_images=images[1:],
        duration=[40 + 10 * index for index in range(frames)],
        loop=0,
    )


# -- sizes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "box", "expected"),
    [
        ((1000, 500), (320, 240), (320, 160)),
        ((500, 1000), (320, 240), (120, 240)),
        ((300, 300), (320, 240), (240, 240)),
        # Never upscaled: a smaller source comes back at its own size.
        ((100, 50), (320, 240), (100, 50)),
        ((100, 50), (100, 40), (80, 40)),
    ],
)
def test_scale_fits_inside_the_box_keeping_the_aspect_ratio(
    tmp_path: Path,
    source: tuple[int, int],
    box: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    path = _save(tmp_path / "a.jpg", Image.new("RGB", source, RED), "JPEG")
    thumbnail = make_thumbnail(path, "image/jpeg", ThumbnailSpec(*box, "scale"))
    assert (thumbnail.width, thumbnail.height) == expected
    assert _decode(thumbnail).size == expected


@pytest.mark.parametrize(
    ("source", "box", "expected"),
    [
        ((1000, 500), (96, 96), (96, 96)),
        ((500, 1000), (32, 32), (32, 32)),
        ((1000, 500), (200, 20), (200, 20)),
        # Smaller than the box: the requested aspect ratio at the source's own size.
        ((60, 40), (96, 96), (40, 40)),
        ((60, 40), (200, 100), (60, 30)),
        ((60, 40), (100, 200), (20, 40)),
    ],
)
def test_crop_fills_the_box_without_upscaling(
    tmp_path: Path,
    source: tuple[int, int],
    box: tuple[int, int],
    expected: tuple[int, int],
) -> None:
    path = _save(tmp_path / "a.png", Image.new("RGB", source, RED), "PNG")
    thumbnail = make_thumbnail(path, "image/png", ThumbnailSpec(*box, "crop"))
    assert (thumbnail.width, thumbnail.height) == expected
    assert _decode(thumbnail).size == expected


def test_crop_keeps_the_centre(tmp_path: Path) -> None:
    # Red | green | blue thirds: a square crop of a 3:1 image is the green third alone.
    path = _save(tmp_path / "a.png", _stripes(300, 100, [RED, GREEN, BLUE]), "PNG")
    image = _decode(make_thumbnail(path, "image/png", ThumbnailSpec(50, 50, "crop")))
    for corner in [(0, 0), (49, 0), (0, 49), (49, 49), (25, 25)]:
        assert _close(_pixel(image, corner), GREEN), corner
    # Scaling keeps all three.
    image = _decode(make_thumbnail(path, "image/png", ThumbnailSpec(60, 60, "scale")))
    assert image.size == (60, 20)
    assert _close(_pixel(image, (2, 10)), RED)
    assert _close(_pixel(image, (57, 10)), BLUE)


def test_large_requests_are_clamped(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.jpg", Image.new("RGB", (4000, 1000), RED), "JPEG")
    # scale: each side clamped on its own.
    thumbnail = make_thumbnail(path, "image/jpeg", ThumbnailSpec(5000, 5000, "scale"))
    assert (thumbnail.width, thumbnail.height) == (MAX_DIMENSION, 500)
    # crop: both sides shrink together, so the requested 2:1 survives.
    thumbnail = make_thumbnail(path, "image/jpeg", ThumbnailSpec(4000, 2000, "crop"))
    assert (thumbnail.width, thumbnail.height) == (MAX_DIMENSION, MAX_DIMENSION // 2)
    _decode(thumbnail)


@pytest.mark.parametrize(
    "spec",
    [
        ThumbnailSpec(0, 32, "crop"),
        ThumbnailSpec(32, 0, "scale"),
        ThumbnailSpec(-5, 32, "scale"),
        ThumbnailSpec(32, 32, "zoom"),  # type: ignore[arg-type]
    ],
)
def test_invalid_requests_are_refused(tmp_path: Path, spec: ThumbnailSpec) -> None:
    path = _save(tmp_path / "a.png", Image.new("RGB", (50, 50), RED), "PNG")
    with pytest.raises(ThumbnailError):
        make_thumbnail(path, "image/png", spec)


# -- orientation, modes and output formats --------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Stored 64x32, red left and blue right; orientation 6 means "turn a quarter clockwise to
    # view", which puts the red half on top of a 32x64 picture.
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(
        tmp_path / "a.jpg", _stripes(64, 32, [RED, BLUE]), "JPEG", exif=exif.tobytes(), quality=95
    )
    image = _decode(make_thumbnail(path, "image/jpeg", ThumbnailSpec(320, 240, "scale")))
    assert image.size == (32, 64)
    assert _close(_pixel(image, (16, 4)), RED)
    assert _close(_pixel(image, (16, 60)), BLUE)
    # The box applies to the upright picture.
    thumbnail = make_thumbnail(path, "image/jpeg", ThumbnailSpec(16, 16, "scale"))
    assert (thumbnail.width, thumbnail.height) == (8, 16)
    thumbnail = make_thumbnail(path, "image/jpeg", ThumbnailSpec(20, 10, "crop"))
    image = _decode(thumbnail)
    assert image.size == (20, 10)
    assert _close(_pixel(image, (10, 1)), RED) and _close(_pixel(image, (10, 8)), BLUE)


def test_large_jpeg_is_decoded_at_reduced_scale_to_the_right_size(
    tmp_path: Path, decodes: list[ImageFile.ImageFile]
) -> None:
    # libjpeg decodes this 2400x800 at 1/8 for a 96x96 crop; the output must still be exactly
    # the box and the right region (the green centre third).
    path = _save(tmp_path / "a.jpg", _stripes(2400, 800, [RED, GREEN, BLUE]), "JPEG")
    image = _decode(make_thumbnail(path, "image/jpeg", ThumbnailSpec(96, 96, "crop")))
    assert {decoded.size for decoded in decodes} == {(300, 100)}
    assert image.size == (96, 96)
    assert _close(_pixel(image, (0, 0)), GREEN) and _close(_pixel(image, (95, 95)), GREEN)
    thumbnail = make_thumbnail(path, "image/jpeg", ThumbnailSpec(320, 240, "scale"))
    assert (thumbnail.width, thumbnail.height) == (320, 107)


def test_transparency_gives_png_with_alpha(tmp_path: Path) -> None:
    source = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    ImageDraw.Draw(source).rectangle((25, 25, 74, 74), fill=(*BLUE, 255))
    for fmt, content_type in [("PNG", "image/png"), ("WEBP", "image/webp")]:
        path = _save(tmp_path / f"a.{fmt}", source, fmt, lossless=True)
        thumbnail = make_thumbnail(path, content_type, ThumbnailSpec(50, 50, "scale"))
        assert thumbnail.content_type == "image/png"
        image = _decode(thumbnail)
        assert image.mode == "RGBA"
        assert _pixel(image, (0, 0))[3] == 0
        assert _pixel(image, (25, 25)) == (*BLUE, 255)


@pytest.mark.parametrize(
    ("fmt", "content_type", "expected"),
    [
        ("JPEG", "image/jpeg", "image/jpeg"),
        ("PNG", "image/png", "image/png"),
        ("GIF", "image/gif", "image/png"),
        ("WEBP", "image/webp", "image/jpeg"),
        ("BMP", "image/bmp", "image/jpeg"),
        # The declared type only has to be an image type; the file decides how it is read.
        ("PNG", "image/jpeg", "image/png"),
        ("JPEG", "IMAGE/PNG; charset=binary", "image/jpeg"),
    ],
)
def test_output_content_types(tmp_path: Path, fmt: str, content_type: str, expected: str) -> None:
    path = _save(tmp_path / "a", Image.new("RGB", (40, 30), GREEN), fmt)
    thumbnail = make_thumbnail(path, content_type, ThumbnailSpec(32, 32, "crop"))
    assert thumbnail.content_type == expected
    image = _decode(thumbnail)
    assert image.size == (30, 30)
    assert _close(_pixel(image, (15, 15)), GREEN)


def test_sixteen_bit_greyscale_keeps_its_tones(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.png", Image.new("I;16", (20, 20), 0x8000), "PNG")
    image = _decode(make_thumbnail(path, "image/png", ThumbnailSpec(10, 10, "scale")))
    assert _close(_pixel(image.convert("RGB"), (5, 5)), (128, 128, 128), slack=2)


# -- animation --------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "content_type"), [("GIF", "image/gif"), ("WEBP", "image/webp")])
def test_animated_sources_give_animated_webp(tmp_path: Path, fmt: str, content_type: str) -> None:
    path = _animation(tmp_path / "a", fmt)
    thumbnail = make_thumbnail(path, content_type, ThumbnailSpec(50, 50, "scale", animated=True))
    assert thumbnail.content_type == "image/webp"
    image = _decode(thumbnail)
    assert image.size == (50, 40)
    assert getattr(image, "n_frames", 1) == 5
    for index in range(5):
        image.seek(index)
        assert _close(_pixel(image.convert("RGB"), (25, 20)), COLOURS[index]), index
        assert image.info["duration"] == 40 + 10 * index


@pytest.mark.parametrize(
    ("fmt", "content_type", "expected"),
    [("GIF", "image/gif", "image/png"), ("WEBP", "image/webp", "image/jpeg")],
)
def test_animated_sources_give_their_first_frame_unless_asked(
    tmp_path: Path, fmt: str, content_type: str, expected: str
) -> None:
    path = _animation(tmp_path / "a", fmt)
    thumbnail = make_thumbnail(path, content_type, ThumbnailSpec(32, 32, "crop"))
    assert thumbnail.content_type == expected
    image = _decode(thumbnail)
    assert getattr(image, "n_frames", 1) == 1
    assert image.size == (32, 32)
    assert _close(_pixel(image.convert("RGB"), (16, 16)), COLOURS[0])


def test_animation_asked_of_a_still_image_gives_a_still(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.jpg", Image.new("RGB", (100, 80), RED), "JPEG")
    thumbnail = make_thumbnail(path, "image/jpeg", ThumbnailSpec(50, 50, "scale", animated=True))
    assert thumbnail.content_type == "image/jpeg"
    assert _decode(thumbnail).size == (50, 40)


def test_oversized_animations_fall_back_to_a_still(tmp_path: Path) -> None:
    spec = ThumbnailSpec(8, 8, "scale", animated=True)
    many = _animation(tmp_path / "many.gif", "GIF", MAX_ANIMATION_FRAMES + 1, (8, 8))
    thumbnail = make_thumbnail(many, "image/gif", spec)
    assert thumbnail.content_type == "image/png"
    enough = _animation(tmp_path / "enough.gif", "GIF", MAX_ANIMATION_FRAMES, (8, 8))
    thumbnail = make_thumbnail(enough, "image/gif", spec)
    assert thumbnail.content_type == "image/webp"
    assert getattr(_decode(thumbnail), "n_frames", 1) == MAX_ANIMATION_FRAMES
    # Five 100x80 frames resized to 50x40 hold 10,000 pixels: over a 9,000 budget.
    five = _animation(tmp_path / "five.gif", "GIF")
    wide = ThumbnailSpec(50, 50, "scale", animated=True)
    assert make_thumbnail(five, "image/gif", wide, max_pixels=9_000).content_type == "image/png"
    assert make_thumbnail(five, "image/gif", wide, max_pixels=10_000).content_type == "image/webp"


# -- hostile and unsupported input -----------------------------------------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose header is rewritten to claim width x height pixels."""
    buffer = BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[ImageFile.ImageFile]:
    """The images whose pixel data got decoded."""
    loaded: list[ImageFile.ImageFile] = []
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        loaded.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return loaded


def test_bomb_is_refused_from_its_header(
    tmp_path: Path, decodes: list[ImageFile.ImageFile]
) -> None:
    # 50 megapixels: under Pillow's own limit, over ours. Nothing may be decoded.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(10_000, 5_000))
    with pytest.raises(ImageTooLargeError, match="exceeds"):
        make_thumbnail(path, "image/png", ThumbnailSpec(32, 32, "crop"))
    assert decodes == []


def test_pillow_bomb_limits_apply_too(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    spec = ThumbnailSpec(32, 32, "crop")
    # Over twice Pillow's limit: it raises DecompressionBombError itself.
    path.write_bytes(_png_claiming(100_000, 100_000))
    with pytest.raises(ImageTooLargeError) as raised:
        make_thumbnail(path, "image/png", spec, max_pixels=10**12)
    assert isinstance(raised.value.__cause__, Image.DecompressionBombError)
    # Between its limit and twice that Pillow only warns; that is refused too.
    path.write_bytes(_png_claiming(10_000, 10_000))
    with pytest.warns(Image.DecompressionBombWarning), pytest.raises(ImageTooLargeError):
        make_thumbnail(path, "image/png", spec, max_pixels=10**12)
    # And where warnings are errors, the warning becomes a ThumbnailError as well.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageTooLargeError) as raised:
            make_thumbnail(path, "image/png", spec, max_pixels=10**12)
    assert isinstance(raised.value.__cause__, Image.DecompressionBombWarning)


def test_max_pixels_applies_to_real_images(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.png", Image.new("RGB", (100, 100), RED), "PNG")
    spec = ThumbnailSpec(32, 32, "crop")
    with pytest.raises(ImageTooLargeError):
        make_thumbnail(path, "image/png", spec, max_pixels=9_999)
    assert make_thumbnail(path, "image/png", spec, max_pixels=10_000).width == 32


def _valid_png() -> bytes:
    buffer = BytesIO()
    _stripes(64, 64, COLOURS).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (_valid_png()[: len(_valid_png()) // 2], "image/png"),  # truncated
        (_valid_png()[:60] + bytes(200), "image/png"),  # corrupt pixel data
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "image/png"),  # a signature and nothing valid
        (b"", "image/png"),
        (b"hello, world\n" * 20, "image/png"),  # text claiming to be an image
        (b"hello, world\n" * 20, "text/plain"),
        (_valid_png(), "text/plain"),  # a real image, declared as something else
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        (_valid_png(), "image/tiff"),
    ],
)
def test_unusable_files_raise_thumbnail_error(
    tmp_path: Path, data: bytes, content_type: str
) -> None:
    path = tmp_path / "a"
    path.write_bytes(data)
    with pytest.raises(ThumbnailError):
        make_thumbnail(path, content_type, ThumbnailSpec(32, 32, "crop"))


def test_formats_outside_the_allowed_decoders_are_not_read(tmp_path: Path) -> None:
    # Pillow reads TIFF, but this engine keeps that decoder off even under an image/* type.
    path = _save(tmp_path / "a.tif", Image.new("RGB", (40, 40), RED), "TIFF")
    with pytest.raises(ThumbnailError):
        make_thumbnail(path, "image/png", ThumbnailSpec(32, 32, "crop"))


def _seed(fmt: str) -> bytes:
    buffer = BytesIO()
    if fmt in ("GIF", "WEBP"):
        frames = [Image.new("RGB", (16, 12), colour) for colour in COLOURS[:3]]
        frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:])
    else:
        _stripes(16, 12, COLOURS[:4]).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = {fmt: _seed(fmt) for fmt in ("PNG", "JPEG", "GIF", "WEBP", "BMP")}


# Mutated headers can claim bomb sizes, which Pillow warns about before the engine refuses them.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@settings(
    max_examples=150,
    deadline=None,
    # The only fixture is the autouse one above, which holds for every example alike.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    fmt=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10_000),
    method=st.sampled_from(["crop", "scale"]),
    animated=st.booleans(),
)
def test_mutated_files_give_a_thumbnail_or_thumbnail_error(
    fmt: str, edits: list[tuple[int, int]], cut: int, method: str, animated: bool
) -> None:
    data = bytearray(SEEDS[fmt])
    for offset, value in edits:
        data[offset % len(data)] = value
    if cut < len(data):
        del data[cut:]
    spec = ThumbnailSpec(10, 10, method, animated)  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "a"
        path.write_bytes(bytes(data))
        try:
            thumbnail = make_thumbnail(path, "image/png", spec, max_pixels=1_000_000)
        except ThumbnailError:
            return
    image = _decode(thumbnail)
    assert 1 <= image.width <= 10 and 1 <= image.height <= 10


# -- the pre-generated sizes and choosing among them -----------------------------------------


def test_pregenerated_sizes_are_the_spec_ones() -> None:
    assert [(s.width, s.height, s.method, s.animated) for s in PREGENERATED] == [
        (32, 32, "crop", False),
        (96, 96, "crop", False),
        (320, 240, "scale", False),
        (640, 480, "scale", False),
        (800, 600, "scale", False),
    ]
    assert {"image/png", "image/jpeg", "image/gif", "image/webp"} <= THUMBNAILABLE_TYPES
    assert "image/svg+xml" not in THUMBNAILABLE_TYPES


CROP_32, CROP_96, SCALE_320, SCALE_640, SCALE_800 = PREGENERATED


@pytest.mark.parametrize(
    ("width", "height", "method", "expected"),
    [
        (32, 32, "crop", CROP_32),
        (24, 24, "crop", CROP_32),
        (33, 33, "crop", CROP_96),
        (96, 96, "crop", CROP_96),
        (64, 48, "crop", CROP_96),
        # Too large for any crop: made on demand, never answered with a scaled one.
        (97, 97, "crop", None),
        (100, 50, "crop", None),
        (320, 240, "scale", SCALE_320),
        (96, 96, "scale", SCALE_320),
        (321, 240, "scale", SCALE_640),
        (400, 500, "scale", SCALE_800),
        (800, 600, "scale", SCALE_800),
        (801, 600, "scale", None),
        (20, 20, "scale", SCALE_320),
        # Nonsense requests are left to make_thumbnail to refuse.
        (0, 32, "crop", None),
        (32, -1, "scale", None),
        (32, 32, "zoom", None),
    ],
)
def test_choose_spec(width: int, height: int, method: str, expected: ThumbnailSpec | None) -> None:
    assert choose_spec(PREGENERATED, width, height, method, False) == expected


def test_choose_spec_prefers_the_closest_crop_aspect_ratio() -> None:
    wide = ThumbnailSpec(200, 100, "crop")
    available = (*PREGENERATED, wide)
    assert choose_spec(available, 80, 40, "crop", False) == wide
    assert choose_spec(available, 80, 80, "crop", False) == CROP_96
    assert choose_spec(available, 150, 50, "crop", False) == wide


def test_choose_spec_never_mixes_animated_and_still() -> None:
    animated = ThumbnailSpec(320, 240, "scale", animated=True)
    available = (*PREGENERATED, animated)
    assert choose_spec(available, 100, 100, "scale", True) == animated
    assert choose_spec(available, 100, 100, "scale", False) == SCALE_320
    assert choose_spec(PREGENERATED, 100, 100, "scale", True) is None
    assert choose_spec(available, 32, 32, "crop", True) is None
