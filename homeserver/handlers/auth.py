"""AuthHandler: accounts, devices and tokens (C-S API "Client Authentication", "Login",
"Account registration"). Passwords are hashed with argon2id in a thread; tokens are random,
stored as SHA-256 hashes, and revocable per device."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.handlers.device_lists import DeviceLists
from homeserver.ratelimit import RateLimiter
from homeserver.storage import Storage
from homeserver.storage.database import Txn

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is making a request, resolved from its access token."""

    user_id: str
    device_id: str
    is_admin: bool
    access_token_hash: str


@dataclass(frozen=True, slots=True)
class LoginResult:
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str | None
    expires_in_ms: int | None


class RegistrationTokenUsedUp(MatrixError):
    """A registration token that passed its stage was used up (or expired) by the time the
    account was to be created."""

    def __init__(self) -> None:
        super().__init__("Invalid registration token", Codes.UNAUTHORIZED, status=401)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_device_id() -> str:
    return "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(10))


class AuthHandler:
    # How long an access token lives when the client asked for a refresh token.
    ACCESS_TOKEN_LIFETIME_MS = 5 * 60 * 1000

    def __init__(
        self,
        storage: Storage,
        server_name: str,
        clock: Clock,
        device_lists: DeviceLists,
        failed_logins: RateLimiter | None = None,
    ) -> None:
        self.storage = storage
        self.server_name = server_name
        self.clock = clock
        # Deleting a device changes the user's device list (other users' clients stop
        # encrypting for it).
        self.device_lists = device_lists
        # Wrong passwords per account, wherever a password is checked (login and every
        # user-interactive password stage); right ones are not counted, so nobody can lock
        # an account out by failing on purpose faster than its owner logs in.
        self.failed_logins = failed_logins
        self._hasher = PasswordHasher()
        self._dummy_hash: str | None = None
        # Each argon2id hash holds 64 MiB while it runs, and runs on a core: more at once
        # than there are cores only adds memory (a burst of logins took the server from
        # 55 to 427 MB with six at once in bench/e2ee_bench.py).
        self._hashing = asyncio.Semaphore(os.cpu_count() or 1)

    async def _in_hash_thread(self, work: Callable[..., T], *args: str) -> T:
        async with self._hashing:
            return await asyncio.to_thread(work, *args)

    async def hash_password(self, password: str) -> str:
        return await self._in_hash_thread(self._hasher.hash, password)

    async def check_password(self, user_id: str, password: str) -> bool:
        """Raises 429 once `user_id` has had too many wrong passwords recently."""
        if self.failed_logins is not None:
            self.failed_logins.check_available(user_id)
        if await self._password_matches(user_id, password):
            return True
        if self.failed_logins is not None:
            self.failed_logins.check(user_id)
        return False

    async def _password_matches(self, user_id: str, password: str) -> bool:
        stored = await self.storage.accounts.get_password_hash(user_id)
        if stored is None or stored[0] is None or stored[1]:
            # Spend the same time on unknown users, so timing does not reveal who exists.
            if self._dummy_hash is None:
                self._dummy_hash = await self.hash_password(secrets.token_hex(16))
            await self._in_hash_thread(self._verify, self._dummy_hash, password)
            return False
        return await self._in_hash_thread(self._verify, stored[0], password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def register(
        self,
        localpart: str,
        password: str | None,
        *,
        device_id: str | None = None,
        device_display_name: str | None = None,
        is_admin: bool = False,
        with_device: bool = True,
        refresh_token: bool = False,
        registration_token: str | None = None,
    ) -> LoginResult | str:
        """Create an account; returns its login (or just its user ID without a device).
        Raises M_USER_IN_USE when taken. A registration token (checked by the UIA stage)
        counts one use here, when the account is created, and not before; raises
        RegistrationTokenUsedUp when it can no longer be used."""
        user_id = f"@{localpart}:{self.server_name}"
        password_hash = await self.hash_password(password) if password is not None else None
        now = self.clock.time_ms()
        async with self.storage.db.transaction() as txn:
            created = await self.storage.accounts.create_user_txn(
                txn, user_id, password_hash, is_admin, now
            )
            if not created:
                raise MatrixError("User ID already taken.", Codes.USER_IN_USE)
            if registration_token is not None and not (
                await self.storage.accounts.use_registration_token_txn(txn, registration_token, now)
            ):
                # Raising rolls the new user back.
                raise RegistrationTokenUsedUp()
            if not with_device:
                return user_id
            return await self._login_txn(
                txn, user_id, device_id, device_display_name, refresh_token, now
            )

    async def login(
        self,
        user_id: str,
        *,
        device_id: str | None,
        device_display_name: str | None,
        refresh_token: bool,
    ) -> LoginResult:
        """A new access token for a user already authenticated (password checked)."""
        now = self.clock.time_ms()
        if device_id is not None and await self.storage.e2e_keys.is_cross_signing_key(
            user_id, device_id
        ):
            # C-S API "Cross-signing": device IDs and cross-signing public keys share the key
            # ID namespace of signatures, so a device must not take a key's ID.
            raise MatrixError("That device ID is one of your keys", Codes.INVALID_PARAM)
        async with self.storage.db.transaction() as txn:
            if device_id is not None:
                # Logging in again with a device ID replaces that device's old tokens.
                await self.storage.accounts.delete_device_tokens_txn(txn, user_id, device_id)
            return await self._login_txn(
                txn, user_id, device_id, device_display_name, refresh_token, now
            )

    async def _login_txn(
        self,
        txn: Txn,
        user_id: str,
        device_id: str | None,
        device_display_name: str | None,
        refresh_token: bool,
        now: int,
    ) -> LoginResult:
        device_id = device_id or new_device_id()
        await self.storage.accounts.add_device_txn(
            txn, user_id, device_id, device_display_name, now
        )
        return await self._issue_tokens_txn(txn, user_id, device_id, refresh_token, now)

    async def _issue_tokens_txn(
        self,
        txn: Txn,
        user_id: str,
        device_id: str,
        refresh_token: bool,
        now: int,
        replaces_refresh_hash: str | None = None,
    ) -> LoginResult:
        access = "syt_" + secrets.token_urlsafe(32)
        refresh = "syr_" + secrets.token_urlsafe(32) if refresh_token else None
        expires_in = self.ACCESS_TOKEN_LIFETIME_MS if refresh_token else None
        await self.storage.accounts.add_tokens_txn(
            txn,
            user_id,
            device_id,
            token_hash(access),
            now + expires_in if expires_in else None,
            token_hash(refresh) if refresh else None,
            now,
            replaces_refresh_hash,
        )
        return LoginResult(user_id, device_id, access, refresh, expires_in)

    async def refresh(self, refresh_token: str) -> LoginResult:
        """Trade a refresh token for a new access and refresh token. The old pair stays valid
        until the new one is first used (C-S API "Refreshing access tokens"), so a client that
        lost this answer can refresh again with the old token; that answer then replaces the
        lost one."""
        now = self.clock.time_ms()
        hashed = token_hash(refresh_token)
        async with self.storage.db.transaction() as txn:
            owner = await self.storage.accounts.rotate_refresh_token_txn(txn, hashed)
            if owner is None:
                # Unknown, or replaced by a pair that has since been used: a real logout.
                raise MatrixError(
                    "Unknown refresh token", Codes.UNKNOWN_TOKEN, status=401, soft_logout=False
                )
            user_id, device_id = owner
            return await self._issue_tokens_txn(txn, user_id, device_id, True, now, hashed)

    async def requester_for_token(self, access_token: str) -> Requester:
        hashed = token_hash(access_token)
        owner = await self.storage.accounts.get_token_owner(hashed)
        if owner is None or owner.deactivated:
            raise MatrixError("Unrecognised access token", Codes.UNKNOWN_TOKEN, soft_logout=False)
        if owner.expires_ts is not None and owner.expires_ts <= self.clock.time_ms():
            # Expired, not revoked: the client may refresh and carry on (soft logout).
            raise MatrixError("Access token has expired", Codes.UNKNOWN_TOKEN, soft_logout=True)
        if owner.replaces_tokens:
            # The first use of a refreshed pair: the client has it, so the pair it replaced
            # can go. Later requests read the cleared flag and skip this.
            async with self.storage.db.transaction() as txn:
                await self.storage.accounts.retire_replaced_pair_txn(
                    txn, owner.user_id, owner.device_id, hashed
                )
        return Requester(owner.user_id, owner.device_id, owner.is_admin, hashed)

    async def logout(self, requester: Requester) -> None:
        async with self.device_lists.changing(requester.user_id) as change:
            await self.storage.accounts.delete_devices_txn(
                change.txn, requester.user_id, [requester.device_id]
            )
            change.deleted.append(requester.device_id)

    async def logout_all(self, user_id: str) -> None:
        devices = await self.storage.accounts.get_devices(user_id)
        async with self.device_lists.changing(user_id) as change:
            await self.storage.accounts.delete_devices_txn(change.txn, user_id, None)
            change.deleted += [d.device_id for d in devices]
