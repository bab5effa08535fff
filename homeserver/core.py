"""The domain handlers wired together over one Storage; app.py adds the transports on top.
Tests and benchmarks build this directly, without HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.clock import Clock, SystemClock
from homeserver.config import LimitsConfig, RegistrationConfig
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.message import EventCreationHandler, LocalServer
from homeserver.handlers.persistence import EventPersister
from homeserver.handlers.remote_events import RemoteEventHandler
from homeserver.handlers.room import RoomCreationHandler
from homeserver.handlers.state import StateHandler
from homeserver.handlers.uia import InteractiveAuth, RegistrationTokens
from homeserver.notifier.local import LocalNotifier
from homeserver.ratelimit import RateLimits
from homeserver.storage import Storage


@dataclass
class Core:
    server: LocalServer
    storage: Storage
    clock: Clock
    notifier: LocalNotifier
    state: StateHandler
    persister: EventPersister
    events: EventCreationHandler
    rooms: RoomCreationHandler
    remote_events: RemoteEventHandler
    auth: AuthHandler
    registration: RegistrationConfig
    uia: InteractiveAuth
    registration_tokens: RegistrationTokens
    public_baseurl: str | None
    rate_limits: RateLimits


def build_core(
    storage: Storage,
    server_name: str,
    keys: ServerKeys,
    clock: Clock | None = None,
    registration: RegistrationConfig | None = None,
    public_baseurl: str | None = None,
    limits: LimitsConfig | None = None,
) -> Core:
    clock = clock or SystemClock()
    server = LocalServer(server_name, keys)
    notifier = LocalNotifier(storage.stream_ids.current)
    state = StateHandler(storage)
    persister = EventPersister(storage, state, notifier)
    events = EventCreationHandler(storage, state, persister, server, clock)
    return Core(
        server=server,
        storage=storage,
        clock=clock,
        notifier=notifier,
        state=state,
        persister=persister,
        events=events,
        rooms=RoomCreationHandler(events),
        remote_events=RemoteEventHandler(storage, state, persister),
        auth=AuthHandler(storage, server_name, clock),
        registration=registration or RegistrationConfig(),
        uia=InteractiveAuth(clock),
        registration_tokens=RegistrationTokens(storage, clock),
        public_baseurl=public_baseurl,
        rate_limits=RateLimits.from_config(limits or LimitsConfig(), clock),
    )
