"""PushersHandler: a user's pushers (C-S API "Pushers", pusher.yaml): GET /pushers and
POST /pushers/set. The kinds accepted are those the PusherPool has workers for; an email
pusher only for an address bound to its user (a 3PID), as Synapse has it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from homeserver.clock import Clock
from homeserver.errors import Codes, InvalidParam, MatrixError
from homeserver.identifiers import canonical_email
from homeserver.push.email_pusher import EMAIL, EMAIL_APP_ID, check_email_pusher
from homeserver.push.pusher_pool import PusherPool
from homeserver.storage.stores.push import Pusher, PushStore
from homeserver.storage.stores.threepids import MEDIUM_EMAIL, ThreepidsStore

JsonDict = dict[str, Any]
HTTP = "http"
GATEWAY_PATH = "/_matrix/push/v1/notify"
MAX_PUSHKEY_BYTES = 512
MAX_APP_ID_CHARS = 64
# Required when `kind` is not null (pusher.yaml).
_REQUIRED_TO_SET = ("app_display_name", "device_display_name", "lang", "data")


class PushersHandler:
    def __init__(
        self,
        store: PushStore,
        pool: PusherPool,
        clock: Clock,
        stream_position: Callable[[], int],
        threepids: ThreepidsStore,
    ) -> None:
        self.store = store
        self.threepids = threepids
        self.pool = pool
        self.clock = clock
        # Where a new pusher starts: notifications from before it was set are not pushed.
        self.stream_position = stream_position

    async def get_pushers(self, user_id: str) -> list[JsonDict]:
        out = []
        for pusher in await self.store.get_pushers([user_id]):
            entry: JsonDict = {
                "pushkey": pusher.pushkey,
                "kind": pusher.kind,
                "app_id": pusher.app_id,
                "app_display_name": pusher.app_display_name,
                "device_display_name": pusher.device_display_name,
                "lang": pusher.lang,
                "data": pusher.data,
            }
            if pusher.profile_tag is not None:
                entry["profile_tag"] = pusher.profile_tag
            out.append(entry)
        return out

    async def set_pusher(
        self, user_id: str, device_id: str | None, body: Mapping[str, Any]
    ) -> None:
        """POST /pushers/set: create or update (kind given) or delete (kind null)."""
        app_id, pushkey = body.get("app_id"), body.get("pushkey")
        missing = [k for k in ("kind", "app_id", "pushkey") if k not in body]
        if missing:
            raise MatrixError(f"Missing parameters: {', '.join(missing)}", Codes.MISSING_PARAM)
        if not isinstance(app_id, str) or not app_id or len(app_id) > MAX_APP_ID_CHARS:
            raise InvalidParam(f"app_id must be a string of 1 to {MAX_APP_ID_CHARS} characters")
        if not isinstance(pushkey, str) or not pushkey:
            raise InvalidParam("pushkey must be a non-empty string")
        if len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
            raise InvalidParam(f"pushkey is limited to {MAX_PUSHKEY_BYTES} bytes")
        kind = body["kind"]
        if kind is None:
            if app_id == EMAIL_APP_ID:
                # Email pushers are stored under the canonical address.
                pushkey = canonical_email(pushkey) or pushkey
            await self.store.delete_pusher(user_id, app_id, pushkey)
            await self.pool.pusher_removed(user_id, app_id, pushkey)
            return
        if kind not in self.pool.kinds:
            raise InvalidParam(f"Unsupported pusher kind {kind!r}")
        missing = [k for k in _REQUIRED_TO_SET if k not in body]
        if missing:
            raise MatrixError(f"Missing parameters: {', '.join(missing)}", Codes.MISSING_PARAM)
        for key in ("app_display_name", "device_display_name", "lang"):
            if not isinstance(body[key], str):
                raise InvalidParam(f"{key} must be a string")
        profile_tag = body.get("profile_tag")
        if profile_tag is not None and not isinstance(profile_tag, str):
            raise InvalidParam("profile_tag must be a string")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise InvalidParam("append must be a boolean")
        data = body["data"]
        if not isinstance(data, dict):
            raise InvalidParam("data must be an object")
        if kind == HTTP:
            _check_gateway_url(data.get("url"))
        elif kind == EMAIL:
            pushkey = check_email_pusher(app_id, pushkey)
            # Else anyone could make this server mail any address.
            if await self.threepids.get_owner(MEDIUM_EMAIL, pushkey) != user_id:
                raise MatrixError(
                    "Email not found: bind the address to your account first (/account/3pid)",
                    Codes.THREEPID_NOT_FOUND,
                )
        pusher = Pusher(
            user_id,
            app_id,
            pushkey,
            kind,
            body["app_display_name"],
            body["device_display_name"],
            profile_tag,
            body["lang"],
            data,
            self.clock.time_ms(),
            device_id,
            self.stream_position(),
        )
        await self.store.set_pusher(pusher, append)
        await self.pool.pusher_set(pusher)


def _check_gateway_url(url: Any) -> None:
    """pusher.yaml: an http pusher's `data.url` MUST be an HTTPS URL with the path
    /_matrix/push/v1/notify."""
    if not isinstance(url, str):
        raise InvalidParam("data.url is required for http pushers")
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path != GATEWAY_PATH:
        raise InvalidParam(f"data.url must be an https URL with the path {GATEWAY_PATH}")
