"""The media settings of the config file, and the helpers that name media and their files."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.config import ConfigError, MediaConfig, RateLimit, parse_config
from media_repo.filepaths import content_path, is_valid_upload_name, new_media_id, parse_mxc
from media_repo.routes import content_disposition


def test_media_settings(tmp_path: Path) -> None:
    config = parse_config(
        "server_name: example.org\n"
        "media:\n"
        "  max_upload_size: 100M\n"
        "  pending_upload_lifetime_s: 3600\n"
        "  max_pending_uploads: 3\n"
        "  max_image_pixels: 1000000\n"
        "limits:\n"
        "  media_uploads: {per_second: 0.5, burst: 4}\n",
        tmp_path,
    )
    assert config.media.max_upload_size == 100 * 1024 * 1024
    assert config.media.pending_upload_lifetime_s == 3600
    assert config.media.max_pending_uploads == 3
    assert config.media.max_image_pixels == 1_000_000
    assert config.limits.media_uploads == RateLimit(0.5, 4)
    defaults = parse_config("server_name: example.org\n", tmp_path)
    assert defaults.media.pending_upload_lifetime_s == MediaConfig().pending_upload_lifetime_s
    assert defaults.media.pending_upload_lifetime_s == 24 * 60 * 60  # spec's recommendation


def test_bad_media_settings_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(
            "server_name: example.org\n"
            "media: {max_pending_uploads: 0, max_image_pixels: many, pending_upload_lifetime: 9}\n"
            "limits: {media_uploads: {per_second: -1}}\n",
            tmp_path,
        )
    problems = " | ".join(raised.value.problems)
    assert "media.max_pending_uploads: expected an integer above zero" in problems
    assert "media.max_image_pixels: expected an integer above zero" in problems
    assert "media.pending_upload_lifetime: unknown key" in problems
    assert "limits.media_uploads.per_second: expected a number" in problems


def test_mxc_uris() -> None:
    assert parse_mxc("mxc://example.org/abc_DEF-123") == ("example.org", "abc_DEF-123")
    assert parse_mxc("mxc://[::1]:8448/x") == ("[::1]:8448", "x")
    for bad in (
        "https://example.org/abc",
        "mxc://example.org",
        "mxc://example.org/",
        "mxc://example.org/../etc",
        "mxc://example.org/a/b",
        "mxc://exa mple.org/abc",
        "mxc:///abc",
        "mxc://example.org/" + "a" * 256,
    ):
        with pytest.raises(ValueError):
            parse_mxc(bad)
    ids = {new_media_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(parse_mxc(f"mxc://example.org/{i}")[1] == i for i in ids)


def test_content_paths_come_from_hashes_only(tmp_path: Path) -> None:
    sha = "ab" + "cd" + "0" * 60
    assert content_path(tmp_path, sha) == tmp_path / "ab" / "cd" / sha
    for bad in ("../" + "0" * 61, "AB" + "0" * 62, "0" * 63, "0" * 64 + "/x"):
        with pytest.raises(ValueError):
            content_path(tmp_path, bad)


def test_upload_names() -> None:
    assert is_valid_upload_name("photo 1 (été).jpg")
    assert is_valid_upload_name("../../etc/passwd")  # only ever echoed, never a path
    for bad in ("", "a\x00b", "a\r\nSet-Cookie: x", "tab\there", "x" * 256):
        assert not is_valid_upload_name(bad)


def test_content_disposition() -> None:
    assert content_disposition("image/png", None) == "inline"
    assert content_disposition("Image/PNG; foo=bar", "a.png") == 'inline; filename="a.png"'
    assert content_disposition("text/html", "a.html") == 'attachment; filename="a.html"'
    assert content_disposition("image/svg+xml", None) == "attachment"
    assert content_disposition("", None) == "attachment"
    assert content_disposition("text/plain", "back\\slash") == (
        "inline; filename*=utf-8''back%5Cslash"
    )
    assert content_disposition("audio/ogg", "日本.ogg") == (
        "inline; filename*=utf-8''%E6%97%A5%E6%9C%AC.ogg"
    )
