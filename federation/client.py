"""FederationClient: the outbound requests other parts of the server make, on the transport
(discovery, signing, TLS): key fetches for the keyring and transactions for the sender."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from federation.discovery import FederationError
from federation.sender.sender import PermanentFailure
from federation.transport import FederationTransport, RemoteError
from homeserver.crypto.keyring import KeyFetchError

JsonDict = dict[str, Any]


class FederationClient:
    def __init__(self, transport: FederationTransport) -> None:
        self.transport = transport

    # -- the keyring's KeyFetchClient ----------------------------------------------------------

    async def get_server_keys(self, server_name: str) -> JsonDict:
        return await self._key_request(server_name, "GET", "/_matrix/key/v2/server", None)

    async def query_notary(self, notary_server_name: str, body: JsonDict) -> JsonDict:
        return await self._key_request(notary_server_name, "POST", "/_matrix/key/v2/query", body)

    async def _key_request(
        self, server_name: str, method: str, path: str, body: JsonDict | None
    ) -> JsonDict:
        try:
            response = await self.transport.request(
                server_name, method, path, content=body, signed=False
            )
        except FederationError as e:
            raise KeyFetchError(str(e)) from e
        if not isinstance(response, dict):
            raise KeyFetchError(f"{server_name} answered {path} with something not an object")
        return response

    # -- the sender's TransactionTransport -----------------------------------------------------

    async def send_transaction(self, destination: str, txn_id: str, body: JsonDict) -> JsonDict:
        path = f"/_matrix/federation/v1/send/{quote(txn_id, safe='')}"
        try:
            response = await self.transport.request(destination, "PUT", path, content=body)
        except RemoteError as e:
            if 400 <= e.status < 500 and e.status != 429:
                raise PermanentFailure(str(e)) from e
            raise
        return response if isinstance(response, dict) else {}
