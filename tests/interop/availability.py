"""Whether Synapse (the `matrix-synapse` PyPI package, a test-only dependency) is importable.

The differential tests skip with a reason when it is missing, unless HS_TEST_REQUIRE_INTEROP=1,
where a missing Synapse is a failure (CI sets it once the `interop` extra is installed).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

REQUIRE_INTEROP = os.environ.get("HS_TEST_REQUIRE_INTEROP") == "1"
SKIP_REASON = (
    "matrix-synapse is not installed (pip install -e '.[interop]'); "
    "set HS_TEST_REQUIRE_INTEROP=1 to make this a failure"
)


@contextlib.contextmanager
def keeping_pillow_settings() -> Iterator[None]:
    """Importing Synapse sets a process-wide Pillow flag (truncated images decode with a grey
    fill), which would change what every later test sees of a broken image."""
    from PIL import ImageFile

    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated


def require_synapse() -> None:
    """Skip the calling test module when Synapse cannot be imported (fail under
    HS_TEST_REQUIRE_INTEROP=1). Call at module level before importing the bridge."""
    with keeping_pillow_settings():
        if not REQUIRE_INTEROP:
            pytest.importorskip("synapse", reason=SKIP_REASON)
            return
        try:
            import synapse  # noqa: F401
        except ImportError as e:
            pytest.fail(
                f"HS_TEST_REQUIRE_INTEROP=1 but matrix-synapse cannot be imported: {e}",
                pytrace=False,
            )
