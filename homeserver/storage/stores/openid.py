"""OpenID tokens (C-S API "OpenID", S-S API "OpenID"): who owns each one and until when."""

from __future__ import annotations

from homeserver.storage.database import Database


class OpenIdStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add_token(self, token_hash: str, user_id: str, expires_ts: int, now: int) -> None:
        """Store a new token, deleting every token expired by `now`: issuing is rare next to
        the tokens' lifetime, so this keeps the table small without a background job."""
        async with self.db.transaction() as txn:
            await txn.execute("DELETE FROM openid_tokens WHERE expires_ts <= $1", now)
            await txn.execute(
                "INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)",
                token_hash,
                user_id,
                expires_ts,
            )

    async def get_user_id(self, token_hash: str, now: int) -> str | None:
        """The owner of a token still valid at `now` whose account is not deactivated."""
        user_id: str | None = await self.db.fetchval(
            "SELECT t.user_id FROM openid_tokens t JOIN users u ON u.user_id = t.user_id"
            " WHERE t.token_hash = $1 AND t.expires_ts > $2 AND NOT u.deactivated",
            token_hash,
            now,
        )
        return user_id
