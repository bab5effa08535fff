"""RestHelper: short client API calls for behaviour tests (register, login, rooms, sync)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp.test_utils import TestClient

V3 = "/_matrix/client/v3"


@dataclass
class User:
    user_id: str
    access_token: str
    device_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


class RestHelper:
    def __init__(self, client: TestClient[Any, Any]) -> None:
        self.client = client

    async def request(
        self,
        method: str,
        path: str,
        user: User | None = None,
        body: Any = None,
        expect: int = 200,
        **params: str,
    ) -> Any:
        response = await self.client.request(
            method,
            path,
            json=body,
            headers=user.headers if user else None,
            params=params or None,
        )
        data = await response.json()
        assert response.status == expect, (response.status, data)
        return data

    async def register(self, localpart: str, password: str = "correct horse") -> User:
        first = await self.request(
            "POST",
            f"{V3}/register",
            body={"username": localpart, "password": password},
            expect=401,
        )
        done = await self.request(
            "POST",
            f"{V3}/register",
            body={
                "username": localpart,
                "password": password,
                "auth": {"type": "m.login.dummy", "session": first["session"]},
            },
        )
        return User(done["user_id"], done["access_token"], done["device_id"])

    async def login(self, localpart: str, password: str = "correct horse", **extra: Any) -> User:
        """A new device of an existing user (m.login.password); `extra` goes into the body."""
        done = await self.request(
            "POST",
            f"{V3}/login",
            body={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
                **extra,
            },
        )
        return User(done["user_id"], done["access_token"], done["device_id"])

    # -- rooms (client_api/rooms.py, room_reads.py) ----------------------------------------

    async def create_room(self, user: User, expect: int = 200, **body: Any) -> str:
        """POST /createRoom with `body`; returns the room ID (or the error body's errcode)."""
        result = await self.request("POST", f"{V3}/createRoom", user, body=body, expect=expect)
        return str(result["room_id"] if expect == 200 else result["errcode"])

    async def join(self, user: User, room: str, expect: int = 200) -> Any:
        return await self.request("POST", f"{V3}/join/{quote(room)}", user, body={}, expect=expect)

    async def invite(self, user: User, room_id: str, target: str, expect: int = 200) -> Any:
        return await self.request(
            "POST", f"{V3}/rooms/{quote(room_id)}/invite", user, {"user_id": target}, expect
        )

    async def leave(self, user: User, room_id: str, expect: int = 200) -> Any:
        return await self.request(
            "POST", f"{V3}/rooms/{quote(room_id)}/leave", user, body={}, expect=expect
        )

    async def send(
        self,
        user: User,
        room_id: str,
        body: str | dict[str, Any] = "hello",
        event_type: str = "m.room.message",
        txn_id: str | None = None,
        expect: int = 200,
    ) -> str:
        """Send a message (a text body, or any content); returns the event ID."""
        content = {"msgtype": "m.text", "body": body} if isinstance(body, str) else body
        # A fresh transaction ID per call (an attribute of its own: __init__ is shared).
        self._send_count = getattr(self, "_send_count", 0) + 1
        txn = txn_id or f"t{self._send_count}"
        path = f"{V3}/rooms/{quote(room_id)}/send/{quote(event_type)}/{quote(txn)}"
        result = await self.request("PUT", path, user, body=content, expect=expect)
        return str(result.get("event_id", result.get("errcode")))

    async def set_state(
        self,
        user: User,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str = "",
        expect: int = 200,
    ) -> Any:
        path = f"{V3}/rooms/{quote(room_id)}/state/{quote(event_type)}/{quote(state_key)}"
        return await self.request("PUT", path, user, body=content, expect=expect)

    async def messages(
        self, user: User, room_id: str, expect: int = 200, dir: str = "b", **params: str
    ) -> Any:
        return await self.request(
            "GET", f"{V3}/rooms/{quote(room_id)}/messages", user, expect=expect, dir=dir, **params
        )

    # -- sync (client_api/sync.py, filters.py) ---------------------------------------------

    async def sync(self, user: User, expect: int = 200, **params: str) -> Any:
        """GET /sync with `params` (since, timeout, filter, full_state...)."""
        return await self.request("GET", f"{V3}/sync", user, expect=expect, **params)

    async def sync_until(
        self, user: User, since: str | None, done: Any, timeout_ms: int = 10_000, **params: str
    ) -> Any:
        """Long-poll /sync from `since` until `done(body)` is true; returns that body (with its
        next_batch). Fails after about `timeout_ms` of polls without it."""
        import time

        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            query = dict(params, timeout=str(min(timeout_ms, 1000)))
            if since is not None:
                query["since"] = since
            body = await self.sync(user, **query)
            if done(body):
                return body
            since = body["next_batch"]
            assert time.monotonic() < deadline, f"sync never satisfied the condition: {body}"
