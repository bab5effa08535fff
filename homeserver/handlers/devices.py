"""DeviceHandler: device management (C-S API "Device Management"), password change and account
deactivation ("Account registration and management"), and the m.login.password stage of
user-interactive authentication that guards them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.events.event import MEMBER
from homeserver.handlers.auth import AuthHandler
from homeserver.handlers.message import EventCreationHandler
from homeserver.handlers.uia import PASSWORD, InteractiveAuth, StageChecker
from homeserver.lru import LruCache
from homeserver.storage import Storage
from homeserver.storage.stores.accounts import Device
from homeserver.storage.stores.user_data import UserDataStore

logger = logging.getLogger(__name__)

# C-S API "Device Management": last_seen_ts need not be exact; writing it on every request
# would make each request a database write.
LAST_SEEN_INTERVAL_MS = 60 * 1000
PASSWORD_FLOWS = [[PASSWORD]]
MAX_DEVICE_NAME_LEN = 100


class DeviceHandler:
    def __init__(
        self,
        storage: Storage,
        user_data: UserDataStore,
        auth: AuthHandler,
        uia: InteractiveAuth,
        events: EventCreationHandler,
        clock: Clock,
    ) -> None:
        self.storage = storage
        self.user_data = user_data
        self.auth = auth
        self.uia = uia
        self.events = events
        self.clock = clock
        self.server_name = auth.server_name
        # (user_id, device_id) -> when last_seen was last written, to write at most once a
        # minute per device.
        self._seen_written: LruCache[tuple[str, str], int] = LruCache(100_000)

    # -- devices -------------------------------------------------------------------------

    async def get_devices(self, user_id: str) -> list[Device]:
        return await self.storage.accounts.get_devices(user_id)

    async def get_device(self, user_id: str, device_id: str) -> Device:
        for device in await self.storage.accounts.get_devices(user_id):
            if device.device_id == device_id:
                return device
        raise NotFound("Unknown device")

    async def rename_device(self, user_id: str, device_id: str, display_name: str) -> None:
        if len(display_name) > MAX_DEVICE_NAME_LEN:
            raise MatrixError(
                f"Device display name is too long (at most {MAX_DEVICE_NAME_LEN})",
                Codes.INVALID_PARAM,
            )
        # Only application services may create devices here, so an unknown device is 404.
        if not await self.user_data.set_device_display_name(user_id, device_id, display_name):
            raise NotFound("Unknown device")

    async def delete_devices(
        self, user_id: str, device_ids: list[str], auth: Mapping[str, Any] | None
    ) -> None:
        """Delete devices (and so their tokens) after user-interactive auth; unknown device
        IDs are ignored, as the spec has it ("or had been removed previously")."""
        await self.require_password(user_id, auth, "delete_devices")
        async with self.auth.device_lists.changing(user_id) as change:
            await self.storage.accounts.delete_devices_txn(change.txn, user_id, device_ids)
            change.deleted += device_ids
        for device_id in device_ids:
            self._seen_written.pop((user_id, device_id))

    async def note_seen(self, user_id: str, device_id: str, ip: str | None) -> None:
        """Record that the device made a request now, at most once a minute per device."""
        now = self.clock.time_ms()
        key = (user_id, device_id)
        written = self._seen_written.get_hit(key)
        if written is not None and now - written < LAST_SEEN_INTERVAL_MS:
            return
        self._seen_written.put(key, now)
        await self.user_data.set_device_last_seen(user_id, device_id, now, ip)

    # -- user-interactive auth -----------------------------------------------------------

    def password_stage(self, user_id: str | None, authenticated: list[str]) -> StageChecker:
        """The m.login.password stage for `user_id` (None: whoever the identifier names, for
        requests made without an access token); appends the user it authenticated to
        `authenticated`."""

        async def check(auth: Mapping[str, Any]) -> None:
            claimed = self._user_from_identifier(auth)
            if user_id is not None and claimed != user_id:
                raise Forbidden("The identifier does not name the authenticated user")
            password = auth.get("password")
            if not isinstance(password, str) or not await self.auth.check_password(
                claimed, password
            ):
                raise Forbidden("Invalid password")
            authenticated.append(claimed)

        return check

    def _user_from_identifier(self, auth: Mapping[str, Any]) -> str:
        identifier = auth.get("identifier")
        if isinstance(identifier, Mapping):
            if identifier.get("type") != "m.id.user":
                raise MatrixError("Unknown identifier type", Codes.INVALID_PARAM, status=400)
            user = identifier.get("user")
        else:
            user = auth.get("user")  # the deprecated top-level field
        if not isinstance(user, str) or not user:
            raise MatrixError("Missing user identifier", Codes.MISSING_PARAM, status=400)
        if user.startswith("@"):
            return user
        return f"@{user.lower()}:{self.server_name}"

    async def require_password(
        self, user_id: str | None, auth: Mapping[str, Any] | None, purpose: str
    ) -> str:
        """Complete the password flow (raising InteractiveAuthRequired until done); returns
        the user it authenticated."""
        authenticated: list[str] = []
        await self.uia.check(
            auth,
            PASSWORD_FLOWS,
            {PASSWORD: self.password_stage(user_id, authenticated)},
            # Sessions are bound to the user as well as the operation.
            purpose=f"{purpose} {user_id or ''}",
        )
        if not authenticated:  # a session completed by an earlier request cannot exist here
            raise Forbidden("Authentication did not complete")
        return authenticated[0]

    # -- account management --------------------------------------------------------------

    async def change_password(
        self,
        user_id: str | None,
        device_id: str | None,
        new_password: str,
        logout_devices: bool,
        auth: Mapping[str, Any] | None,
    ) -> None:
        """C-S API "POST /account/password": with logout_devices, every other device (and its
        tokens) is deleted; the requesting device stays logged in."""
        user_id = await self.require_password(user_id, auth, "password")
        password_hash = await self.auth.hash_password(new_password)
        others: list[str] = []
        if logout_devices:
            devices = await self.storage.accounts.get_devices(user_id)
            others = [d.device_id for d in devices if d.device_id != device_id]
        if not others:
            async with self.storage.db.transaction() as txn:
                await self.user_data.set_password_hash_txn(txn, user_id, password_hash)
            return
        async with self.auth.device_lists.changing(user_id) as change:
            await self.user_data.set_password_hash_txn(change.txn, user_id, password_hash)
            await self.storage.accounts.delete_devices_txn(change.txn, user_id, others)
            change.deleted += others

    async def deactivate(self, user_id: str | None, auth: Mapping[str, Any] | None) -> str:
        """C-S API "POST /account/deactivate": no login and no token works any more, its
        3PIDs are unbound, and the user leaves every room (and declines invites and knocks).
        Returns the user ID."""
        user_id = await self.require_password(user_id, auth, "deactivate")
        devices = await self.storage.accounts.get_devices(user_id)
        async with self.auth.device_lists.changing(user_id) as change:
            await self.user_data.mark_deactivated_txn(change.txn, user_id)
            # Its email addresses are free for other accounts again.
            await self.storage.threepids.delete_user_threepids_txn(change.txn, user_id)
            await self.storage.accounts.delete_devices_txn(change.txn, user_id, None)
            change.deleted += [d.device_id for d in devices]
        rooms: list[str] = []
        for membership in ("join", "invite", "knock"):
            rooms += await self.storage.rooms.get_rooms_for_user(user_id, membership)
        await asyncio.gather(*(self._leave(room_id, user_id) for room_id in rooms))
        logger.info("deactivated user_id=%s rooms_left=%d", user_id, len(rooms))
        return user_id

    async def _leave(self, room_id: str, user_id: str) -> None:
        try:
            await self.events.send_event(
                room_id, MEMBER, user_id, {"membership": "leave"}, state_key=user_id
            )
        except MatrixError as e:
            logger.warning(
                "deactivated user not removed room_id=%s user_id=%s errcode=%s",
                room_id,
                user_id,
                e.errcode,
            )
