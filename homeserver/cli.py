"""The `homeserver` command: `generate-config` writes a config and signing key, `run` serves,
`register-user` creates an account (see homeserver/register_user.py), `media quarantine|
unquarantine|delete` are the operator's media operations, `reports list` shows what users
reported (C-S API "Reporting content").

Failures an operator must fix (bad config, unreachable database, unreadable key) end with exit
code 1 and one line on stderr naming the cause; argparse usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from homeserver.config import (
    DEFAULT_DATA_DIR,
    Config,
    ConfigError,
    ListenerConfig,
    default_config,
    is_valid_server_name,
    load_config,
    parse_config,
    render_config,
)
from homeserver.crypto.keys import generate_key_file
from homeserver.logging_setup import setup_logging

logger = logging.getLogger(__name__)


def _fail(message: str) -> int:
    # One line whatever the cause said, so scripts and service managers can show it as is.
    print(f"homeserver: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8008
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="homeserver", description="A Matrix homeserver.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = commands.add_parser(
        "generate-config",
        help="write a commented config file and a new signing key",
        description="Write a complete, commented config file and generate the server's "
        "signing key. Refuses to overwrite an existing config file.",
    )
    gen.add_argument(
        "--server-name",
        required=True,
        metavar="NAME",
        help="the domain in user IDs, such as example.org (cannot change later)",
    )
    gen.add_argument(
        "--config", required=True, type=Path, metavar="PATH", help="where to write the config file"
    )
    gen.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="where the database, media and signing key live "
        "(default: 'data' beside the config file)",
    )

    run = commands.add_parser(
        "run",
        help="start the server",
        description="Start the server. Without --config it serves 'localhost' on "
        "127.0.0.1:8008 from SQLite under ./data, creating everything on first start.",
    )
    run.add_argument("--config", type=Path, metavar="PATH", help="the config file to use")
    run.add_argument(
        "--listen",
        type=_listen_address,
        metavar="HOST:PORT",
        help="serve every resource on this one address instead of the configured "
        "listeners (for tests and quick trials)",
    )
    reg = commands.add_parser(
        "register-user",
        help="create an account (the server may be running)",
        description="Create an account in the configured database. Prompts for the password "
        "when --password is not given.",
    )
    reg.add_argument("--config", required=True, type=Path, metavar="PATH", help="the config file")
    reg.add_argument("user", metavar="USER", help="a localpart (alice) or @alice:server.name")
    reg.add_argument("--password", help="the password (prompted for when not given)")
    reg.add_argument("--admin", action="store_true", help="make the account a server admin")

    media = commands.add_parser(
        "media",
        help="quarantine or delete uploaded media (the server may be running)",
        description="Operator operations on one media of the content repository.",
    )
    actions = media.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (
        ("quarantine", "hide a media from every download (its file is kept)"),
        ("unquarantine", "serve a quarantined media again"),
        ("delete", "delete a media; its file goes once no other media has the same content"),
    ):
        sub = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument(
            "--config", required=True, type=Path, metavar="PATH", help="the config file"
        )
        sub.add_argument("uri", metavar="MXC_URI", help="the media, as mxc://server/media_id")

    reports = commands.add_parser(
        "reports",
        help="read the reports users made of events, rooms and users",
        description="The reports users made, for moderators.",
    )
    report_actions = reports.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = report_actions.add_parser(
        "list", help="the newest reports, one JSON object a line, newest first"
    )
    listing.add_argument(
        "--config", required=True, type=Path, metavar="PATH", help="the config file"
    )
    listing.add_argument(
        "--limit", type=int, default=100, metavar="N", help="at most N reports (default 100)"
    )
    return parser


def reports_command(config_path: Path, limit: int) -> int:
    import dataclasses
    import json

    from homeserver.storage import DatabaseUnavailable, SchemaTooNew, open_database
    from homeserver.storage.migrations import apply_migrations
    from homeserver.storage.stores.reports import ContentReport, ReportsStore

    try:
        config = load_config(config_path)
    except ConfigError as e:
        where = f" in {e.source}" if e.source else ""
        return _fail(f"configuration error{where}: {'; '.join(e.problems)}")
    if limit < 1:
        return _fail("--limit must be at least 1")

    async def read() -> list[ContentReport]:
        # Only reads: no single-writer claim, safe beside a running server.
        db = await open_database(config.database)
        try:
            await apply_migrations(db)
            return await ReportsStore(db).get_reports(limit)
        finally:
            await db.close()

    try:
        found = asyncio.run(read())
    except (DatabaseUnavailable, SchemaTooNew, OSError) as e:
        return _fail(f"cannot use the database: {e}")
    for report in found:
        print(json.dumps(dataclasses.asdict(report), ensure_ascii=False))
    return 0


def media_command(action: str, config_path: Path, uri: str) -> int:
    from homeserver.clock import SystemClock
    from homeserver.config import RateLimit
    from homeserver.ratelimit import RateLimiter
    from homeserver.storage import DatabaseUnavailable, SchemaTooNew, open_database
    from homeserver.storage.migrations import apply_migrations
    from homeserver.storage.stores.media import MediaStore
    from media_repo.filepaths import parse_mxc
    from media_repo.repository import MediaRepository
    from media_repo.storage_backend import LocalMediaStorage

    try:
        config = load_config(config_path)
    except ConfigError as e:
        where = f" in {e.source}" if e.source else ""
        return _fail(f"configuration error{where}: {'; '.join(e.problems)}")
    try:
        server_name, media_id = parse_mxc(uri)
    except ValueError as e:
        return _fail(str(e))

    async def apply() -> bool:
        # Like register-user: no single-writer claim, since media rows allocate no stream
        # position; safe beside a running server.
        db = await open_database(config.database)
        try:
            await apply_migrations(db)
            clock = SystemClock()
            repository = MediaRepository(
                MediaStore(db),
                LocalMediaStorage(config.media.path),
                config.server_name,
                config.media,
                clock,
                RateLimiter(RateLimit(0, 0), clock),
            )
            if action == "delete":
                return await repository.delete(server_name, media_id)
            return await repository.quarantine(server_name, media_id, action == "quarantine")
        finally:
            await db.close()

    try:
        found = asyncio.run(apply())
    except (DatabaseUnavailable, SchemaTooNew, OSError) as e:
        return _fail(f"cannot use the database: {e}")
    if not found:
        return _fail(f"no media {uri}")
    print(f"{action}d {uri}")  # quarantined, unquarantined, deleted
    return 0


def register_user_command(config_path: Path, user: str, password: str | None, admin: bool) -> int:
    import getpass

    from homeserver.register_user import RegisterUserError, register_user

    try:
        config = load_config(config_path)
    except ConfigError as e:
        where = f" in {e.source}" if e.source else ""
        return _fail(f"configuration error{where}: {'; '.join(e.problems)}")
    if password is None:
        if not sys.stdin.isatty():
            return _fail("no --password given and no terminal to prompt for one")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Confirm password: ") != password:
            return _fail("the passwords do not match")
    if not password:
        return _fail("the password must not be empty")
    try:
        user_id = asyncio.run(register_user(config, user, password, admin))
    except RegisterUserError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return 130
    print(f"registered {user_id}{' (admin)' if admin else ''}")
    return 0


def generate_config(server_name: str, config_path: Path, data_dir: Path | None) -> int:
    if not is_valid_server_name(server_name):
        return _fail(f"--server-name: {server_name!r} is not a valid server name (hostname[:port])")
    if config_path.exists():
        return _fail(f"{config_path} already exists; not overwriting it")
    config_dir = config_path.absolute().parent
    # Without --data-dir the paths stay relative ("data/..."), so the directory holding the
    # config and its data can be moved as a whole.
    data_dir_text = str(data_dir.expanduser().absolute()) if data_dir else str(DEFAULT_DATA_DIR)
    text = render_config(server_name, data_dir_text)
    try:
        # Parsing our own output first means a broken template can never be written out.
        config = parse_config(text, config_dir, str(config_path))
    except ConfigError as e:
        return _fail(f"cannot generate a valid config: {e}")

    key_path = config.signing_key_path
    try:
        if key_path.exists():
            key_message = f"kept the existing signing key {key_path}"
        else:
            key = generate_key_file(key_path)
            key_message = f"generated signing key {key_path} (ed25519:{key.version})"
        config_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: never overwrite, even if the file appeared since the check above. 0600: the
        # file may later hold database passwords and the registration secret.
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        return _fail(f"{config_path} already exists; not overwriting it")
    except OSError as e:
        return _fail(f"cannot write {e.filename or config_path}: {e.strerror or e}")
    print(f"wrote {config_path}")
    print(key_message)
    print(f"start the server with: homeserver run --config {config_path}")
    return 0


def run(config_path: Path | None, listen: tuple[str, int] | None) -> int:
    try:
        config: Config = load_config(config_path) if config_path else default_config()
    except ConfigError as e:
        where = f" in {e.source}" if e.source else ""
        return _fail(f"configuration error{where}: {'; '.join(e.problems)}")
    if listen is not None:
        host, port = listen
        config.listeners = [ListenerConfig(port=port, bind_addresses=[host])]
    setup_logging(config.log_level)
    if config_path is None:
        logger.info(
            "no --config given: serving %s from %s",
            config.server_name,
            config.signing_key_path.parent,
        )

    # Imported here so that generate-config works without the server's heavier dependencies.
    from homeserver.app import StartupError, run_server

    try:
        with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
            runner.run(run_server(config))
    except StartupError as e:
        return _fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    return 0


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux and macOS): the server spends much of its time in
    the event loop's socket and thread hand-off code, which uvloop runs in C."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "generate-config":
        return generate_config(args.server_name, args.config, args.data_dir)
    if args.command == "register-user":
        return register_user_command(args.config, args.user, args.password, args.admin)
    if args.command == "media":
        return media_command(args.action, args.config, args.uri)
    if args.command == "reports":
        return reports_command(args.config, args.limit)
    return run(args.config, args.listen)
