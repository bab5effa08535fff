"""`homeserver media quarantine|unquarantine|delete`, run as a real process beside a running
server, on the server's own database (both engines) and media directory."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from homeserver.storage.database import Database
from tests.conftest import POSTGRES_DSN
from tests.helpers.rest import User
from tests.media_repo.conftest import MediaHarness, download_path, thumbnail_path
from tests.media_repo.test_thumbnails import image_bytes
from tests.unit.test_cli import assert_one_line_failure, homeserver


async def write_config(tmp_path: Path, database: Database, media_path: Path) -> Path:
    if database.dialect == "sqlite":
        db = {"engine": "sqlite", "path": str(tmp_path / "homeserver.db")}
    else:
        schema = await database.fetchval("SELECT current_schema()")
        sep = "&" if "?" in POSTGRES_DSN else "?"
        db = {"engine": "postgres", "dsn": f"{POSTGRES_DSN}{sep}search_path={schema}"}
    config = {
        "server_name": "test.local",
        "signing_key_path": str(tmp_path / "unused.key"),
        "database": db,
        "media": {"path": str(media_path)},
    }
    path = tmp_path / "homeserver.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


async def media_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        homeserver, "media", *args[:1], "--config", str(config), *args[1:], cwd=config.parent
    )


async def status(harness: MediaHarness, user: User, uri: str) -> int:
    return (await harness.client.get(download_path(uri), headers=user.headers)).status


async def test_quarantine_and_delete_from_the_command_line(
    harness: MediaHarness, alice: User, database: Database, tmp_path: Path
) -> None:
    config = await write_config(tmp_path, database, harness.config.path)
    first = await harness.upload(alice, b"shared content")
    second = await harness.upload(alice, b"shared content")
    image = await harness.upload(alice, image_bytes("PNG", (200, 200)), "image/png")
    thumbnail = await harness.client.get(
        thumbnail_path(image), headers=alice.headers, params={"width": "32", "height": "32"}
    )
    assert thumbnail.status == 200
    assert len(harness.files()) > 2  # two contents and the image's thumbnails

    done = await media_cli(config, "quarantine", first)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"quarantined {first}"
    assert await status(harness, alice, first) == 404
    assert await status(harness, alice, second) == 200  # same content, other media
    done = await media_cli(config, "unquarantine", first)
    assert done.returncode == 0, done.stderr
    assert await status(harness, alice, first) == 200

    done = await media_cli(config, "delete", first)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"deleted {first}"
    assert await status(harness, alice, first) == 404
    assert await harness.download(alice, second) == b"shared content"  # its file is kept
    assert (await media_cli(config, "delete", second)).returncode == 0
    assert (await media_cli(config, "delete", image)).returncode == 0
    assert harness.files() == []  # contents and thumbnails gone with their last media

    assert_one_line_failure(await media_cli(config, "delete", second), "no media")
    assert_one_line_failure(
        await media_cli(config, "quarantine", "mxc://test.local/../../etc"), "media ID"
    )
    assert_one_line_failure(await media_cli(config, "delete", "https://x/y"), "not an mxc")
