"""Third-party identifiers bound to accounts and the sessions that validate them (C-S API
"Adding Account Administrative Contact Information"; schema 0023_threepids.sql)."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.storage.database import Database, Row, Txn

MEDIUM_EMAIL = "email"


@dataclass(frozen=True, slots=True)
class Threepid:
    medium: str
    address: str
    validated_ts: int
    added_ts: int


@dataclass(frozen=True, slots=True)
class ValidationSession:
    session_id: str
    medium: str
    address: str
    client_secret: str
    last_send_attempt: int
    next_link: str | None
    modified_ts: int
    validated_ts: int | None


_SESSION_COLUMNS = (
    "session_id, medium, address, client_secret, last_send_attempt, next_link, modified_ts,"
    " validated_ts"
)


def _session(row: Row) -> ValidationSession:
    return ValidationSession(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


class ThreepidsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- bound identifiers -------------------------------------------------------------

    async def get_owner(self, medium: str, address: str) -> str | None:
        owner: str | None = await self.db.fetchval(
            "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
            medium,
            address,
        )
        return owner

    async def get_threepids(self, user_id: str) -> list[Threepid]:
        rows = await self.db.fetch(
            "SELECT medium, address, validated_ts, added_ts FROM user_threepids"
            " WHERE user_id = $1 ORDER BY added_ts, medium, address",
            user_id,
        )
        return [Threepid(r[0], r[1], r[2], r[3]) for r in rows]

    async def add_threepid(
        self, user_id: str, medium: str, address: str, validated_ts: int, now: int
    ) -> str:
        """Bind the address to `user_id` unless it is bound already; returns its owner (the
        unique key settles two accounts adding the same address at once)."""
        async with self.db.transaction() as txn:
            await txn.execute(
                "INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (medium, address) DO NOTHING",
                medium,
                address,
                user_id,
                validated_ts,
                now,
            )
            owner: str = await txn.fetchval(
                "SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2",
                medium,
                address,
            )
        return owner

    async def delete_threepid(self, user_id: str, medium: str, address: str) -> bool:
        """Unbind the address from `user_id`, and in the same transaction delete the user's
        email pushers mailing it (their pushkey is the canonical address, pushers.py), so no
        mail goes to an address its user no longer claims. False if it was not bound."""
        async with self.db.transaction() as txn:
            deleted = await txn.fetch(
                "DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3"
                " RETURNING address",
                user_id,
                medium,
                address,
            )
            if deleted and medium == MEDIUM_EMAIL:
                await txn.execute(
                    "DELETE FROM pushers WHERE user_id = $1 AND kind = 'email' AND pushkey = $2",
                    user_id,
                    address,
                )
        return bool(deleted)

    async def delete_user_threepids_txn(self, txn: Txn, user_id: str) -> None:
        """Account deactivation: every address goes (its pushers go with its devices)."""
        await txn.execute("DELETE FROM user_threepids WHERE user_id = $1", user_id)

    # -- validation sessions -----------------------------------------------------------

    async def get_session(self, session_id: str) -> ValidationSession | None:
        row = await self.db.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions WHERE session_id = $1",
            session_id,
        )
        return _session(row) if row is not None else None

    async def find_pending_session(
        self, client_secret: str, medium: str, address: str, modified_after: int
    ) -> ValidationSession | None:
        """The newest unvalidated session of this client secret and address changed after
        `modified_after` (not expired)."""
        row = await self.db.fetchrow(
            f"SELECT {_SESSION_COLUMNS} FROM threepid_validation_sessions"
            " WHERE client_secret = $1 AND medium = $2 AND address = $3"
            " AND validated_ts IS NULL AND modified_ts > $4"
            " ORDER BY modified_ts DESC LIMIT 1",
            client_secret,
            medium,
            address,
            modified_after,
        )
        return _session(row) if row is not None else None

    async def start_session(
        self, session: ValidationSession, token_hash: str, expired_up_to: int
    ) -> None:
        """Store a new session and the token mailed for it, deleting every session last
        changed at or before `expired_up_to`: sessions start rarely next to their lifetime,
        so this keeps the tables small without a background job."""
        async with self.db.transaction() as txn:
            await txn.execute(
                "DELETE FROM threepid_validation_tokens WHERE session_id IN (SELECT session_id"
                " FROM threepid_validation_sessions WHERE modified_ts <= $1)",
                expired_up_to,
            )
            await txn.execute(
                "DELETE FROM threepid_validation_sessions WHERE modified_ts <= $1", expired_up_to
            )
            await txn.execute(
                f"INSERT INTO threepid_validation_sessions ({_SESSION_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                session.session_id,
                session.medium,
                session.address,
                session.client_secret,
                session.last_send_attempt,
                session.next_link,
                session.modified_ts,
                session.validated_ts,
            )
            await self._add_token_txn(txn, session.session_id, token_hash)

    async def session_resent(
        self, session_id: str, send_attempt: int, token_hash: str, now: int
    ) -> None:
        """Another mail with a new token went out for the session."""
        async with self.db.transaction() as txn:
            await txn.execute(
                "UPDATE threepid_validation_sessions SET last_send_attempt = $2,"
                " modified_ts = $3 WHERE session_id = $1",
                session_id,
                send_attempt,
                now,
            )
            await self._add_token_txn(txn, session_id, token_hash)

    async def _add_token_txn(self, txn: Txn, session_id: str, token_hash: str) -> None:
        await txn.execute(
            "INSERT INTO threepid_validation_tokens (session_id, token_hash) VALUES ($1, $2)",
            session_id,
            token_hash,
        )

    async def get_token_hashes(self, session_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT token_hash FROM threepid_validation_tokens WHERE session_id = $1",
            session_id,
        )
        return [r[0] for r in rows]

    async def mark_validated(self, session_id: str, now: int) -> None:
        """The session's address is proved (a second validation keeps the first time);
        the session lives on for another lifetime, for the client to add the address."""
        await self.db.execute(
            "UPDATE threepid_validation_sessions SET validated_ts = COALESCE(validated_ts, $2),"
            " modified_ts = $2 WHERE session_id = $1",
            session_id,
            now,
        )
