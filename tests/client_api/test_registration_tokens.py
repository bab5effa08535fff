"""Token-authenticated registration (C-S API "Token-authenticated registration"): the
m.login.registration_token stage checks the token, a use counts only once an account is
created, and GET /register/m.login.registration_token/validity."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.config import LimitsConfig, RateLimit, RegistrationConfig
from homeserver.core import Core, build_core
from homeserver.crypto.keys import ServerKeys
from homeserver.handlers.auth import LoginResult
from homeserver.storage import Storage
from tests.client_api.conftest import ClientFactory, client_app
from tests.helpers.rest import V3, RestHelper
from tests.helpers.spec_schemas import assert_response_valid, assert_valid

REGISTER = "client-server/registration.yaml"
TOKENS = "client-server/registration_tokens.yaml"
VALIDITY_PATH = "/register/m.login.registration_token/validity"
VALIDITY = f"/_matrix/client/v1{VALIDITY_PATH}"
ERROR = "api/client-server/definitions/errors/error.yaml"


async def start(rest: RestHelper, username: str) -> str:
    first = await rest.request("POST", f"{V3}/register", body={"username": username}, expect=401)
    assert_response_valid(REGISTER, "/register", "post", 401, first)
    assert first["flows"] == [{"stages": ["m.login.registration_token"]}]
    return str(first["session"])


async def finish(
    rest: RestHelper, username: str, session: str, token: str, expect: int = 200
) -> Any:
    auth = {"type": "m.login.registration_token", "token": token, "session": session}
    body = {"username": username, "password": "pw", "auth": auth}
    done = await rest.request("POST", f"{V3}/register", body=body, expect=expect)
    assert_response_valid(REGISTER, "/register", "post", expect, done)
    return done


async def completed(core: Core, token: str) -> int:
    return int(
        await core.storage.db.fetchval(
            "SELECT completed FROM registration_tokens WHERE token = $1", token
        )
    )


@pytest.fixture
def requires_token(client_core: Core) -> Core:
    client_core.registration.requires_token = True
    return client_core


async def test_a_token_is_used_up_by_completed_registrations(
    rest: RestHelper, requires_token: Core
) -> None:
    await requires_token.storage.accounts.add_registration_token("letmein", 1, None)
    session = await start(rest, "erin")
    wrong = await finish(rest, "erin", session, "nope", expect=401)
    assert wrong["errcode"] == "M_UNAUTHORIZED" and "completed" not in wrong
    done = await finish(rest, "erin", session, "letmein")
    assert done["user_id"] == "@erin:test.local"
    assert await completed(requires_token, "letmein") == 1
    used = await finish(rest, "finn", await start(rest, "finn"), "letmein", expect=401)
    assert used["errcode"] == "M_UNAUTHORIZED"
    assert await completed(requires_token, "letmein") == 1


async def test_an_attempt_that_never_completes_does_not_use_the_token(
    rest: RestHelper, requires_token: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    await requires_token.storage.accounts.add_registration_token("once", 1, None)
    auth = requires_token.auth
    real_register = auth.register

    async def someone_else_first(localpart: str, *args: Any, **kwargs: Any) -> LoginResult | str:
        # Another registration takes the name between the token stage and account creation.
        await real_register(localpart, None, with_device=False)
        return await real_register(localpart, *args, **kwargs)

    monkeypatch.setattr(auth, "register", someone_else_first)
    session = await start(rest, "gina")
    lost = await finish(rest, "gina", session, "once", expect=400)
    assert lost["errcode"] == "M_USER_IN_USE"
    assert await completed(requires_token, "once") == 0

    monkeypatch.setattr(auth, "register", real_register)
    done = await finish(rest, "hank", await start(rest, "hank"), "once")
    assert done["user_id"] == "@hank:test.local"
    assert await completed(requires_token, "once") == 1


async def test_a_token_used_up_after_its_stage_passed_restarts_the_flow(
    rest: RestHelper, requires_token: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = requires_token.storage.accounts
    await accounts.add_registration_token("race", 1, None)
    await accounts.add_registration_token("spare", None, None)
    auth = requires_token.auth
    real_register = auth.register

    async def overtaken(localpart: str, *args: Any, **kwargs: Any) -> LoginResult | str:
        # Another registration completes with the same token after this one's stage passed.
        await real_register("ivy", None, registration_token="race")
        return await real_register(localpart, *args, **kwargs)

    monkeypatch.setattr(auth, "register", overtaken)
    session = await start(rest, "jay")
    again = await finish(rest, "jay", session, "race", expect=401)
    assert again["errcode"] == "M_UNAUTHORIZED" and again["session"] != session
    assert again["flows"] == [{"stages": ["m.login.registration_token"]}]
    assert "completed" not in again
    assert not await accounts.user_exists("@jay:test.local")
    assert await completed(requires_token, "race") == 1

    monkeypatch.setattr(auth, "register", real_register)
    used_up = await finish(rest, "jay", again["session"], "race", expect=401)
    assert used_up["errcode"] == "M_UNAUTHORIZED"
    done = await finish(rest, "jay", again["session"], "spare")
    assert done["user_id"] == "@jay:test.local"


async def test_validity(rest: RestHelper, client_core: Core) -> None:
    accounts = client_core.storage.accounts
    now = client_core.clock.time_ms()
    await accounts.add_registration_token("fresh", 2, None)
    await accounts.add_registration_token("unlimited", None, None)
    await accounts.add_registration_token("expired", None, now - 1)
    await accounts.add_registration_token("later", None, now + 3_600_000)
    await accounts.add_registration_token("spent", 0, None)
    for token, valid in [
        ("fresh", True),
        ("unlimited", True),
        ("later", True),
        ("expired", False),
        ("spent", False),
        ("unknown", False),
    ]:
        body = await rest.request("GET", VALIDITY, token=token)
        assert_response_valid(TOKENS, VALIDITY_PATH, "get", 200, body)
        assert body == {"valid": valid}, token

    # Asking does not use the token.
    for _ in range(3):
        assert await rest.request("GET", VALIDITY, token="fresh") == {"valid": True}
    missing = await rest.request("GET", VALIDITY, expect=400)
    assert_valid(ERROR, missing)
    assert missing["errcode"] == "M_MISSING_PARAM"

    client_core.registration.enabled = False
    closed = await rest.request("GET", VALIDITY, token="fresh", expect=403)
    assert_response_valid(TOKENS, VALIDITY_PATH, "get", 403, closed)
    assert closed["errcode"] == "M_FORBIDDEN"


async def test_validity_is_rate_limited_per_address(
    aiohttp_client: ClientFactory, storage: Storage, server_keys: ServerKeys
) -> None:
    limits = LimitsConfig(registration_ip=RateLimit(per_second=0.001, burst=3))
    core = build_core(
        storage,
        "test.local",
        server_keys,
        registration=RegistrationConfig(enabled=True),
        limits=limits,
    )
    rest = RestHelper(await aiohttp_client(client_app(core)))
    for _ in range(3):
        assert await rest.request("GET", VALIDITY, token="guess") == {"valid": False}
    limited = await rest.request("GET", VALIDITY, token="guess", expect=429)
    assert_response_valid(TOKENS, VALIDITY_PATH, "get", 429, limited)
    assert limited["errcode"] == "M_LIMIT_EXCEEDED" and limited["retry_after_ms"] > 0
    # One budget per address with registration: guesses here leave none for /register.
    blocked = await rest.request("POST", f"{V3}/register", body={"username": "kim"}, expect=429)
    assert blocked["errcode"] == "M_LIMIT_EXCEEDED"
