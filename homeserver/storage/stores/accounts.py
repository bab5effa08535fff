"""Users, devices and access/refresh tokens (tokens are looked up by their SHA-256).

Every request looks its access token up, so token owners are kept in memory. Tokens are
deleted only here (`delete_devices_txn`, `delete_device_tokens_txn`, `_revoke_pair_txn`;
deactivating a user deletes all of theirs in the same transaction), and each deletion forgets
every remembered owner, before and after its commit: a revoked token stops working at once.
With several processes, each one's cache must hear of the deletions (a notifier message), as
each one's notifier hears of events.

Refresh rotation (C-S API "Refreshing access tokens"): each access token row names the refresh
token issued with it and, until the pair is first used, the refresh token it replaced. A
device's tokens change under its device row's lock, taken first (PostgreSQL; SQLite runs one
write transaction at a time), so a refresh, the first use of its result and a logout of the
device run one after another and cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.lru import LruCache
from homeserver.storage.database import Database, Txn


@dataclass(frozen=True, slots=True)
class TokenOwner:
    user_id: str
    device_id: str
    expires_ts: int | None
    is_admin: bool
    deactivated: bool
    # Issued by a refresh and not used yet: its first use revokes the pair it replaced.
    replaces_tokens: bool


@dataclass(frozen=True, slots=True)
class Device:
    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None


class AccountsStore:
    def __init__(self, db: Database, token_cache_size: int = 50_000) -> None:
        self.db = db
        self._owners: LruCache[str, TokenOwner] = LruCache(token_cache_size)
        # Moves on every deletion: a read that overlapped one does not fill the cache, since
        # it may have seen the row just before it went.
        self._deletions = 0

    def _forget_token_owners(self) -> None:
        self._deletions += 1
        self._owners = LruCache(self._owners.max_size)

    def _forget_token_owners_txn(self, txn: Txn) -> None:
        self._forget_token_owners()
        txn.call_after(self._forget_token_owners)

    async def create_user_txn(
        self, txn: Txn, user_id: str, password_hash: str | None, is_admin: bool, now: int
    ) -> bool:
        """False when the user ID is taken."""
        rows = await txn.fetch(
            "INSERT INTO users (user_id, password_hash, is_admin, created_ts)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING RETURNING user_id",
            user_id,
            password_hash,
            is_admin,
            now,
        )
        return bool(rows)

    async def user_exists(self, user_id: str) -> bool:
        return await self.db.fetchval("SELECT 1 FROM users WHERE user_id = $1", user_id) is not None

    async def get_password_hash(self, user_id: str) -> tuple[str | None, bool] | None:
        """(password hash, deactivated), or None for an unknown user."""
        row = await self.db.fetchrow(
            "SELECT password_hash, deactivated FROM users WHERE user_id = $1", user_id
        )
        return None if row is None else (row[0], bool(row[1]))

    async def add_device_txn(
        self, txn: Txn, user_id: str, device_id: str, display_name: str | None, now: int
    ) -> None:
        await txn.execute(
            "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO UPDATE"
            " SET display_name = COALESCE(excluded.display_name, devices.display_name)",
            user_id,
            device_id,
            display_name,
            now,
        )

    async def add_tokens_txn(
        self,
        txn: Txn,
        user_id: str,
        device_id: str,
        access_hash: str,
        expires_ts: int | None,
        refresh_hash: str | None,
        now: int,
        replaces_refresh_hash: str | None = None,
    ) -> None:
        await txn.execute(
            "INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts,"
            " refresh_token_hash, replaces_refresh_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            access_hash,
            user_id,
            device_id,
            now,
            expires_ts,
            refresh_hash,
            replaces_refresh_hash,
        )
        if refresh_hash is not None:
            await txn.execute(
                "INSERT INTO refresh_tokens (token_hash, user_id, device_id, created_ts)"
                " VALUES ($1, $2, $3, $4)",
                refresh_hash,
                user_id,
                device_id,
                now,
            )

    async def get_token_owner(self, access_hash: str) -> TokenOwner | None:
        owner = self._owners.get_hit(access_hash)
        if owner is not None:
            return owner
        deletions = self._deletions
        row = await self.db.fetchrow(
            "SELECT t.user_id, t.device_id, t.expires_ts, u.is_admin, u.deactivated,"
            " t.replaces_refresh_hash IS NOT NULL"
            " FROM access_tokens t JOIN users u ON u.user_id = t.user_id"
            " WHERE t.token_hash = $1",
            access_hash,
        )
        if row is None:
            return None
        owner = TokenOwner(row[0], row[1], row[2], bool(row[3]), bool(row[4]), bool(row[5]))
        if deletions == self._deletions:
            self._owners.put(access_hash, owner)
        return owner

    async def _lock_device_txn(self, txn: Txn, user_id: str, device_id: str) -> None:
        if self.db.dialect == "postgres":
            await txn.execute(
                "SELECT 1 FROM devices WHERE user_id = $1 AND device_id = $2 FOR UPDATE",
                user_id,
                device_id,
            )

    async def rotate_refresh_token_txn(self, txn: Txn, refresh_hash: str) -> tuple[str, str] | None:
        """Make way for the pair that replaces this refresh token: (user_id, device_id), or
        None when the token is unknown or revoked. Using it revokes the pair it replaced; a
        pair an earlier refresh with it issued, never used (the client lost that answer), is
        revoked too, so one chain of tokens stays valid."""
        row = await txn.fetchrow(
            "SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = $1", refresh_hash
        )
        if row is None:
            return None
        user_id, device_id = row[0], row[1]
        await self._lock_device_txn(txn, user_id, device_id)
        # Read again under the lock: a concurrent first use of its successor may have revoked it.
        current = await txn.fetchrow(
            "SELECT a.replaces_refresh_hash FROM refresh_tokens r"
            " LEFT JOIN access_tokens a ON a.refresh_token_hash = r.token_hash"
            " WHERE r.token_hash = $1",
            refresh_hash,
        )
        if current is None:
            return None
        if current[0] is not None:
            await self._revoke_pair_txn(txn, current[0])
        unused = await txn.fetch(
            "SELECT refresh_token_hash FROM access_tokens WHERE replaces_refresh_hash = $1",
            refresh_hash,
        )
        for successor in unused:
            await self._revoke_pair_txn(txn, successor[0])
        return user_id, device_id

    async def retire_replaced_pair_txn(
        self, txn: Txn, user_id: str, device_id: str, access_hash: str
    ) -> None:
        """The first use of an access token a refresh issued: revoke the pair it replaced."""
        await self._lock_device_txn(txn, user_id, device_id)
        replaced = await txn.fetchval(
            "SELECT replaces_refresh_hash FROM access_tokens WHERE token_hash = $1", access_hash
        )
        if replaced is not None:
            await self._revoke_pair_txn(txn, replaced)

    async def _revoke_pair_txn(self, txn: Txn, refresh_hash: str) -> None:
        """Delete a refresh token and the access token issued with it; the pair that replaced
        them no longer has anything to revoke."""
        self._forget_token_owners_txn(txn)
        await txn.execute("DELETE FROM refresh_tokens WHERE token_hash = $1", refresh_hash)
        await txn.execute("DELETE FROM access_tokens WHERE refresh_token_hash = $1", refresh_hash)
        await txn.execute(
            "UPDATE access_tokens SET replaces_refresh_hash = NULL"
            " WHERE replaces_refresh_hash = $1",
            refresh_hash,
        )

    async def delete_device_tokens_txn(self, txn: Txn, user_id: str, device_id: str) -> None:
        self._forget_token_owners_txn(txn)
        await self._lock_device_txn(txn, user_id, device_id)
        for table in ("access_tokens", "refresh_tokens"):
            await txn.execute(
                f"DELETE FROM {table} WHERE user_id = $1 AND device_id = $2", user_id, device_id
            )

    async def delete_devices_txn(
        self, txn: Txn, user_id: str, device_ids: list[str] | None
    ) -> None:
        """Delete the devices and their tokens; None means every device of the user."""
        self._forget_token_owners_txn(txn)
        # The device rows first: they are the lock a device's token changes take first.
        # A device's pushers go with it: a phone signed out gets no more notifications.
        for table in ("devices", "access_tokens", "refresh_tokens", "pushers"):
            if device_ids is None:
                await txn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id)
            else:
                clause, arg = self.db.in_list("device_id", 2, device_ids)
                await txn.execute(
                    f"DELETE FROM {table} WHERE user_id = $1 AND {clause}", user_id, arg
                )

    async def get_devices(self, user_id: str) -> list[Device]:
        rows = await self.db.fetch(
            "SELECT user_id, device_id, display_name, last_seen_ts, last_seen_ip FROM devices"
            " WHERE user_id = $1 ORDER BY device_id",
            user_id,
        )
        return [Device(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def add_registration_token(
        self, token: str, uses_allowed: int | None, expiry_ts: int | None
    ) -> None:
        await self.db.execute(
            "INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3)",
            token,
            uses_allowed,
            expiry_ts,
        )

    async def registration_token_valid(self, token: str, now: int) -> bool:
        """Whether the token could register an account now: known, not used up, not expired."""
        row = await self.db.fetchrow(
            "SELECT 1 FROM registration_tokens WHERE token = $1"
            " AND (uses_allowed IS NULL OR completed < uses_allowed)"
            " AND (expiry_ts IS NULL OR expiry_ts > $2)",
            token,
            now,
        )
        return row is not None

    async def use_registration_token_txn(self, txn: Txn, token: str, now: int) -> bool:
        """Count one completed registration with a valid token; False when unknown, used up
        or expired (the check is in the same statement, so concurrent registrations cannot
        use it more often than allowed)."""
        rows = await txn.fetch(
            "UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1"
            " AND (uses_allowed IS NULL OR completed < uses_allowed)"
            " AND (expiry_ts IS NULL OR expiry_ts > $2) RETURNING token",
            token,
            now,
        )
        return bool(rows)
