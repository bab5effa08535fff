"""Serving as a notary: GET /_matrix/key/v2/query/{serverName} and POST /_matrix/key/v2/query
(spec: server-server-api "Querying Keys Through Another Server"). Each response keeps the
origin's signature and gains ours. No request authentication: anyone may ask."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from signedjson.sign import sign_json

from client_api.http import json_body
from federation.server.keys import server_keys_json
from homeserver.clock import Clock, SystemClock
from homeserver.crypto.keyring import Keyring
from homeserver.crypto.keys import ServerKeys
from homeserver.errors import Codes, MatrixError
from homeserver.identifiers import is_valid_server_name

# Set while the app runs, like client_api.http.CORE: the keyring needs storage.
KEYRING: web.AppKey[Keyring] = web.AppKey("keyring", Keyring)

# server name -> (key IDs asked for, empty for all; the minimum_valid_until_ts to honour)
Queries = dict[str, tuple[list[str], int]]


class KeyQueryServlet:
    def __init__(self, server_name: str, keys: ServerKeys, clock: Clock | None = None) -> None:
        self._server_name = server_name
        self._keys = keys
        self._clock = clock or SystemClock()

    async def on_get(self, request: web.Request) -> web.Response:
        server_name = _server_name(request.match_info["serverName"])
        raw = request.query.get("minimum_valid_until_ts")
        if raw is None:
            minimum_valid_until_ts = self._clock.time_ms()
        elif raw.isascii() and raw.isdigit():
            minimum_valid_until_ts = int(raw)
        else:
            raise MatrixError("minimum_valid_until_ts must be an integer", Codes.INVALID_PARAM)
        queries: Queries = {server_name: ([], minimum_valid_until_ts)}
        return web.json_response(await self._answer(request.app[KEYRING], queries))

    async def on_post(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        if "server_keys" not in body:
            raise MatrixError("server_keys is required", Codes.MISSING_PARAM)
        server_keys = body["server_keys"]
        if not isinstance(server_keys, dict):
            raise MatrixError("server_keys must be an object", Codes.BAD_JSON)
        now = self._clock.time_ms()
        queries: Queries = {}
        for server_name, criteria in server_keys.items():
            if not isinstance(criteria, dict):
                raise MatrixError(f"server_keys.{server_name} must be an object", Codes.BAD_JSON)
            timestamps = []
            for key_id, criterion in criteria.items():
                ts = (
                    criterion.get("minimum_valid_until_ts", now)
                    if isinstance(criterion, dict)
                    else None
                )
                if not isinstance(ts, int) or isinstance(ts, bool):
                    raise MatrixError(
                        f"server_keys.{server_name}.{key_id} must be an object with an integer"
                        " minimum_valid_until_ts",
                        Codes.BAD_JSON,
                    )
                timestamps.append(ts)
            # One response holds all of a server's keys: it must satisfy the most demanding.
            queries[_server_name(server_name)] = (list(criteria), max(timestamps, default=now))
        return web.json_response(await self._answer(request.app[KEYRING], queries))

    async def _answer(self, keyring: Keyring, queries: Queries) -> dict[str, Any]:
        """Servers with neither a cached nor a fetchable response are left out (keys_query)."""
        responses = await asyncio.gather(
            *(self._response(keyring, name, *query) for name, query in queries.items())
        )
        return {"server_keys": [r for r in responses if r is not None]}

    async def _response(
        self, keyring: Keyring, server_name: str, key_ids: list[str], minimum_valid_until_ts: int
    ) -> dict[str, Any] | None:
        if server_name == self._server_name:
            return server_keys_json(self._server_name, self._keys, self._clock.time_ms())
        response = await keyring.key_response(server_name, key_ids, minimum_valid_until_ts)
        if response is None:
            return None
        return sign_json(response, self._server_name, self._keys.signing_key)

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_matrix/key/v2/query/{serverName}", self.on_get)
        router.add_post("/_matrix/key/v2/query", self.on_post)


def _server_name(value: str) -> str:
    if not is_valid_server_name(value):
        raise MatrixError(f"{value!r} is not a server name", Codes.INVALID_PARAM)
    return value
