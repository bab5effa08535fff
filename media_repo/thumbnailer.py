"""Thumbnails of uploaded images (spec: client-server-api "Thumbnails").

Blocking functions over Pillow; the repository runs them with `asyncio.to_thread`. Everything
here treats its input as hostile: the pixel count is checked from the header before anything
is decoded, only a few well-trodden decoders are enabled, and whatever a decoder raises on a
bad file comes out as ThumbnailError.

Requested sizes: a width or height below 1 is a ThumbnailError (the spec's 400 for
"negatively-sized images"). Above MAX_DIMENSION they are clamped rather than refused, since a
client asking for a large thumbnail is legitimate: "scale" clamps each side (the box only
shrinks on its long side), "crop" shrinks both sides by the same factor so the aspect ratio the
client asked for survives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Literal

from PIL import ExifTags, Image, ImageOps

MAX_DIMENSION = 2000
# Animated thumbnails: at most this many frames, at most max_pixels * ANIMATION_WORK_FACTOR
# source pixels decoded, and resized frames held for the encoder no larger in total than one
# still image of max_pixels. Beyond that the first frame makes a still thumbnail.
MAX_ANIMATION_FRAMES = 200
ANIMATION_WORK_FACTOR = 4

_JPEG_QUALITY = 80
_WEBP_QUALITY = 80


class ThumbnailError(Exception):
    """The source cannot be thumbnailed: not an image, corrupt, too many pixels, unsupported."""


class ImageTooLargeError(ThumbnailError):
    """The image has more pixels than allowed (the spec's 413 M_TOO_LARGE for thumbnails)."""


@dataclass(frozen=True)
class ThumbnailSpec:
    width: int
    height: int
    method: Literal["crop", "scale"]
    animated: bool = False


@dataclass(frozen=True)
class Thumbnail:
    content_type: str
    width: int
    height: int
    data: bytes


# The sizes the spec says servers SHOULD produce.
PREGENERATED: tuple[ThumbnailSpec, ...] = (
    ThumbnailSpec(32, 32, "crop"),
    ThumbnailSpec(96, 96, "crop"),
    ThumbnailSpec(320, 240, "scale"),
    ThumbnailSpec(640, 480, "scale"),
    ThumbnailSpec(800, 600, "scale"),
)

# Content types mapped to the Pillow decoders that may read them. No SVG (a document, not an
# image), no TIFF or the long tail of Pillow's plugins: less decoder surface for hostile files.
_DECODERS: dict[str, str] = {
    "image/png": "PNG",
    "image/apng": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
}
THUMBNAILABLE_TYPES: frozenset[str] = frozenset(_DECODERS)
# A file is decoded by whichever of these recognises it, not only the one its declared type
# names: uploaders often get the type wrong, and each decoder is safe on its own.
_ALLOWED_FORMATS = tuple(sorted(set(_DECODERS.values())))
# Formats whose animations are kept when asked for (APNG is a PNG).
_ANIMATED_FORMATS = frozenset({"GIF", "WEBP", "PNG"})
# Formats thumbnailed as PNG even when opaque: they are mostly drawings, which JPEG smears.
_LOSSLESS_FORMATS = frozenset({"PNG", "GIF"})
# EXIF orientations 5 to 8 turn the image a quarter turn: its width and height swap.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})

_Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class _Plan:
    """A resize: the region of the (upright) source to keep, and the size to give it."""

    box: _Box
    size: tuple[int, int]


def make_thumbnail(
    source: Path, content_type: str, spec: ThumbnailSpec, max_pixels: int = 32_000_000
) -> Thumbnail:
    """A thumbnail of the image at `source` (see the module docstring for sizes and limits).

    "scale" fits the image inside the box keeping its aspect ratio; "crop" fills the box and
    cuts the overflow evenly from both sides. Neither ever upscales: a smaller source comes back
    at its own size ("crop": the largest centred region of the requested aspect ratio).
    """
    width, height = _target_size(spec)
    if content_type.split(";", 1)[0].strip().lower() not in THUMBNAILABLE_TYPES:
        raise ThumbnailError(f"cannot thumbnail {content_type!r}")
    try:
        with Image.open(source, formats=_ALLOWED_FORMATS) as image:
            return _thumbnail(image, width, height, spec, max_pixels)
    except ThumbnailError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except Exception as exc:
        # Pillow's decoders raise a wide, undocumented range of exceptions on hostile input
        # (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, the
        # decompression bomb ones, MemoryError...). At this boundary any of them means a file
        # that cannot be thumbnailed, never a server error.
        raise ThumbnailError(f"cannot decode image: {exc}") from exc


def choose_spec(
    available: Sequence[ThumbnailSpec], width: int, height: int, method: str, animated: bool
) -> ThumbnailSpec | None:
    """Among pre-generated specs, the one to serve for a request, or None to make one on demand.

    The spec requires a thumbnail at least as large as asked: only specs covering width x height
    qualify, of the same method (a crop would cut off part of a "scale" request; a scaled image
    in a larger box can still be smaller than a "crop" request on one side) and the same
    `animated` (a static request MUST NOT get an animation; callers pass animated=False for a
    source that cannot animate). Crop requests prefer the closest aspect ratio; then the
    smallest qualifies.
    """
    if width < 1 or height < 1 or method not in ("crop", "scale"):
        return None
    candidates = [
        spec
        for spec in available
        if spec.method == method
        and spec.animated == animated
        and spec.width >= width
        and spec.height >= height
    ]
    if not candidates:
        return None
    wanted_aspect = math.log(width / height)

    def rank(spec: ThumbnailSpec) -> tuple[float, int, int, int]:
        aspect_gap = abs(math.log(spec.width / spec.height) - wanted_aspect)
        return (
            aspect_gap if method == "crop" else 0.0,
            spec.width * spec.height,
            spec.width,
            spec.height,
        )

    return min(candidates, key=rank)


def _target_size(spec: ThumbnailSpec) -> tuple[int, int]:
    if spec.method not in ("crop", "scale"):
        raise ThumbnailError(f"unknown thumbnail method {spec.method!r}")
    width, height = spec.width, spec.height
    if width < 1 or height < 1:
        raise ThumbnailError(f"invalid thumbnail size {width}x{height}")
    if spec.method == "scale":
        return min(width, MAX_DIMENSION), min(height, MAX_DIMENSION)
    shrink = min(1.0, MAX_DIMENSION / max(width, height))
    return max(1, round(width * shrink)), max(1, round(height * shrink))


def _thumbnail(
    image: Image.Image, width: int, height: int, spec: ThumbnailSpec, max_pixels: int
) -> Thumbnail:
    # Image.open has read the header only: the size is known, nothing is decoded yet.
    raw_width, raw_height = image.size
    # Pillow's own limit holds too. Between it and twice it, Image.open only warns (raising
    # from it would need a warnings filter, which is process-wide state and not thread-safe to
    # set per call): the refusal is here.
    if Image.MAX_IMAGE_PIXELS is not None:
        max_pixels = min(max_pixels, Image.MAX_IMAGE_PIXELS)
    if raw_width * raw_height > max_pixels:
        raise ImageTooLargeError(f"image of {raw_width}x{raw_height} exceeds {max_pixels} pixels")
    orientation = image.getexif().get(ExifTags.Base.Orientation)
    if orientation in _QUARTER_TURNS:
        upright = (raw_height, raw_width)
    else:
        upright = (raw_width, raw_height)
    plan = _plan(upright, width, height, spec.method)
    if spec.animated and image.format in _ANIMATED_FORMATS and getattr(image, "is_animated", False):
        # Counting a GIF's frames reads the whole file: only done when an animation may follow.
        frames = int(getattr(image, "n_frames", 1))
        if (
            frames <= MAX_ANIMATION_FRAMES
            and frames * raw_width * raw_height <= max_pixels * ANIMATION_WORK_FACTOR
            and frames * plan.size[0] * plan.size[1] <= max_pixels
        ):
            return _animated(image, frames, upright, plan)
    return _still(image, upright, plan)


def _plan(upright: tuple[int, int], width: int, height: int, method: str) -> _Plan:
    source_width, source_height = upright
    if method == "scale":
        factor = min(1.0, width / source_width, height / source_height)
        size = (max(1, round(source_width * factor)), max(1, round(source_height * factor)))
        return _Plan((0.0, 0.0, float(source_width), float(source_height)), size)
    # The largest centred region with the requested aspect ratio.
    box_width = min(float(source_width), source_height * width / height)
    box_height = min(float(source_height), source_width * height / width)
    left = (source_width - box_width) / 2
    top = (source_height - box_height) / 2
    if box_width >= width:
        size = (width, height)
    else:
        # The source is too small to fill the box: keep the region at its own size.
        size = (max(1, round(box_width)), max(1, round(box_height)))
    return _Plan((left, top, left + box_width, top + box_height), size)


def _still(image: Image.Image, upright: tuple[int, int], plan: _Plan) -> Thumbnail:
    source_format = image.format
    # JPEG can decode at 1/2, 1/4 or 1/8 scale, which is far cheaper for a large photo; the
    # scale factor is the same on both axes, so the orientation does not matter here. Other
    # formats ignore the hint.
    left, top, right, bottom = plan.box
    scale = max(plan.size[0] / (right - left), plan.size[1] / (bottom - top))
    image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    frame = _to_rgb(ImageOps.exif_transpose(image))
    resized = _resize(frame, upright, plan)
    buffer = BytesIO()
    if resized.mode == "RGBA" or source_format in _LOSSLESS_FORMATS:
        resized.save(buffer, format="PNG")
        content_type = "image/png"
    else:
        resized.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
        content_type = "image/jpeg"
    return Thumbnail(content_type, resized.width, resized.height, buffer.getvalue())


def _animated(image: Image.Image, frames: int, upright: tuple[int, int], plan: _Plan) -> Thumbnail:
    # A GIF without a NETSCAPE loop extension plays once; WebP's loop count 0 means forever.
    loop = int(image.info.get("loop", 1))
    resized: list[Image.Image] = []
    durations: list[int] = []
    for index in range(frames):
        image.seek(index)
        # Pillow gives each frame composited onto the canvas, so frames resize independently.
        frame = ImageOps.exif_transpose(image).convert("RGBA")
        resized.append(_resize(frame, upright, plan))
        durations.append(int(image.info.get("duration", 0)))
    buffer = BytesIO()
    resized[0].save(
        buffer,
        format="WEBP",
        save_all=True,
        append_images=resized[1:],
        duration=durations,
        loop=loop,
        quality=_WEBP_QUALITY,
    )
    return Thumbnail("image/webp", plan.size[0], plan.size[1], buffer.getvalue())


def _to_rgb(frame: Image.Image) -> Image.Image:
    """RGBA when the frame has any transparency, RGB otherwise."""
    if frame.mode.startswith("I;16") or frame.mode == "I":
        # 16-bit greyscale: converting directly would clip everything above 255 to white.
        frame = frame.convert("I").point(lambda value: value / 256)
    if frame.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in frame.info:
        return frame.convert("RGBA")
    return frame.convert("RGB")


def _resize(frame: Image.Image, upright: tuple[int, int], plan: _Plan) -> Image.Image:
    # The frame may have been decoded smaller than the header said (JPEG draft): map the box.
    x_scale = frame.width / upright[0]
    y_scale = frame.height / upright[1]
    left, top, right, bottom = plan.box
    box = (left * x_scale, top * y_scale, right * x_scale, bottom * y_scale)
    return frame.resize(plan.size, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
