"""RestHelper: short client API calls for behaviour tests (register, login, rooms, sync)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
