"""load_config(): defaults, relative paths, and every problem reported in one ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.config import (
    Config,
    ConfigError,
    DatabaseConfig,
    default_config,
    is_valid_server_name,
    load_config,
    parse_config,
    parse_size,
    render_config,
)

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "homeserver.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems


def test_default_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = default_config()
    assert config.server_name == "localhost"
    assert len(config.listeners) == 1
    assert config.listeners[0].port == 8008
    assert config.listeners[0].bind_addresses == ["127.0.0.1"]
    assert config.listeners[0].resources == ["client", "federation", "media"]
    assert config.database.engine == "sqlite"
    assert config.database.path == tmp_path / "data" / "homeserver.db"
    assert config.media.path == tmp_path / "data" / "media"
    assert config.signing_key_path == tmp_path / "data" / "localhost.signing.key"
    assert config.media.max_upload_size == 50 * 1024 * 1024
    assert config.registration.enabled is False
    assert config.redis.enabled is False


def test_minimal_file_takes_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "server_name: example.org\n"))
    assert isinstance(config, Config)
    assert config.server_name == "example.org"
    assert config.listeners[0].port == 8008
    assert config.database.engine == "sqlite"
    assert config.database.path == tmp_path / "data" / "homeserver.db"
    assert config.media.path == tmp_path / "data" / "media"
    assert config.signing_key_path == tmp_path / "data" / "example.org.signing.key"
    assert config.media.allow_legacy_unauthenticated is False
    assert config.old_signing_keys == {}
    assert config.registration.requires_token is False
    assert config.registration.shared_secret is None
    assert config.redis.url == "redis://127.0.0.1:6379"
    assert config.log_level == "INFO"
    assert config.public_baseurl is None


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(
        tmp_path,
        "server_name: example.org\n"
        "database: {path: db/hs.db}\n"
        "media: {path: ../shared/media}\n"
        "signing_key_path: keys/signing.key\n"
        f"listeners: [{{port: 8448, tls: true, tls_certificate_path: {tmp_path}/c.pem,"
        " tls_private_key_path: k.pem}]\n",
        name="etc/homeserver.yaml",
    )
    config = load_config(path)
    etc = tmp_path / "etc"
    assert config.database.path == etc / "db" / "hs.db"
    assert config.media.path == etc / "../shared/media"
    assert config.signing_key_path == etc / "keys" / "signing.key"
    assert config.listeners[0].tls_certificate_path == tmp_path / "c.pem"  # absolute: as is
    assert config.listeners[0].tls_private_key_path == etc / "k.pem"


def test_relative_config_path_is_resolved_from_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "server_name: example.org\ndatabase: {path: hs.db}\n", name="conf/hs.yaml")
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/hs.yaml")
    assert config.database.path == tmp_path / "conf" / "hs.db"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = """
listners: []
database:
  enigne: postgres
  pool_max: "ten"
listeners:
  - port: "8008"
    bind_addresses: 127.0.0.1
    resources: [client, gopher]
    tls: "no"
media:
  max_upload_size: lots
registration:
  enabled: yes please
redis:
  enabled: 1
log_level: chatty
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    problems = info.value.problems
    expected = [
        "server_name: required",
        "listners: unknown key (did you mean 'listeners'?)",
        "database.enigne: unknown key (did you mean 'engine'?)",
        "database.pool_max: expected an integer, got a string",
        "listeners[0].port: expected an integer, got a string",
        "listeners[0].bind_addresses: expected a list of strings, got a string",
        "listeners[0].resources: unknown resource 'gopher'",
        "listeners[0].tls: expected a boolean (true or false), got a string",
        "media.max_upload_size: expected a size",
        "registration.enabled: expected a boolean (true or false), got a string",
        "redis.enabled: expected a boolean (true or false), got an integer",
        "log_level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected), problems
    # One message, one line, naming every problem.
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "homeserver.yaml") in message
    for want in expected:
        assert want in message


def test_invalid_server_name_reported_with_other_problems(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "server_name: 'not a name'\nfoo: 1\n")
    assert problems[0].startswith("server_name: 'not a name' is not a valid server name")
    assert problems[1] == "foo: unknown key"


def test_wrong_type_for_server_name_and_sections(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "server_name: 42\ndatabase: sqlite\nlisteners: {}\n")
    assert "server_name: expected a string, got an integer" in problems
    assert "database: expected a mapping, got a string" in problems
    assert "listeners: expected a list, got a mapping" in problems


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "server_name: example.org\n"
        "database: {engine: postgres, database: hs, password: [hunter2secret]}\n",
    )
    assert problems == ["database.password: expected a string, got a list"]
    config = load_config(
        write(
            tmp_path,
            "server_name: example.org\n"
            "database: {engine: postgres, database: hs, password: hunter2secret}\n"
            "registration: {shared_secret: s3cr3tvalue}\n",
            name="ok.yaml",
        )
    )
    assert "hunter2secret" not in repr(config)
    assert "s3cr3tvalue" not in repr(config)


@pytest.mark.parametrize(
    "database, problem",
    [
        ("{engine: mysql}", "database.engine: expected one of sqlite, postgres, got 'mysql'"),
        ("{engine: postgres}", "database.database: required with engine: postgres"),
        ("{dsn: 'postgresql://x/y'}", "database.dsn: only used with engine: postgres"),
        (
            "{engine: postgres, dsn: 'postgresql://h/d', host: h}",
            "database.dsn: give either dsn or host",
        ),
        ("{pool_min: 5, pool_max: 2}", "database.pool_max: need 1 <= pool_min <= pool_max"),
    ],
)
def test_database_section_problems(tmp_path: Path, database: str, problem: str) -> None:
    problems = problems_of(tmp_path, f"server_name: example.org\ndatabase: {database}\n")
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_postgres_parts(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "server_name: example.org\n"
            "database:\n  engine: postgres\n  host: db.internal\n  port: 5433\n"
            "  user: hs\n  password: 'p@ss/word'\n  database: homeserver\n"
            "  pool_min: 2\n  pool_max: 20\n",
        )
    )
    db = config.database
    assert (db.engine, db.host, db.port, db.user, db.database) == (
        "postgres",
        "db.internal",
        5433,
        "hs",
        "homeserver",
    )
    assert (db.pool_min, db.pool_max) == (2, 20)
    assert db.dsn is None
    assert db.postgres_dsn() == "postgresql://hs:p%40ss%2Fword@db.internal:5433/homeserver"


def test_postgres_dsn_building() -> None:
    assert DatabaseConfig(engine="postgres", dsn="postgresql://a@b/c").postgres_dsn() == (
        "postgresql://a@b/c"
    )
    assert DatabaseConfig(engine="postgres", database="d").postgres_dsn() == (
        "postgresql://127.0.0.1:5432/d"
    )
    assert DatabaseConfig(engine="postgres", host="::1", user="u", database="d").postgres_dsn() == (
        "postgresql://u@[::1]:5432/d"
    )
    unix = DatabaseConfig(engine="postgres", host="/var/run/postgresql", user="u", database="d")
    assert unix.postgres_dsn() == "postgresql://u@/d?host=%2Fvar%2Frun%2Fpostgresql&port=5432"


def test_media_and_registration_and_redis(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "server_name: 'example.org:8448'\n"
            "media: {max_upload_size: 10M, allow_legacy_unauthenticated: true}\n"
            "registration: {enabled: true, requires_token: true, shared_secret: xyz}\n"
            "redis: {enabled: true, url: 'redis://redis:6379/1'}\n"
            "log_level: debug\n"
            "public_baseurl: https://matrix.example.org\n",
        )
    )
    assert config.server_name == "example.org:8448"
    assert config.signing_key_path.name == "example.org:8448.signing.key"
    assert config.media.max_upload_size == 10 * 1024 * 1024
    assert config.media.allow_legacy_unauthenticated is True
    assert (config.registration.enabled, config.registration.requires_token) == (True, True)
    assert config.registration.shared_secret == "xyz"
    assert (config.redis.enabled, config.redis.url) == (True, "redis://redis:6379/1")
    assert config.log_level == "DEBUG"
    assert config.public_baseurl == "https://matrix.example.org/"


def test_old_signing_keys(tmp_path: Path) -> None:
    key = "l/O9hxMVKB6Lg+3Hqf0FQQZhVESQcMzbPN1Cz2nM3og"
    config = load_config(
        write(
            tmp_path,
            f"server_name: example.org\nold_signing_keys:\n"
            f"  'ed25519:a_Old1': {{key: '{key}', expired_ts: 1700000000000}}\n",
        )
    )
    old = config.old_signing_keys["ed25519:a_Old1"]
    assert (old.key, old.expired_ts) == (key, 1700000000000)

    problems = problems_of(
        tmp_path,
        "server_name: example.org\nold_signing_keys:\n  'rsa:x': {key: 'abc', extra: 1}\n",
    )
    assert problems == [
        "old_signing_keys.rsa:x: expected a key ID such as ed25519:a_AbCd",
        "old_signing_keys.rsa:x.key: expected an unpadded base64 Ed25519 public key",
        "old_signing_keys.rsa:x.expired_ts: required (milliseconds since the epoch)",
        "old_signing_keys.rsa:x.extra: unknown key",
    ]


def test_federation(tmp_path: Path) -> None:
    key = "l/O9hxMVKB6Lg+3Hqf0FQQZhVESQcMzbPN1Cz2nM3og"
    config = load_config(
        write(
            tmp_path,
            "server_name: example.org\nfederation:\n"
            "  allowed_ip_ranges: ['127.0.0.0/8', '::1']\n"
            "  tls_ca_file: ca.pem\n  tls_verify: false\n"
            "  trusted_key_servers:\n"
            f"    - {{server_name: notary.example, verify_keys: {{'ed25519:k': '{key}'}}}}\n",
        )
    )
    federation = config.federation
    assert federation.allowed_ip_ranges == ["127.0.0.0/8", "::1"]
    assert federation.tls_ca_file == tmp_path / "ca.pem"
    assert federation.tls_verify is False
    assert [(t.server_name, t.verify_keys) for t in federation.trusted_key_servers] == [
        ("notary.example", {"ed25519:k": key})
    ]
    # Private addresses are refused unless allowed; nothing is trusted unless named.
    defaults = load_config(write(tmp_path, "server_name: example.org\n")).federation
    assert (defaults.allowed_ip_ranges, defaults.trusted_key_servers) == ([], [])
    assert defaults.tls_verify is True

    problems = problems_of(
        tmp_path,
        "server_name: example.org\nfederation:\n  allowed_ip_ranges: [nope]\n"
        "  trusted_key_servers: [5, {server_name: 'bad name!', verify_keys: {x: y}}]\n",
    )
    servers = "federation.trusted_key_servers"
    assert problems == [
        "federation.allowed_ip_ranges: 'nope' is not an IP address or CIDR range",
        f"{servers}[0]: expected a mapping with server_name and verify_keys",
        f"{servers}[1].server_name: required: a server name (hostname[:port])",
        f"{servers}[1].verify_keys.x: expected ed25519:<id>: <base64 public key>",
    ]


def test_listener_problems(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "server_name: example.org\n"
        "listeners:\n"
        "  - {port: 70000, bind_addresses: []}\n"
        "  - {port: 8008, tls: true}\n"
        "  - {port: 8008}\n"
        "  - not a mapping\n",
    )
    assert problems == [
        "listeners[0].port: expected a port number from 1 to 65535, got 70000",
        "listeners[0].bind_addresses: expected at least one address",
        "listeners[1].tls: true needs tls_certificate_path and tls_private_key_path",
        "listeners[3]: expected a mapping, got a string",
        "listeners: port 8008 is used by more than one listener",
    ]
    assert problems_of(tmp_path, "server_name: a.b\nlisteners: []\n") == [
        "listeners: expected at least one listener"
    ]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "server_name: example.org\ndatabase: [unclosed\n")
    assert len(problems) == 1
    assert problems[0].startswith("not valid YAML at line 3")


def test_non_mapping_and_empty_files(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "- a\n- b\n") == [
        "expected a mapping at the top level, got a list"
    ]
    assert problems_of(tmp_path, "") == [
        "server_name: required (the domain in user IDs, such as example.org)"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert (
        str(info.value)
        == f"{tmp_path / 'nope.yaml'}: cannot read the config file: No such file or directory"
    )


@pytest.mark.parametrize(
    "name, valid",
    [
        ("localhost", True),
        ("example.org", True),
        ("matrix.example.org:8448", True),
        ("1.2.3.4", True),
        ("1.2.3.4:1234", True),
        ("[1234:5678::abcd]", True),
        ("[1234:5678::abcd]:5678", True),
        ("", False),
        ("exa mple.org", False),
        ("example.org:", False),
        ("example.org:0", False),
        ("example.org:65536", False),
        ("example.org:123456", False),
        ("[::1", False),
        ("user@example.org", False),
        ("a" * 256, False),
    ],
)
def test_server_names(name: str, valid: bool) -> None:
    assert is_valid_server_name(name) is valid


def test_parse_size() -> None:
    assert parse_size(1234) == 1234
    assert parse_size("1234") == 1234
    assert parse_size("50M") == 50 * 1024 * 1024
    assert parse_size("10k") == 10 * 1024
    assert parse_size("1G") == 1024**3
    assert parse_size("2MB") == 2 * 1024 * 1024
    with pytest.raises(ValueError):
        parse_size("5 bananas")


def test_rendered_config_loads_and_is_complete(tmp_path: Path) -> None:
    text = render_config("example.org")
    config = parse_config(text, tmp_path)
    assert config.server_name == "example.org"
    assert config.database.path == tmp_path / "data" / "homeserver.db"
    assert config.signing_key_path == tmp_path / "data" / "example.org.signing.key"
    for section in (
        "server_name:",
        "listeners:",
        "database:",
        "media:",
        "signing_key_path:",
        "old_signing_keys:",
        "registration:",
        "redis:",
        "federation:",
        "log_level:",
        "public_baseurl:",
    ):
        assert section in text
    # Absolute data directories and names that need quoting survive the round trip.
    odd = tmp_path / "dir with 'quotes' and: colons"
    config = parse_config(render_config("[::1]:8448", str(odd)), tmp_path)
    assert config.server_name == "[::1]:8448"
    assert config.media.path == odd / "media"


def test_sample_config_is_the_rendered_template() -> None:
    """config.sample.yaml documents exactly what generate-config writes."""
    assert (REPO / "config.sample.yaml").read_text() == render_config("example.org")
