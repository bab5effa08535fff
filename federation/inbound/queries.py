"""GET /_matrix/federation/v1/query/directory and /query/profile (S-S API "Querying for
information"): what this server knows about its own aliases and users."""

from __future__ import annotations

from typing import Any

from homeserver.core import Core
from homeserver.errors import Codes, MatrixError, NotFound
from homeserver.identifiers import domain_of

JsonDict = dict[str, Any]
PROFILE_FIELDS = ("displayname", "avatar_url")


class QueryHandler:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.server_name = core.server.server_name

    async def directory(self, alias: str) -> JsonDict:
        if domain_of(alias) != self.server_name:
            raise NotFound(f"Room alias {alias} is not on this server")
        resolved = await self.core.room_api.directory.resolve(alias)
        return {"room_id": resolved.room_id, "servers": resolved.servers}

    async def profile(self, user_id: str, field: str | None) -> JsonDict:
        if field is not None and field not in PROFILE_FIELDS:
            raise MatrixError(f"Unknown profile field {field!r}", Codes.INVALID_PARAM)
        if domain_of(user_id) != self.server_name:
            raise NotFound(f"{user_id} is not a user of this server")
        profile = await self.core.profile.get_profile(user_id)
        return profile if field is None else {k: v for k, v in profile.items() if k == field}
