"""The domain handlers wired together over one Storage; app.py adds the transports on top.
Tests and benchmarks build this directly, without HTTP."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.address_policy import OutboundAddressPolicy
from homeserver.clock import Clock, SystemClock
from homeserver.config import EmailConfig, LimitsConfig, RegistrationConfig, UserDirectoryConfig
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.account_data import AccountDataHandler
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.dehydrated_devices import DehydratedDeviceHandler
from homeserver.handlers.device_lists import DeviceLists
from homeserver.handlers.devices import DeviceHandler
from homeserver.handlers.e2e_keys import E2eKeysHandler
from homeserver.handlers.filters import FilterHandler
from homeserver.handlers.key_backup import KeyBackupHandler
from homeserver.handlers.message import EventCreationHandler, LocalServer
from homeserver.handlers.moderation import ReportsHandler, SpamLimits
from homeserver.handlers.openid import OpenIdTokens
from homeserver.handlers.persistence import EventPersister
from homeserver.handlers.presence import PresenceHandler
from homeserver.handlers.profile import ProfileHandler
from homeserver.handlers.receipts import ReceiptsHandler
from homeserver.handlers.remote_events import RemoteEventHandler
from homeserver.handlers.room import RoomCreationHandler
from homeserver.handlers.room_handlers import RoomHandlers, build_room_handlers
from homeserver.handlers.room_upgrade import RoomUpgradeHandler, UpgradeCarryOver
from homeserver.handlers.search import SearchHandler
from homeserver.handlers.state import StateHandler
from homeserver.handlers.sync import SyncHandler, build_sync_handler
from homeserver.handlers.threepids import ThreepidHandler
from homeserver.handlers.to_device import ToDeviceHandler
from homeserver.handlers.typing import TypingHandler
from homeserver.handlers.uia import InteractiveAuth, RegistrationTokens
from homeserver.handlers.user_directory import UserDirectoryHandler
from homeserver.notifier.local import LocalNotifier
from homeserver.push.counts import NotificationCounter
from homeserver.push.email_digest import EmailDigests
from homeserver.push.email_pusher import EMAIL, EmailPusher
from homeserver.push.gateway import HttpPushGateway
from homeserver.push.http_pusher import HttpPusher, PushGateway
from homeserver.push.mailer import SmtpMailer
from homeserver.push.notifications import NotificationsHandler
from homeserver.push.pusher_pool import PusherPool
from homeserver.push.pushers import PushersHandler
from homeserver.push.rules import PUSH_RULES, PushRulesHandler
from homeserver.ratelimit import RateLimits
from homeserver.storage import Storage
from homeserver.storage.stores.user_data import UserDataStore


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
    # Per-user data (issue 3): profiles, devices, account data, receipts, typing, presence.
    user_data: UserDataStore
    profile: ProfileHandler
    devices: DeviceHandler
    account_data: AccountDataHandler
    receipts: ReceiptsHandler
    typing: TypingHandler
    presence: PresenceHandler
    # The room endpoints (issue 3, "Rooms"): membership, sending, reads, aliases.
    room_api: RoomHandlers
    # /sync and filters (issue 3, "Syncing", "Filtering").
    filters: FilterHandler
    sync: SyncHandler
    # End-to-end encryption (issue 5): to-device messages, keys, device lists.
    to_device: ToDeviceHandler
    device_lists: DeviceLists
    e2e_keys: E2eKeysHandler
    dehydrated_devices: DehydratedDeviceHandler
    # Server-side key backups.
    key_backup: KeyBackupHandler
    # OpenID tokens for third parties (C-S and S-S API "OpenID").
    openid: OpenIdTokens
    # Server-side search (issue 7).
    search: SearchHandler
    # Push rules and notification counts (issue 7).
    push_rules: PushRulesHandler
    notifications: NotificationsHandler
    pushers: PushersHandler
    pusher_pool: PusherPool
    # Moderation (issue 7): content reports, room upgrades, the user directory.
    reports: ReportsHandler
    room_upgrades: RoomUpgradeHandler
    user_directory: UserDirectoryHandler
    # Email addresses bound to accounts (3PIDs), which email pushers may mail.
    threepids: ThreepidHandler


def build_core(
    storage: Storage,
    server_name: str,
    keys: ServerKeys,
    clock: Clock | None = None,
    registration: RegistrationConfig | None = None,
    public_baseurl: str | None = None,
    limits: LimitsConfig | None = None,
    user_directory: UserDirectoryConfig | None = None,
    push_gateway: PushGateway | None = None,
    email: EmailConfig | None = None,
) -> Core:
    clock = clock or SystemClock()
    server = LocalServer(server_name, keys)
    notifier = LocalNotifier(storage.stream_ids.current)
    state = StateHandler(storage)
    persister = EventPersister(storage, state, notifier)
    events = EventCreationHandler(storage, state, persister, server, clock)
    limits = limits or LimitsConfig()
    rate_limits = RateLimits.from_config(limits, clock)
    user_data = storage.user_data
    account_data = AccountDataHandler(user_data, notifier)
    rooms = RoomCreationHandler(events)
    room_api = build_room_handlers(storage, events, rooms, clock)
    room_api.serializer.aggregations.ignored = account_data
    room_api.relations.ignored = account_data
    sync = build_sync_handler(
        storage,
        notifier,
        room_api.serializer,
        room_api.visibility,
        forgotten=room_api.extras,
        ignored=account_data,
    )
    device_lists = DeviceLists(
        storage.e2e_keys, storage.sync_reads, sync.rooms, storage.stream_ids, notifier
    )
    auth = AuthHandler(storage, server_name, clock, device_lists, rate_limits.login_account)
    uia = InteractiveAuth(clock)
    # One SMTP client for notifications and address validation mails.
    mailer = SmtpMailer(email) if email is not None else None
    core = Core(
        server=server,
        storage=storage,
        clock=clock,
        notifier=notifier,
        state=state,
        persister=persister,
        events=events,
        rooms=rooms,
        room_api=room_api,
        filters=FilterHandler(storage.filters, server_name),
        sync=sync,
        remote_events=RemoteEventHandler(storage, state, persister),
        auth=auth,
        registration=registration or RegistrationConfig(),
        uia=uia,
        registration_tokens=RegistrationTokens(storage, clock),
        public_baseurl=public_baseurl,
        rate_limits=rate_limits,
        user_data=user_data,
        profile=ProfileHandler(storage, user_data, events, server_name),
        devices=(devices := DeviceHandler(storage, user_data, auth, uia, events, clock)),
        account_data=account_data,
        receipts=ReceiptsHandler(storage, user_data, account_data, notifier, clock),
        typing=TypingHandler(storage, notifier, clock),
        presence=PresenceHandler(storage, user_data, notifier, clock, server_name),
        to_device=ToDeviceHandler(storage.to_device, notifier, server_name),
        device_lists=device_lists,
        e2e_keys=E2eKeysHandler(
            storage.e2e_keys, device_lists, server_name, devices.require_password
        ),
        dehydrated_devices=DehydratedDeviceHandler(storage, device_lists, clock),
        key_backup=KeyBackupHandler(storage.key_backup),
        openid=OpenIdTokens(storage.openid, server_name, clock),
        search=SearchHandler(
            storage, room_api.extras, room_api.visibility, room_api.serializer, room_api.reads
        ),
        push_rules=(push_rules := PushRulesHandler(storage.push, account_data)),
        notifications=NotificationsHandler(storage.push, storage.events, room_api.serializer),
        pushers=PushersHandler(
            storage.push,
            (pusher_pool := PusherPool(storage.push)),
            clock,
            lambda: storage.stream_ids.current,
            storage.threepids,
        ),
        pusher_pool=pusher_pool,
        reports=ReportsHandler(storage, storage.reports, room_api.visibility, clock),
        room_upgrades=RoomUpgradeHandler(
            storage,
            events,
            rooms,
            clock,
            (carry_over := UpgradeCarryOver(storage, account_data, push_rules)),
        ),
        user_directory=UserDirectoryHandler(
            storage.user_directory,
            search_all_users=(user_directory or UserDirectoryConfig()).search_all_users,
        ),
        threepids=ThreepidHandler(
            storage.threepids,
            pusher_pool,
            clock,
            server_name,
            public_baseurl,
            email,
            mailer,
            rate_limits.threepid_validation,
            devices.require_password,
        ),
    )
    room_api.members.max_joined_members = limits.max_joined_members_per_room
    room_api.members.on_joined.append(carry_over.joined)
    if limits.spam.enabled:
        room_api.send.spam_limits = SpamLimits(limits.spam.max_mentions, limits.spam.max_links)
    gateway = push_gateway or HttpPushGateway(OutboundAddressPolicy().is_allowed)
    pusher_pool.add_kind(
        "http", lambda p: HttpPusher(p, storage.push, clock, storage.events, gateway), gateway.close
    )
    if email is not None and mailer is not None and email.enable_notifs:
        digests = EmailDigests(email, storage.events, storage.rooms, storage.sync_reads)
        delay_s = email.notif_delay_s
        pusher_pool.add_kind(
            EMAIL,
            lambda p: EmailPusher(
                p, storage.push, clock, digests, mailer, delay_s, storage.threepids
            ),
        )
    storage.persist.add_indexer(
        NotificationCounter(server_name, push_rules, storage.push, pusher_pool.on_notified)
    )
    core.receipts.receipts_read = core.notifications
    # The per-user streams beside room events, each under its slot of the sync token.
    core.sync.add_source("typing", core.typing)
    core.sync.add_source("receipts", core.receipts)
    core.sync.add_source("presence", core.presence)
    core.sync.add_source("account_data", core.account_data)
    core.account_data.add_default(PUSH_RULES, core.push_rules.account_data_content)
    core.sync.add_source("to_device", core.to_device)
    core.sync.add_source("device_lists", core.device_lists)
    core.sync.set_presence_hook(core.presence)
    return core
