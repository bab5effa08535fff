"""`homeserver register-user`, run as a real process: accounts created in the configured
database (also while the server runs, which then logs them in), and one-line failures."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from tests.unit.test_cli import (
    assert_one_line_failure,
    cli_env,
    free_port,
    generate,
    homeserver,
)


def users(tmp_path: Path) -> dict[str, tuple[str, bool]]:
    with sqlite3.connect(tmp_path / "data" / "homeserver.db") as db:
        rows = db.execute("SELECT user_id, password_hash, is_admin FROM users").fetchall()
    return {r[0]: (r[1], bool(r[2])) for r in rows}


def register(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return homeserver(
        "register-user", "--config", str(tmp_path / "homeserver.yaml"), *args, cwd=tmp_path
    )


def test_register_user_creates_accounts(tmp_path: Path) -> None:
    assert generate(tmp_path).returncode == 0
    done = register(tmp_path, "alice", "--password", "s3cret")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "registered @alice:example.org"
    admin = register(tmp_path, "@bob:example.org", "--password", "pw", "--admin")
    assert admin.returncode == 0, admin.stderr
    assert admin.stdout.strip() == "registered @bob:example.org (admin)"
    accounts = users(tmp_path)
    assert set(accounts) == {"@alice:example.org", "@bob:example.org"}
    alice_hash, alice_admin = accounts["@alice:example.org"]
    assert PasswordHasher().verify(alice_hash, "s3cret") and not alice_admin
    assert accounts["@bob:example.org"][1]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["Alice!", "--password", "pw"], "invalid user name"),
        (["@carol:elsewhere.org", "--password", "pw"], "not a user ID on this server"),
        (["carol"], "no --password given"),
        (["carol", "--password", ""], "must not be empty"),
    ],
)
def test_register_user_failures(tmp_path: Path, args: list[str], needle: str) -> None:
    assert generate(tmp_path).returncode == 0
    assert_one_line_failure(register(tmp_path, *args), needle)


def test_register_user_refuses_a_taken_name_and_a_bad_config(tmp_path: Path) -> None:
    assert generate(tmp_path).returncode == 0
    assert register(tmp_path, "dave", "--password", "pw").returncode == 0
    assert_one_line_failure(register(tmp_path, "dave", "--password", "pw"), "already exists")
    missing = homeserver(
        "register-user", "--config", str(tmp_path / "nope.yaml"), "dave", cwd=tmp_path
    )
    assert_one_line_failure(missing, "configuration error")
    usage = homeserver("register-user", "dave", cwd=tmp_path)
    assert usage.returncode == 2


def _post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_register_user_while_the_server_runs(tmp_path: Path) -> None:
    assert generate(tmp_path).returncode == 0
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "homeserver",
            "run",
            "--config",
            str(tmp_path / "homeserver.yaml"),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/_matrix/client"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited early: {process.communicate()[1]}")
            try:
                urllib.request.urlopen(f"{base}/versions", timeout=5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not answer within 30 s")
                time.sleep(0.1)
        done = register(tmp_path, "erin", "--password", "pw")
        assert done.returncode == 0, done.stderr
        login = _post_json(
            f"{base}/v3/login",
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "erin"},
                "password": "pw",
            },
        )
        assert login["user_id"] == "@erin:example.org" and login["access_token"]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
