"""The `homeserver` command, run as a real process (`python -m homeserver`): generate-config,
run with no config, and one-line failures without tracebacks."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from homeserver.config import load_config
from homeserver.crypto.keys import generate_key_file

REPO = Path(__file__).resolve().parents[2]
KEY_LINE = re.compile(r"^ed25519 a_[A-Za-z0-9_]{4} [A-Za-z0-9+/]{43}$")


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    # The checkout may not be pip-installed in the interpreter running the tests.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def homeserver(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "homeserver", *args],
        check=False,
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def generate(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return homeserver(
        "generate-config",
        "--server-name",
        "example.org",
        "--config",
        str(tmp_path / "homeserver.yaml"),
        *extra,
        cwd=tmp_path,
    )


def test_generate_config_writes_config_and_key(tmp_path: Path) -> None:
    result = generate(tmp_path)
    assert result.returncode == 0, result.stderr
    config_path = tmp_path / "homeserver.yaml"
    text = config_path.read_text()
    raw = yaml.safe_load(text)
    for section in (
        "server_name",
        "listeners",
        "database",
        "media",
        "signing_key_path",
        "old_signing_keys",
        "registration",
        "redis",
        "log_level",
    ):
        assert section in raw
    assert text.count("\n#") > 10  # commented, like config.sample.yaml
    assert config_path.stat().st_mode & 0o077 == 0

    config = load_config(config_path)
    assert config.server_name == "example.org"
    assert config.database.path == tmp_path / "data" / "homeserver.db"
    key_path = tmp_path / "data" / "example.org.signing.key"
    assert config.signing_key_path == key_path
    lines = key_path.read_text().splitlines()
    assert len(lines) == 1 and KEY_LINE.match(lines[0]), lines
    assert lines[0].split()[1] in result.stdout


def test_generate_config_with_data_dir(tmp_path: Path) -> None:
    result = generate(tmp_path, "--data-dir", "state")
    assert result.returncode == 0, result.stderr
    config = load_config(tmp_path / "homeserver.yaml")
    assert config.database.path == tmp_path / "state" / "homeserver.db"
    assert config.media.path == tmp_path / "state" / "media"
    assert (tmp_path / "state" / "example.org.signing.key").exists()


def test_generate_config_refuses_to_overwrite(tmp_path: Path) -> None:
    assert generate(tmp_path).returncode == 0
    config_path = tmp_path / "homeserver.yaml"
    key_path = tmp_path / "data" / "example.org.signing.key"
    before = (config_path.read_text(), key_path.read_text())
    result = generate(tmp_path)
    assert_one_line_failure(result, str(config_path), "already exists")
    assert (config_path.read_text(), key_path.read_text()) == before


def test_generate_config_keeps_an_existing_key(tmp_path: Path) -> None:
    key_path = tmp_path / "data" / "example.org.signing.key"
    generate_key_file(key_path)
    before = key_path.read_text()
    result = generate(tmp_path)
    assert result.returncode == 0, result.stderr
    assert key_path.read_text() == before


def test_generate_config_rejects_an_invalid_server_name(tmp_path: Path) -> None:
    result = homeserver(
        "generate-config",
        "--server-name",
        "not valid",
        "--config",
        str(tmp_path / "c.yaml"),
        cwd=tmp_path,
    )
    assert_one_line_failure(result, "--server-name")
    assert not (tmp_path / "c.yaml").exists()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["generate-config", "--config", "x.yaml"],
        ["run", "--listen", "nonsense"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    result = homeserver(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_run_with_a_bad_config_fails_in_one_line(tmp_path: Path) -> None:
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(
        "server_name: example.org\ndatabase:\n  enigne: sqlite\nlisteners: [{port: eighty}]\n"
    )
    result = homeserver("run", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(
        result,
        "database.enigne: unknown key",
        "listeners[0].port: expected an integer",
        str(config_path),
    )
    assert not (tmp_path / "data").exists()


def test_run_with_a_missing_config_fails_in_one_line(tmp_path: Path) -> None:
    result = homeserver("run", "--config", str(tmp_path / "nope.yaml"), cwd=tmp_path)
    assert_one_line_failure(result, "nope.yaml", "No such file")


def test_run_with_an_unreadable_key_file_fails_in_one_line(tmp_path: Path) -> None:
    key_path = tmp_path / "broken.key"
    key_path.write_text("this is not a key\n")
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(f"server_name: example.org\nsigning_key_path: {key_path}\n")
    result = homeserver("run", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, str(key_path))


def test_run_with_unreachable_postgres_fails_in_one_line(tmp_path: Path) -> None:
    # Port 1 refuses connections at once; the key exists so nothing else is logged first.
    generate_key_file(tmp_path / "signing.key")
    config_path = tmp_path / "homeserver.yaml"
    config_path.write_text(
        "server_name: example.org\nsigning_key_path: signing.key\n"
        "database: {engine: postgres, host: 127.0.0.1, port: 1, user: postgres, database: x}\n"
    )
    result = homeserver("run", "--config", str(config_path), cwd=tmp_path)
    assert_one_line_failure(result, "database", "127.0.0.1:1")


def test_run_fails_in_one_line_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        generate_key_file(tmp_path / "data" / "localhost.signing.key")
        (tmp_path / "hs.yaml").write_text("server_name: localhost\nlog_level: WARNING\n")
        result = homeserver(
            "run", "--config", "hs.yaml", "--listen", f"127.0.0.1:{port}", cwd=tmp_path
        )
    assert_one_line_failure(result, f"127.0.0.1:{port}")


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def test_run_without_config_serves_localhost_and_creates_data(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "homeserver", "run", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        body = None
        while body is None:
            if process.poll() is not None:
                pytest.fail(f"server exited early: {process.communicate()[1]}")
            try:
                body = get_json(f"http://127.0.0.1:{port}/_matrix/key/v2/server")
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not answer within 30 s")
                time.sleep(0.1)
        assert body["server_name"] == "localhost"
        data = tmp_path / "data"
        key_lines = (data / "localhost.signing.key").read_text().splitlines()
        assert len(key_lines) == 1 and KEY_LINE.match(key_lines[0])
        assert list(body["verify_keys"]) == [  # type: ignore[call-overload]
            "ed25519:" + key_lines[0].split()[1]
        ]
        assert (data / "homeserver.db").exists()
        assert (data / "media").is_dir()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
