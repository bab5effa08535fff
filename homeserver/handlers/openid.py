"""OpenID tokens: a user asks for one (C-S API "OpenID", POST /user/{userId}/openid/request_token)
and hands it to a third party, which exchanges it for the user's ID (S-S API "OpenID",
GET /openid/userinfo). The tokens are good for nothing else."""

from __future__ import annotations

import secrets
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import Codes, Forbidden, MatrixError
from homeserver.handlers.auth import token_hash
from homeserver.storage.stores.openid import OpenIdStore


class OpenIdTokens:
    # An hour, as in the spec's example: long enough to sign in to an integration manager,
    # short enough that a token a third party leaks soon stops working.
    LIFETIME_MS = 60 * 60 * 1000

    def __init__(self, store: OpenIdStore, server_name: str, clock: Clock) -> None:
        self.store = store
        self.server_name = server_name
        self.clock = clock

    async def request_token(self, requester: str, user_id: str) -> dict[str, Any]:
        """A new token for `requester`, as openid_token.yaml describes it. `user_id` is the
        one named in the path, which must be the requester."""
        if user_id != requester:
            raise Forbidden("Cannot request an OpenID token for another user")
        token = secrets.token_urlsafe(32)
        now = self.clock.time_ms()
        await self.store.add_token(token_hash(token), requester, now + self.LIFETIME_MS, now)
        return {
            "access_token": token,
            "token_type": "Bearer",
            "matrix_server_name": self.server_name,
            "expires_in": self.LIFETIME_MS // 1000,
        }

    async def user_info(self, token: str) -> dict[str, Any]:
        """{"sub": owner} for a valid token; 401 M_UNKNOWN_TOKEN for any other."""
        user_id = await self.store.get_user_id(token_hash(token), self.clock.time_ms())
        if user_id is None:
            raise MatrixError("Access token unknown or expired", Codes.UNKNOWN_TOKEN)
        return {"sub": user_id}
