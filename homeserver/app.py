"""The composition root: builds every component from the `Config`, wires them into one aiohttp
application and serves it on the configured listeners.

The only module under homeserver/ that may import aiohttp.web and the transports
(tests/unit/test_layering.py); everything else receives its dependencies from here.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from functools import partial

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler, Middleware
from signedjson.key import decode_verify_key_base64

from client_api.http import CORE
from client_api.middleware import install_client_middleware
from client_api.routes import install_client_routes
from federation.discovery import AddressPolicy
from federation.server.http import FEDERATION
from federation.server.key_query import KEYRING, KeyQueryServlet
from federation.server.keys import ServerKeyServlet
from federation.server.routes import install_federation_routes
from federation.service import build_federation
from federation.transport import make_ssl_context
from homeserver.config import RESOURCES, Config, DatabaseConfig, ListenerConfig
from homeserver.core import build_core
from homeserver.crypto.keys import (
    KeyFileError,
    OldVerifyKey,
    ServerKeys,
    load_or_create_server_keys,
)
from homeserver.errors import Codes, MatrixError
from homeserver.push.gateway import HttpPushGateway
from homeserver.storage import DatabaseUnavailable, SchemaTooNew, Storage, open_storage
from media_repo.repository import build_media_repository
from media_repo.routes import MEDIA, install_media_routes

logger = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
SERVER_KEYS = web.AppKey("server_keys", ServerKeys)
# Set while the app runs: storage opens in a cleanup context, after build_app() returns, and
# the domain handlers are built on it there.
STORAGE = web.AppKey("storage", Storage)

# Requests still running after a stop signal get this long before their connections are cut.
SHUTDOWN_TIMEOUT_S = 10.0


class StartupError(Exception):
    """The server cannot start for a reason the operator must fix; str() is one line."""


# --- components ---------------------------------------------------------------------------------


def _load_server_keys(config: Config) -> ServerKeys:
    """Blocking (file I/O): call in a thread."""
    path = config.signing_key_path
    try:
        existed = path.exists()
        # Extra keys in the key file have no recorded retirement time; the file's last change
        # is the latest moment they can have been replaced. old_signing_keys in the config,
        # which carry an explicit expired_ts, take precedence.
        expired_ts = int(path.stat().st_mtime * 1000) if existed else 0
        keys = load_or_create_server_keys(path, old_keys_expired_ts=expired_ts)
    except OSError as e:
        raise StartupError(f"cannot read the signing key file {path}: {e.strerror or e}") from None
    except KeyFileError as e:
        raise StartupError(f"invalid signing key file {path}: {e}") from None
    if not existed:
        logger.info("generated a new signing key path=%s key_id=%s", path, keys.key_id)
    for key_id, old in config.old_signing_keys.items():
        version = key_id.split(":", 1)[1]
        verify_key = decode_verify_key_base64("ed25519", version, old.key)
        keys.old_verify_keys[key_id] = OldVerifyKey(verify_key, old.expired_ts)
    return keys


def _prepare_directories(config: Config) -> None:
    """Blocking (file I/O): call in a thread. First start creates the data directories."""
    dirs = [config.media.path]
    if config.database.engine == "sqlite":
        dirs.append(config.database.path.parent)
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StartupError(f"cannot create the directory {d}: {e.strerror or e}") from None


def _describe_database(db: DatabaseConfig) -> str:
    if db.engine == "sqlite":
        return f"sqlite {db.path}"
    if db.dsn:
        return "postgres database.dsn"  # the DSN may hold a password: never repeated
    return f"postgres {db.host}:{db.port}"


def _storage_context(
    config: Config,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
        try:
            storage = await open_storage(config.database)
        except (DatabaseUnavailable, SchemaTooNew, OSError) as e:
            reason = " ".join(str(e).split())  # one line, whatever the driver said
            raise StartupError(
                f"cannot use the database ({_describe_database(config.database)}): {reason}"
            ) from None
        try:
            app[STORAGE] = storage
            core = app[CORE] = build_core(
                storage,
                config.server_name,
                app[SERVER_KEYS],
                registration=config.registration,
                public_baseurl=config.public_baseurl,
                limits=config.limits,
                user_directory=config.user_directory,
                email=config.email,
                # A pusher's gateway is reached like a federation peer: the same address
                # policy and certificate authorities.
                push_gateway=HttpPushGateway(
                    AddressPolicy(config.federation.allowed_ip_ranges).is_allowed,
                    partial(make_ssl_context, config.federation),
                ),
            )
            media = app[MEDIA] = build_media_repository(core, config.media)
            federation = build_federation(core, config.federation, media)
            app[KEYRING] = federation.keyring
            app[FEDERATION] = federation.server
            await media.start()
            await federation.start()
            await core.pusher_pool.start()
            try:
                yield
            finally:
                await core.pusher_pool.close()
                await federation.close()
                await media.close()
                await core.persister.close()  # queued events commit before the database closes
        finally:
            await storage.close()

    return storage_ctx


# --- listeners and resources --------------------------------------------------------------------


def resource_for_path(path: str) -> str | None:
    """Which listener resource serves `path` (None: reachable on every listener)."""
    if path.startswith(("/_matrix/media/", "/_matrix/client/v1/media/")):
        return "media"
    if path.startswith(("/_matrix/client/", "/.well-known/matrix/client")):
        return "client"
    if path.startswith(("/_matrix/federation/", "/_matrix/key/", "/.well-known/matrix/server")):
        return "federation"
    return None


def _resource_gate(listeners: list[ListenerConfig]) -> Middleware:
    # One application serves every listener, so a listener's resource list is enforced per
    # request by the local port it arrived on (config guarantees one listener per port).
    allowed = {listener.port: frozenset(listener.resources) for listener in listeners}

    @web.middleware
    async def resource_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = resource_for_path(request.path)
        if resource is not None and request.transport is not None:
            sockname = request.transport.get_extra_info("sockname")
            port = sockname[1] if isinstance(sockname, tuple) and len(sockname) > 1 else None
            if port in allowed and resource not in allowed[port]:
                raise MatrixError("Unrecognized request", Codes.UNRECOGNIZED, status=404)
        return await handler(request)

    return resource_gate


class _AccessLogger(AbstractAccessLogger):
    """Method and path only: aiohttp's default format logs the query string, which can carry
    an access token."""

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "request method=%s path=%s status=%d duration_ms=%.1f",
            request.method,
            request.path,
            response.status,
            time * 1000,
        )


def _ssl_context(listener: ListenerConfig) -> ssl.SSLContext:
    """Blocking (reads the PEM files): call in a thread."""
    assert listener.tls_certificate_path and listener.tls_private_key_path
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(listener.tls_certificate_path, listener.tls_private_key_path)
    except (OSError, ssl.SSLError) as e:
        raise StartupError(
            f"cannot load TLS certificate {listener.tls_certificate_path}: {e}"
        ) from None
    return context


# --- the application ----------------------------------------------------------------------------


async def build_app(config: Config) -> web.Application:
    """The application with every route and component wired; storage opens when it starts."""
    await asyncio.to_thread(_prepare_directories, config)
    server_keys = await asyncio.to_thread(_load_server_keys, config)

    app = web.Application(client_max_size=config.limits.max_request_body_size)
    install_client_middleware(app)  # outermost: renders errors raised by everything below
    if any(set(listener.resources) != set(RESOURCES) for listener in config.listeners):
        app.middlewares.append(_resource_gate(config.listeners))
    app[CONFIG] = config
    app[SERVER_KEYS] = server_keys
    app.cleanup_ctx.append(_storage_context(config))

    ServerKeyServlet(config.server_name, server_keys).register(app.router)
    KeyQueryServlet(config.server_name, server_keys).register(app.router)
    install_federation_routes(app.router)
    install_client_routes(app.router)
    # Uploads stream through request.content, which client_max_size does not limit; the media
    # repository enforces media.max_upload_size instead.
    install_media_routes(app.router, config.media.allow_legacy_unauthenticated)
    return app


def _tune_garbage_collector() -> None:
    """Fewer, cheaper cycle collections. Nearly everything a request allocates is freed by
    reference counting, yet at the default thresholds the collector walked the whole heap every
    second or two under sync_bench's load, stopping the server 20-60 ms each time: that was its
    p99 latency. Objects from start-up are frozen out of the walks, and collections start only
    after 50,000 net new container objects instead of 700."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def run_server(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, let requests finish, close storage.
    Raises StartupError when the server cannot start."""
    stop = asyncio.Event()
    app = await build_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=_AccessLogger,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    loop = asyncio.get_running_loop()
    # Installed before startup so a signal during startup still ends in an orderly shutdown.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
        for listener in config.listeners:
            context = await asyncio.to_thread(_ssl_context, listener) if listener.tls else None
            for address in listener.bind_addresses:
                site = web.TCPSite(runner, address, listener.port, ssl_context=context)
                try:
                    await site.start()
                except OSError as e:
                    reason = os.strerror(e.errno) if e.errno else str(e)
                    raise StartupError(
                        f"cannot listen on {address}:{listener.port}: {reason}"
                    ) from None
                logger.info(
                    "listening address=%s port=%d tls=%s resources=%s",
                    address,
                    listener.port,
                    listener.tls,
                    ",".join(listener.resources),
                )
        logger.info("started server_name=%s", config.server_name)
        _tune_garbage_collector()
        await stop.wait()
        logger.info("stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    logger.info("stopped")
