"""Server configuration: one dataclass per section, read from YAML by `load_config()`.

`load_config()` collects every problem (unknown key, wrong type, bad value) and raises one
`ConfigError` naming each by its dotted path, so an operator fixes the file in one pass.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import yaml
from unpaddedbase64 import decode_base64

from homeserver import identifiers

RESOURCES = ("client", "federation", "media")
ENGINES = ("sqlite", "postgres")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_DATA_DIR = Path("data")
DEFAULT_MAX_UPLOAD_SIZE = 50 * 1024 * 1024

# Keys that only mean something to PostgreSQL; giving them with engine sqlite is almost always
# a forgotten `engine: postgres`, so it is reported rather than ignored.
_POSTGRES_ONLY = ("dsn", "host", "port", "user", "password", "database")


class ConfigError(Exception):
    """Every problem found in a config file; str() is one line, `problems` lists them."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(problems))


@dataclass
class ListenerConfig:
    port: int = 8008
    bind_addresses: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    tls: bool = False
    tls_certificate_path: Path | None = None
    tls_private_key_path: Path | None = None
    resources: list[str] = field(default_factory=lambda: list(RESOURCES))


@dataclass
class DatabaseConfig:
    engine: str = "sqlite"
    path: Path = DEFAULT_DATA_DIR / "homeserver.db"
    # repr=False: a DSN or password must never reach a log line through a dataclass repr.
    dsn: str | None = field(default=None, repr=False)
    host: str = "127.0.0.1"
    port: int = 5432
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    pool_min: int = 1
    pool_max: int = 10

    def postgres_dsn(self) -> str:
        """`dsn` if given, else a postgresql:// URL built from host/port/user/password/database."""
        if self.dsn:
            return self.dsn
        auth = ""
        if self.user:
            auth = quote(self.user, safe="")
            if self.password:
                auth += ":" + quote(self.password, safe="")
            auth += "@"
        db = "/" + quote(self.database, safe="") if self.database else ""
        if self.host.startswith("/"):
            # A Unix socket directory goes in the query string; libpq and asyncpg accept that.
            return (
                f"postgresql://{auth}{db or '/'}?host={quote(self.host, safe='')}&port={self.port}"
            )
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{auth}{host}:{self.port}{db}"


@dataclass
class MediaConfig:
    path: Path = DEFAULT_DATA_DIR / "media"
    max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE
    allow_legacy_unauthenticated: bool = False
    # Asynchronous uploads (POST /media/v1/create): how long a created ID waits for its
    # content (the spec recommends 24 hours), and how many may wait at once per user.
    pending_upload_lifetime_s: int = 24 * 60 * 60
    max_pending_uploads: int = 10
    # Images with more pixels are not thumbnailed (decompression bombs).
    max_image_pixels: int = 32_000_000


@dataclass(frozen=True)
class OldSigningKey:
    key: str  # unpadded base64 Ed25519 verify key
    expired_ts: int


@dataclass
class RegistrationConfig:
    enabled: bool = False
    requires_token: bool = False
    shared_secret: str | None = field(default=None, repr=False)


@dataclass
class RateLimit:
    """A token bucket: `per_second` sustained, up to `burst` at once. 0 per_second: no limit."""

    per_second: float
    burst: int


@dataclass
class SpamLimitsConfig:
    """Limits on what one message from a local user may carry (handlers/moderation.py)."""

    enabled: bool = False
    max_mentions: int = 10
    max_links: int = 5


@dataclass
class LimitsConfig:
    # The largest client API request body; media uploads have media.max_upload_size.
    max_request_body_size: int = 1024 * 1024
    messages: RateLimit = field(default_factory=lambda: RateLimit(10.0, 50))
    login_ip: RateLimit = field(default_factory=lambda: RateLimit(0.2, 10))
    login_account: RateLimit = field(default_factory=lambda: RateLimit(0.1, 5))
    registration_ip: RateLimit = field(default_factory=lambda: RateLimit(0.1, 5))
    media_uploads: RateLimit = field(default_factory=lambda: RateLimit(1.0, 20))
    # Address validation emails (POST /account/3pid/email/requestToken), per client IP
    # address and per email address: anyone may ask, so this bounds what we mail a stranger.
    threepid_validation: RateLimit = field(default_factory=lambda: RateLimit(0.003, 5))
    # Local users cannot join a room with this many joined members; None: no limit.
    max_joined_members_per_room: int | None = None
    spam: SpamLimitsConfig = field(default_factory=SpamLimitsConfig)


@dataclass
class UserDirectoryConfig:
    # Every local account in search results, not only users sharing a room with the
    # searcher or in public rooms.
    search_all_users: bool = False


@dataclass(frozen=True)
class TrustedKeyServer:
    """A notary (S-S API "Querying Keys Through Another Server") and the keys it signs with."""

    server_name: str
    verify_keys: dict[str, str]  # key ID -> unpadded base64 Ed25519 public key


@dataclass
class FederationConfig:
    # Outbound requests never reach private, loopback or link-local addresses (so a remote
    # server name cannot point us at the inside of our own network), except these CIDR
    # ranges: for tests on 127.0.0.1 and for private deployments.
    allowed_ip_ranges: list[str] = field(default_factory=list)
    # Certificates of other servers are checked against the system's CAs, plus this file's.
    tls_ca_file: Path | None = None
    # Off only for tests and closed networks: anyone on the path could then read and
    # rewrite federation traffic.
    tls_verify: bool = True
    # Remote server keys are fetched from the server itself, else through these notaries.
    trusted_key_servers: list[TrustedKeyServer] = field(default_factory=list)


@dataclass
class EmailConfig:
    """SMTP for email notifications of unread messages (homeserver/push/email_pusher.py)
    and for the emails that validate addresses users add (handlers/threepids.py)."""

    notif_from: str
    # Without it the "email" pusher kind is not offered (Synapse's email.enable_notifs).
    enable_notifs: bool = False
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_pass: str | None = field(default=None, repr=False)
    # STARTTLS when the server offers it; required; or TLS from the first byte (port 465).
    enable_tls: bool = True
    require_transport_security: bool = False
    force_tls: bool = False
    app_name: str = "Matrix"
    # Room links in the emails: {room_id} is replaced by the room's ID; a URL without it is
    # taken as an Element web client's and gets /#/room/<room ID>.
    client_base_url: str = "https://matrix.to/#/{room_id}"
    # How long a notification stays unread before it is mailed (Synapse waits 10 minutes).
    notif_delay_s: float = 600.0


@dataclass
class RedisConfig:
    enabled: bool = False
    url: str = "redis://127.0.0.1:6379"


@dataclass
class Config:
    server_name: str
    signing_key_path: Path
    listeners: list[ListenerConfig] = field(default_factory=lambda: [ListenerConfig()])
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    old_signing_keys: dict[str, OldSigningKey] = field(default_factory=dict)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    user_directory: UserDirectoryConfig = field(default_factory=UserDirectoryConfig)
    # None: no SMTP server, so no email notifications and no email addresses added.
    email: EmailConfig | None = None
    log_level: str = "INFO"
    public_baseurl: str | None = None


def default_config(data_dir: Path = DEFAULT_DATA_DIR, server_name: str = "localhost") -> Config:
    """The configuration used when none is given: `localhost` on 127.0.0.1:8008, SQLite and
    media and the signing key under `data_dir` (made absolute against the working directory)."""
    data_dir = data_dir.expanduser().absolute()
    return Config(
        server_name=server_name,
        signing_key_path=data_dir / f"{server_name}.signing.key",
        database=DatabaseConfig(path=data_dir / "homeserver.db"),
        media=MediaConfig(path=data_dir / "media"),
    )


# --- validation helpers -------------------------------------------------------------------------

_PORT_SUFFIX_RE = re.compile(r":([0-9]{1,5})\Z")  # after an IPv6 literal's `]` too
_KEY_ID_RE = re.compile(r"^ed25519:[A-Za-z0-9_]+$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def is_valid_server_name(name: str) -> bool:
    """The spec's grammar, and for our own name also a port a socket can have."""
    if not identifiers.is_valid_server_name(name):
        return False
    port = _PORT_SUFFIX_RE.search(name)
    return port is None or 1 <= int(port.group(1)) <= 65535


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string such as "50M" (suffixes K, M, G, T are powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE_RE.match(str(value))
    if m is None:
        raise ValueError(f"expected a size such as 52428800 or 50M, got {value!r}")
    return int(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


class _Invalid(Exception):
    """Raised by a converter; the message follows "<key>: "."""


T = TypeVar("T")


def _want(description: str, check: Callable[[Any], bool]) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not check(value):
            # Only the type is named, never the value: it may be a password.
            raise _Invalid(f"expected {description}, got {_type_name(value)}")
        return value

    return convert


_STR = _want("a string", lambda v: isinstance(v, str))
_INT = _want("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
_BOOL = _want("a boolean (true or false)", lambda v: isinstance(v, bool))
_MAPPING = _want("a mapping", lambda v: isinstance(v, dict))
_LIST = _want("a list", lambda v: isinstance(v, list))
_POSITIVE_INT = _want(
    "an integer above zero", lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
)
_NUMBER = _want(
    "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0
)
_STR_LIST = _want(
    "a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)
)


class _Section:
    """One mapping of the file. Getters record problems and return the default instead of
    raising, so that reading carries on and every problem is reported together."""

    def __init__(self, raw: Mapping[Any, Any], where: str, problems: list[str], base: Path):
        self.raw = raw
        self.where = where
        self.problems = problems
        self.base = base
        self._known: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, message: str) -> None:
        self.problems.append(f"{self.key(name)}: {message}")

    def has(self, name: str) -> bool:
        return name in self.raw

    def get(self, name: str, convert: Callable[[Any], T], default: T, optional: bool = False) -> T:
        """`optional`: an explicit null means "not set" and gives the default."""
        self._known.add(name)
        if name not in self.raw or (optional and self.raw[name] is None):
            return default
        try:
            return convert(self.raw[name])
        except _Invalid as e:
            self.error(name, str(e))
            return default

    def optional_path(self, name: str) -> Path | None:
        value = self.get(name, _STR, None, optional=True)
        if value is None:
            return None
        if not value:
            self.error(name, "expected a path, got an empty string")
            return None
        # Relative paths are relative to the config file, not to wherever the server starts.
        return self.base / Path(value).expanduser()

    def path(self, name: str, default: Path) -> Path:
        value = self.optional_path(name)
        return default if value is None else value

    def section(self, name: str) -> _Section:
        raw: dict[str, Any] = self.get(name, _MAPPING, {}, optional=True)
        return _Section(raw, self.key(name), self.problems, self.base)

    def finish(self) -> None:
        """Report keys nobody asked for: a typo must not silently fall back to a default."""
        for name in self.raw:
            if str(name) in self._known:
                continue
            close = difflib.get_close_matches(str(name), self._known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.error(str(name), f"unknown key{hint}")


# --- sections -----------------------------------------------------------------------------------


def _read_listener(s: _Section) -> ListenerConfig:
    d = ListenerConfig()
    port = s.get("port", _INT, d.port)
    if not 1 <= port <= 65535:
        s.error("port", f"expected a port number from 1 to 65535, got {port}")
    addresses = s.get("bind_addresses", _STR_LIST, d.bind_addresses)
    if not addresses:
        s.error("bind_addresses", "expected at least one address")
    tls = s.get("tls", _BOOL, d.tls)
    cert = s.optional_path("tls_certificate_path")
    key = s.optional_path("tls_private_key_path")
    if tls and (cert is None or key is None):
        s.error("tls", "true needs tls_certificate_path and tls_private_key_path")
    resources = s.get("resources", _STR_LIST, d.resources)
    for r in resources:
        if r not in RESOURCES:
            s.error(
                "resources", f"unknown resource {r!r} (expected some of {', '.join(RESOURCES)})"
            )
    s.finish()
    return ListenerConfig(port, addresses, tls, cert, key, resources)


def _read_listeners(top: _Section) -> list[ListenerConfig]:
    raw = top.get("listeners", _LIST, None, optional=True)
    if raw is None:
        return [ListenerConfig()]
    if not raw:
        top.error("listeners", "expected at least one listener")
    listeners = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            top.error(f"listeners[{i}]", f"expected a mapping, got {_type_name(item)}")
            continue
        listeners.append(_read_listener(_Section(item, f"listeners[{i}]", top.problems, top.base)))
    # Which resources a request may reach is decided by the port it arrived on.
    ports = [listener.port for listener in listeners]
    for port in sorted({p for p in ports if ports.count(p) > 1}):
        top.error("listeners", f"port {port} is used by more than one listener")
    return listeners


def _read_database(s: _Section, data_dir: Path) -> DatabaseConfig:
    d = DatabaseConfig()
    engine = s.get("engine", _STR, d.engine)
    if engine not in ENGINES:
        s.error("engine", f"expected one of {', '.join(ENGINES)}, got {engine!r}")
    path = s.path("path", data_dir / "homeserver.db")
    dsn = s.get("dsn", _STR, None, optional=True)
    host = s.get("host", _STR, d.host)
    port = s.get("port", _INT, d.port)
    user = s.get("user", _STR, None, optional=True)
    password = s.get("password", _STR, None, optional=True)
    database = s.get("database", _STR, None, optional=True)
    pool_min = s.get("pool_min", _INT, d.pool_min)
    pool_max = s.get("pool_max", _INT, d.pool_max)
    if pool_min < 1 or pool_max < pool_min:
        s.error("pool_max", f"need 1 <= pool_min <= pool_max, got {pool_min} and {pool_max}")
    if engine == "sqlite":
        for name in _POSTGRES_ONLY:
            if s.has(name):
                s.error(name, "only used with engine: postgres")
    elif engine == "postgres":
        # `path` is tolerated: the generated config sets it, and switching engines should
        # only take `engine: postgres` plus the connection settings.
        parts = [n for n in _POSTGRES_ONLY if n != "dsn" and s.has(n)]
        if dsn is not None and parts:
            s.error("dsn", f"give either dsn or {', '.join(parts)}, not both")
        if dsn is None and database is None:
            s.error("database", "required with engine: postgres (or give dsn)")
    s.finish()
    return DatabaseConfig(
        engine, path, dsn, host, port, user, password, database, pool_min, pool_max
    )


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise _Invalid(f"expected a size such as 52428800 or 50M, got {_type_name(value)}")
    try:
        size = parse_size(value)
    except ValueError as e:
        raise _Invalid(str(e)) from None
    if size <= 0:
        raise _Invalid("expected a size above zero")
    return size


def _read_media(s: _Section, data_dir: Path) -> MediaConfig:
    d = MediaConfig()
    media = MediaConfig(
        path=s.path("path", data_dir / "media"),
        max_upload_size=s.get("max_upload_size", _size, d.max_upload_size),
        allow_legacy_unauthenticated=s.get(
            "allow_legacy_unauthenticated", _BOOL, d.allow_legacy_unauthenticated
        ),
        pending_upload_lifetime_s=s.get(
            "pending_upload_lifetime_s", _POSITIVE_INT, d.pending_upload_lifetime_s
        ),
        max_pending_uploads=s.get("max_pending_uploads", _POSITIVE_INT, d.max_pending_uploads),
        max_image_pixels=s.get("max_image_pixels", _POSITIVE_INT, d.max_image_pixels),
    )
    s.finish()
    return media


def _is_ed25519_key(value: str) -> bool:
    try:
        return len(decode_base64(value)) == 32
    except ValueError:  # binascii.Error
        return False


def _read_old_signing_keys(top: _Section) -> dict[str, OldSigningKey]:
    s = top.section("old_signing_keys")
    keys = {}
    for key_id in list(s.raw):
        entry = s.section(str(key_id))
        if not _KEY_ID_RE.match(str(key_id)):
            s.error(str(key_id), "expected a key ID such as ed25519:a_AbCd")
        key = entry.get("key", _STR, "")
        if not entry.has("key"):
            entry.error("key", "required")
        elif key and not _is_ed25519_key(key):
            entry.error("key", "expected an unpadded base64 Ed25519 public key")
        expired_ts = entry.get("expired_ts", _INT, 0)
        if not entry.has("expired_ts"):
            entry.error("expired_ts", "required (milliseconds since the epoch)")
        entry.finish()
        keys[str(key_id)] = OldSigningKey(key, expired_ts)
    return keys


def _read_registration(s: _Section) -> RegistrationConfig:
    d = RegistrationConfig()
    registration = RegistrationConfig(
        enabled=s.get("enabled", _BOOL, d.enabled),
        requires_token=s.get("requires_token", _BOOL, d.requires_token),
        shared_secret=s.get("shared_secret", _STR, None, optional=True),
    )
    if registration.shared_secret == "":
        s.error("shared_secret", "must not be empty (remove the key to disable it)")
    s.finish()
    return registration


def _read_limits(s: _Section) -> LimitsConfig:
    d = LimitsConfig()

    def bucket(name: str, default: RateLimit) -> RateLimit:
        b = s.section(name)
        limit = RateLimit(
            per_second=float(b.get("per_second", _NUMBER, default.per_second)),
            burst=b.get("burst", _INT, default.burst),
        )
        b.finish()
        return limit

    limits = LimitsConfig(
        max_request_body_size=s.get("max_request_body_size", _size, d.max_request_body_size),
        messages=bucket("messages", d.messages),
        login_ip=bucket("login_ip", d.login_ip),
        login_account=bucket("login_account", d.login_account),
        registration_ip=bucket("registration_ip", d.registration_ip),
        media_uploads=bucket("media_uploads", d.media_uploads),
        threepid_validation=bucket("threepid_validation", d.threepid_validation),
        max_joined_members_per_room=s.get(
            "max_joined_members_per_room", _POSITIVE_INT, None, optional=True
        ),
        spam=_read_spam_limits(s.section("spam")),
    )
    s.finish()
    return limits


def _read_spam_limits(s: _Section) -> SpamLimitsConfig:
    d = SpamLimitsConfig()
    spam = SpamLimitsConfig(
        enabled=s.get("enabled", _BOOL, d.enabled),
        max_mentions=s.get("max_mentions", _POSITIVE_INT, d.max_mentions),
        max_links=s.get("max_links", _POSITIVE_INT, d.max_links),
    )
    s.finish()
    return spam


def _read_user_directory(s: _Section) -> UserDirectoryConfig:
    directory = UserDirectoryConfig(
        search_all_users=s.get("search_all_users", _BOOL, UserDirectoryConfig.search_all_users)
    )
    s.finish()
    return directory


def _read_federation(s: _Section) -> FederationConfig:
    d = FederationConfig()
    ranges = s.get("allowed_ip_ranges", _STR_LIST, d.allowed_ip_ranges)
    for cidr in ranges:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            s.error("allowed_ip_ranges", f"{cidr!r} is not an IP address or CIDR range")
    servers = []
    raw_servers: list[Any] = s.get("trusted_key_servers", _LIST, [])
    for i, raw in enumerate(raw_servers):
        where = s.key(f"trusted_key_servers[{i}]")
        if not isinstance(raw, dict):
            s.problems.append(f"{where}: expected a mapping with server_name and verify_keys")
            continue
        entry = _Section(raw, where, s.problems, s.base)
        name = entry.get("server_name", _STR, "")
        if not is_valid_server_name(name):
            entry.error("server_name", "required: a server name (hostname[:port])")
        keys_section = entry.section("verify_keys")
        verify_keys = {}
        for key_id in list(keys_section.raw):
            key = keys_section.get(str(key_id), _STR, "")
            if not _KEY_ID_RE.match(str(key_id)) or not _is_ed25519_key(key):
                keys_section.error(str(key_id), "expected ed25519:<id>: <base64 public key>")
            verify_keys[str(key_id)] = key
        if not verify_keys:
            entry.error("verify_keys", "required: the notary's key ID -> public key")
        entry.finish()
        servers.append(TrustedKeyServer(name, verify_keys))
    federation = FederationConfig(
        allowed_ip_ranges=ranges,
        tls_ca_file=s.optional_path("tls_ca_file"),
        tls_verify=s.get("tls_verify", _BOOL, d.tls_verify),
        trusted_key_servers=servers,
    )
    s.finish()
    return federation


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: Any) -> float:
    """Seconds from a number or a string such as "30s", "10m", "1h" or "2d"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    m = _DURATION_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise _Invalid(f"expected seconds or a duration such as 10m, got {_type_name(value)}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


_ADDRESS_RE = re.compile(r"<?[^@\s<>]+@[^@\s<>]+>?\s*$")


def _read_email(s: _Section) -> EmailConfig | None:
    if not s.raw:
        return None
    notif_from = s.get("notif_from", _STR, "")
    # The From header: "Name <address>" or an address, on one line.
    if not _ADDRESS_RE.search(notif_from) or "\n" in notif_from or "\r" in notif_from:
        s.error("notif_from", 'required: the sender, such as "Example <noreply@example.org>"')
    d = EmailConfig(notif_from)
    email = EmailConfig(
        notif_from=notif_from,
        enable_notifs=s.get("enable_notifs", _BOOL, d.enable_notifs),
        smtp_host=s.get("smtp_host", _STR, d.smtp_host),
        smtp_port=s.get("smtp_port", _POSITIVE_INT, d.smtp_port),
        smtp_user=s.get("smtp_user", _STR, None, optional=True),
        smtp_pass=s.get("smtp_pass", _STR, None, optional=True),
        enable_tls=s.get("enable_tls", _BOOL, d.enable_tls),
        require_transport_security=s.get(
            "require_transport_security", _BOOL, d.require_transport_security
        ),
        force_tls=s.get("force_tls", _BOOL, d.force_tls),
        app_name=s.get("app_name", _STR, d.app_name),
        client_base_url=s.get("client_base_url", _STR, d.client_base_url),
        notif_delay_s=s.get("notif_delay", _duration, d.notif_delay_s),
    )
    if not email.smtp_host:
        s.error("smtp_host", "must not be empty")
    if email.smtp_port > 65535:
        s.error("smtp_port", "expected a port number (1 to 65535)")
    if (email.smtp_user is None) != (email.smtp_pass is None):
        s.error("smtp_pass" if email.smtp_pass is None else "smtp_user", "set both or neither")
    if email.require_transport_security and not (email.enable_tls or email.force_tls):
        s.error("require_transport_security", "needs enable_tls or force_tls")
    if not email.client_base_url.startswith(("http://", "https://")):
        s.error("client_base_url", "expected an http:// or https:// URL")
    s.finish()
    return email


def _read_redis(s: _Section) -> RedisConfig:
    d = RedisConfig()
    redis = RedisConfig(enabled=s.get("enabled", _BOOL, d.enabled), url=s.get("url", _STR, d.url))
    if not redis.url.startswith(("redis://", "rediss://", "unix://")):
        s.error("url", "expected a redis://, rediss:// or unix:// URL")
    s.finish()
    return redis


def _read_config(raw: Mapping[Any, Any], base: Path, problems: list[str]) -> Config:
    top = _Section(raw, "", problems, base)
    server_name = top.get("server_name", _STR, "")
    if not top.has("server_name"):
        top.error("server_name", "required (the domain in user IDs, such as example.org)")
    elif server_name and not is_valid_server_name(server_name):
        top.error("server_name", f"{server_name!r} is not a valid server name (hostname[:port])")
    elif not server_name and isinstance(raw.get("server_name"), str):
        top.error("server_name", "must not be empty")
    data_dir = base / DEFAULT_DATA_DIR
    log_level = top.get("log_level", _STR, "INFO").upper()
    if log_level not in LOG_LEVELS:
        top.error("log_level", f"expected one of {', '.join(LOG_LEVELS)}")
    public_baseurl = top.get("public_baseurl", _STR, None, optional=True)
    if public_baseurl is not None:
        if not public_baseurl.startswith(("http://", "https://")):
            top.error("public_baseurl", "expected an http:// or https:// URL")
        elif not public_baseurl.endswith("/"):
            public_baseurl += "/"  # so that joining a path never drops the last segment
    config = Config(
        server_name=server_name,
        signing_key_path=top.path("signing_key_path", data_dir / f"{server_name}.signing.key"),
        listeners=_read_listeners(top),
        database=_read_database(top.section("database"), data_dir),
        media=_read_media(top.section("media"), data_dir),
        old_signing_keys=_read_old_signing_keys(top),
        registration=_read_registration(top.section("registration")),
        redis=_read_redis(top.section("redis")),
        limits=_read_limits(top.section("limits")),
        federation=_read_federation(top.section("federation")),
        user_directory=_read_user_directory(top.section("user_directory")),
        email=_read_email(top.section("email")),
        log_level=log_level,
        public_baseurl=public_baseurl,
    )
    top.finish()
    return config


def parse_config(text: str, base_dir: Path, source: str | None = None) -> Config:
    """Parse YAML text; relative paths resolve against `base_dir`. Raises ConfigError."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "syntax error"
        raise ConfigError([f"not valid YAML{where}: {problem}"], source) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"expected a mapping at the top level, got {_type_name(raw)}"], source)
    problems: list[str] = []
    config = _read_config(raw, base_dir.expanduser().absolute(), problems)
    if problems:
        raise ConfigError(problems, source)
    return config


def load_config(path: Path | str) -> Config:
    """Read a YAML config file. Raises ConfigError listing every problem found."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError([f"cannot read the config file: {reason}"], str(path)) from None
    return parse_config(text, path.absolute().parent, str(path))


# --- generated config ---------------------------------------------------------------------------


def render_config(server_name: str, data_dir: str = "data") -> str:
    """A complete, commented config file; config.sample.yaml is this for example.org."""

    def q(s: str) -> str:
        # A JSON string is a valid double-quoted YAML scalar: safe for any name or path.
        return json.dumps(s)

    def p(name: str) -> str:
        return q(data_dir.rstrip("/") + "/" + name if data_dir else name)

    return _TEMPLATE.format(
        server_name=q(server_name),
        db_path=p("homeserver.db"),
        media_path=p("media"),
        key_path=p(f"{server_name}.signing.key"),
    )


_TEMPLATE = """\
# Homeserver configuration.
#
# Every key except server_name is optional; a missing key takes the default shown here.
# Relative paths are resolved against the directory that holds this file, not the
# directory the server is started from. Unknown keys are errors, so that a typo never
# falls back to a default silently.

# The server name: the domain part of user IDs (@alice:example.org) and room aliases.
# It cannot change once users and rooms exist. Format: hostname[:port].
server_name: {server_name}

# The URL clients reach this server at, if it differs from https://<server_name>/
# (for example behind a reverse proxy on another host). Default: not set.
#public_baseurl: "https://matrix.example.org/"

# Log verbosity: DEBUG, INFO, WARNING, ERROR or CRITICAL.
log_level: INFO

# HTTP listeners. Each serves its resources on every bind address. Resources:
#   client     - the client-server API (/_matrix/client)
#   federation - the server-server API and key publishing (/_matrix/federation, /_matrix/key)
#   media      - the content repository (/_matrix/media, /_matrix/client/v1/media)
# A port may appear in one listener only. TLS: either set tls: true with
# tls_certificate_path and tls_private_key_path (PEM files), or, as recommended,
# leave tls off and terminate TLS in a reverse proxy.
listeners:
  - port: 8008
    bind_addresses: ["127.0.0.1"]
    tls: false
    #tls_certificate_path: "tls/fullchain.pem"
    #tls_private_key_path: "tls/privkey.pem"
    resources: [client, federation, media]

# The database. engine: sqlite (the default: one process, nothing to set up) or
# postgres (for production and for running several processes).
database:
  engine: sqlite
  # sqlite only: the database file.
  path: {db_path}
  # postgres only: either a DSN...
  #dsn: "postgresql://homeserver:secret@127.0.0.1:5432/homeserver"
  # ...or its parts (host may also be a Unix socket directory such as /var/run/postgresql):
  #host: 127.0.0.1
  #port: 5432
  #user: homeserver
  #password: secret
  #database: homeserver
  # The connection pool's minimum and maximum size (postgres; sqlite ignores them).
  pool_min: 1
  pool_max: 10

# The media repository: uploaded files and their thumbnails.
media:
  path: {media_path}
  # The largest upload accepted: bytes, or a number with a K, M or G suffix (powers of 1024).
  max_upload_size: 50M
  # Also serve the deprecated unauthenticated download endpoints under /_matrix/media/v3
  # (spec v1.11 moved downloads to the authenticated /_matrix/client/v1/media).
  allow_legacy_unauthenticated: false
  # Asynchronous uploads (POST /_matrix/media/v1/create): how long, in seconds, a created
  # media ID waits for its content, and how many such IDs a user may have waiting at once.
  pending_upload_lifetime_s: 86400
  max_pending_uploads: 10
  # Images with more pixels than this are not thumbnailed (decompression bombs).
  max_image_pixels: 32000000

# The Ed25519 key this server signs events and federation requests with, in Synapse's
# key file format. Created on first start if missing. Back it up: a server that loses
# its key looks like a new server to everyone else until their caches expire.
signing_key_path: {key_path}

# Keys this server signed with in the past, still published so that other servers can
# verify old events: key ID -> the unpadded base64 public key and when it stopped being
# used (milliseconds since the epoch). Example:
#old_signing_keys:
#  "ed25519:a_OldK":
#    key: "l/O9hxMVKB6Lg+3Hqf0FQQZhVESQcMzbPN1Cz2nM3og"
#    expired_ts: 1700000000000
old_signing_keys: {{}}

registration:
  # Let anyone create an account through the client API.
  enabled: false
  # With registration enabled, require a registration token (m.login.registration_token).
  requires_token: false
  # A secret that lets admin tools create accounts even with registration disabled.
  # Keep it private. Default: not set, which turns that feature off.
  #shared_secret: "a long random string"

# Limits on client requests. Rate limits are token buckets: per_second sustained, burst at
# once; per_second 0 turns one off. Over a limit a client gets 429 M_LIMIT_EXCEEDED with
# retry_after_ms.
limits:
  # The largest client API request body (media uploads have media.max_upload_size).
  max_request_body_size: 1M
  # Events sent, per user.
  messages:
    per_second: 10
    burst: 50
  # Login attempts per client IP address, and wrong passwords per account (at login and
  # wherever else a password is asked for).
  login_ip:
    per_second: 0.2
    burst: 10
  login_account:
    per_second: 0.1
    burst: 5
  # Registrations per client IP address.
  registration_ip:
    per_second: 0.1
    burst: 5
  # Media uploads (POST /_matrix/media/v3/upload and /_matrix/media/v1/create), per user.
  media_uploads:
    per_second: 1
    burst: 20
  # Address validation emails, per client IP address and per email address.
  threepid_validation:
    per_second: 0.003
    burst: 5
  # Local users cannot join a room that already has this many joined members (403
  # M_FORBIDDEN). Default: not set, no limit.
  #max_joined_members_per_room: 1000
  # Refuse messages from local users that mention too many users (m.mentions user_ids and
  # user IDs in the body) or carry too many links, with 400 M_INVALID_PARAM.
  spam:
    enabled: false
    max_mentions: 10
    max_links: 5

# Who POST /user_directory/search finds: users sharing a room with the searcher and members
# of public or world-readable rooms; with search_all_users, every account on this server too.
user_directory:
  search_all_users: false

# Talking to other servers.
federation:
  # Outbound requests (to other servers, and to the push gateways users' pushers name)
  # never go to private, loopback or link-local addresses, except to these CIDR ranges
  # (for a private deployment, or tests on 127.0.0.1). Example:
  #allowed_ip_ranges: ["10.1.0.0/16"]
  allowed_ip_ranges: []
  # Other servers' TLS certificates are checked against the system's CAs and this file's.
  #tls_ca_file: "tls/private-ca.pem"
  # Turning certificate checks off lets anyone on the path read and change federation
  # traffic: closed test networks only.
  tls_verify: true
  # Servers whose keys cannot be fetched from them directly are asked of these notaries.
  # Example:
  #trusted_key_servers:
  #  - server_name: "matrix.org"
  #    verify_keys:
  #      "ed25519:auto": "Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw"
  trusted_key_servers: []

# Email: users add addresses to their accounts (validated by a mailed code and a link to
# public_baseurl), and a user whose client set an "email" pusher for one of them gets one
# email per room for the messages that notified them and stayed unread for notif_delay.
# Without this section no address can be added; without enable_notifs, POST /pushers/set
# refuses kind "email". Example:
#email:
#  enable_notifs: true
#  # The From header of the emails (required).
#  notif_from: "Example Chat <noreply@example.org>"
#  smtp_host: "smtp.example.org"
#  smtp_port: 587
#  # Log in to the SMTP server (set both or neither).
#  smtp_user: "homeserver"
#  smtp_pass: "secret"
#  # STARTTLS when the server offers it (enable_tls), refuse to send without it
#  # (require_transport_security), or TLS from the first byte, usually on port 465
#  # (force_tls).
#  enable_tls: true
#  require_transport_security: true
#  force_tls: false
#  # The name the emails give the chat service.
#  app_name: "Example Chat"
#  # Where the emails' room links go: {{room_id}} is replaced by the room's ID, for example
#  # "https://app.element.io/#/room/{{room_id}}".
#  client_base_url: "https://matrix.to/#/{{room_id}}"
#  # How long a message may stay unread before it is mailed: seconds, or 30s, 10m, 1h.
#  notif_delay: 10m

# Redis links several server processes (wake-ups and cache invalidation).
# A single process does not need it.
redis:
  enabled: false
  url: "redis://127.0.0.1:6379"
"""
