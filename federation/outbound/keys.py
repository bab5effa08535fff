"""FederationKeys: other servers' users' end-to-end keys (S-S API "End-to-End Encryption":
POST /user/keys/query and /user/keys/claim), for the E2eKeysHandler's RemoteKeys hook. Each
server is asked once per request, all at once; a server answers for its own users only."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from federation.discovery import FederationError
from federation.transport import FederationTransport, RemoteError
from homeserver.identifiers import domain_of

JsonDict = dict[str, Any]
USER_KEYS = "/_matrix/federation/v1/user/keys"


class FederationKeys:
    def __init__(self, transport: FederationTransport) -> None:
        self.transport = transport

    async def query_keys(self, device_keys: Mapping[str, list[str]]) -> JsonDict:
        sections = ("device_keys", "master_keys", "self_signing_keys")
        return await self._ask_each(f"{USER_KEYS}/query", "device_keys", device_keys, sections)

    async def claim_keys(self, one_time_keys: Mapping[str, Mapping[str, str]]) -> JsonDict:
        return await self._ask_each(
            f"{USER_KEYS}/claim", "one_time_keys", one_time_keys, ("one_time_keys",)
        )

    async def _ask_each(
        self, path: str, field: str, wanted: Mapping[str, Any], sections: tuple[str, ...]
    ) -> JsonDict:
        by_server: dict[str, dict[str, Any]] = {}
        for user_id, value in wanted.items():
            by_server.setdefault(domain_of(user_id), {})[user_id] = value
        result: JsonDict = {section: {} for section in sections} | {"failures": {}}

        async def ask(server: str, users: dict[str, Any]) -> None:
            try:
                answer = await self.transport.request(server, "POST", path, content={field: users})
            except RemoteError as e:
                result["failures"][server] = {"status": e.status, "message": str(e)}
                return
            except FederationError as e:
                result["failures"][server] = {"status": 503, "message": str(e)}
                return
            if not isinstance(answer, dict):
                result["failures"][server] = {"status": 502, "message": "Not an object"}
                return
            for section in sections:
                found = answer.get(section)
                if isinstance(found, dict):
                    result[section].update(
                        {u: v for u, v in found.items() if u in users and domain_of(u) == server}
                    )

        await asyncio.gather(*(ask(server, users) for server, users in by_server.items()))
        return result
