"""matrix-nio's AsyncClient (a real Matrix client, from PyPI) against the real server."""

from __future__ import annotations

from nio import (
    AsyncClient,
    LoginResponse,
    LogoutResponse,
    RegisterResponse,
    WhoamiError,
    WhoamiResponse,
)


async def test_register_login_whoami_logout(server_url: str) -> None:
    alice = AsyncClient(server_url, "alice")
    try:
        registered = await alice.register("alice", "correct horse", device_name="laptop")
        assert isinstance(registered, RegisterResponse), registered
        assert registered.user_id == "@alice:e2e.test"
        whoami = await alice.whoami()
        assert isinstance(whoami, WhoamiResponse) and whoami.user_id == "@alice:e2e.test"

        phone = AsyncClient(server_url, "@alice:e2e.test")
        try:
            login = await phone.login("correct horse", device_name="phone")
            assert isinstance(login, LoginResponse), login
            assert login.device_id != registered.device_id
            assert isinstance(await phone.logout(), LogoutResponse)
            assert isinstance(await phone.whoami(), WhoamiError)
        finally:
            await phone.close()
        # Logging out the phone left the laptop signed in.
        assert isinstance(await alice.whoami(), WhoamiResponse)
    finally:
        await alice.close()
