"""FederationQueries: asking other servers about their aliases and users (S-S API "Querying
for information"), for the directory and profile handlers."""

from __future__ import annotations

from federation.discovery import FederationError
from federation.transport import FederationTransport, RemoteError
from homeserver.errors import Codes, MatrixError, NotFound
from homeserver.handlers.directory import ResolvedAlias
from homeserver.identifiers import domain_of, is_valid_server_name

QUERY = "/_matrix/federation/v1/query"


class FederationQueries:
    def __init__(self, transport: FederationTransport) -> None:
        self.transport = transport

    async def query_alias(self, alias: str) -> ResolvedAlias:
        server = domain_of(alias)
        answer = await self._ask(server, "directory", {"room_alias": alias})
        room_id, servers = answer.get("room_id"), answer.get("servers")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(f"{server} sent no room ID for {alias}", Codes.UNKNOWN, status=502)
        listed = servers if isinstance(servers, list) else []
        named = [s for s in listed if isinstance(s, str) and is_valid_server_name(s)]
        # The alias's own server can help too, whatever it listed.
        return ResolvedAlias(room_id, list(dict.fromkeys([*named, server])))

    async def query_profile(self, user_id: str) -> dict[str, str]:
        answer = await self._ask(domain_of(user_id), "profile", {"user_id": user_id})
        return {
            k: v
            for k, v in answer.items()
            if k in ("displayname", "avatar_url") and isinstance(v, str)
        }

    async def _ask(self, server: str, kind: str, query: dict[str, str]) -> dict[str, object]:
        try:
            answer = await self.transport.request(server, "GET", f"{QUERY}/{kind}", query=query)
        except RemoteError as e:
            if e.status == 404:
                raise NotFound(e.error or f"{server} does not know that") from e
            raise MatrixError(f"{server} answered {e.status}", Codes.UNKNOWN, status=502) from e
        except FederationError as e:
            raise MatrixError(f"{server} could not be reached", Codes.UNKNOWN, status=502) from e
        if not isinstance(answer, dict):
            raise MatrixError(f"{server} sent an unusable answer", Codes.UNKNOWN, status=502)
        return answer
