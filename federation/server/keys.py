"""Publishing this server's signing keys: GET /_matrix/key/v2/server
(spec: server-server-api "Publishing Keys"; the response is signed with the key it publishes).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from signedjson.key import encode_verify_key_base64
from signedjson.sign import sign_json

from homeserver.clock import Clock, SystemClock
from homeserver.crypto.keys import ServerKeys

# How long other servers may cache the response. The spec caps what they honour at 7 days and
# asks us not to return responses expiring within the hour; one day matches Synapse's default
# and bounds how long a replaced key is still trusted.
KEY_VALIDITY_MS = 24 * 60 * 60 * 1000


def server_keys_json(
    server_name: str, keys: ServerKeys, now_ms: int, validity_ms: int = KEY_VALIDITY_MS
) -> dict[str, Any]:
    """The signed key response body, computed afresh so valid_until_ts always moves forward."""
    body: dict[str, Any] = {
        "server_name": server_name,
        "verify_keys": {keys.key_id: {"key": keys.verify_key_base64}},
        "old_verify_keys": {
            key_id: {"key": encode_verify_key_base64(old.key), "expired_ts": old.expired_ts}
            for key_id, old in keys.old_verify_keys.items()
            if key_id != keys.key_id
        },
        "valid_until_ts": now_ms + validity_ms,
    }
    return sign_json(body, server_name, keys.signing_key)


class ServerKeyServlet:
    def __init__(self, server_name: str, keys: ServerKeys, clock: Clock | None = None) -> None:
        self._server_name = server_name
        self._keys = keys
        self._clock = clock or SystemClock()

    async def on_get(self, request: web.Request) -> web.Response:
        return web.json_response(
            server_keys_json(self._server_name, self._keys, self._clock.time_ms())
        )

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_matrix/key/v2/server", self.on_get)
