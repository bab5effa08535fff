"""The keyring (S2S "Retrieving server keys"): fetching from the server and through notaries,
the checks on every response, caching on both databases, validity periods (room versions 5+,
the 7-day cap, old keys), one fetch per server and back-off. Real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from signedjson.types import SigningKey, VerifyKey

from client_api.middleware import install_client_middleware
from federation.auth import VerifyKeys
from federation.server.key_query import KEYRING, KeyQueryServlet
from federation.server.keys import server_keys_json
from homeserver.config import TrustedKeyServer
from homeserver.crypto.keyring import (
    FIRST_BACKOFF_MS,
    MAX_KEY_VALIDITY_MS,
    KeyFetchError,
    Keyring,
    parse_key_response,
)
from homeserver.crypto.keys import OldVerifyKey, ServerKeys
from homeserver.storage import Storage
from homeserver.storage.database import Database
from homeserver.storage.engines.sqlite import SqliteDatabase
from homeserver.storage.migrations import apply_migrations
from homeserver.storage.stores.server_keys import ServerKeysStore, ServerVerifyKey

ServerFactory = Callable[..., Awaitable[TestServer]]
JsonDict = dict[str, Any]

NOW = 1_700_000_000_000
HOUR = 60 * 60 * 1000
DAY = 24 * HOUR
US = "us.test"
ORIGIN = "origin.test"
NOTARY = "notary.test"


class MutableClock:
    def __init__(self) -> None:
        self.now = NOW

    def time_ms(self) -> int:
        return self.now


class HttpKeyFetchClient:
    """The KeyFetchClient over real HTTP, servers found through a name -> base URL map."""

    def __init__(self, session: aiohttp.ClientSession, urls: dict[str, str]) -> None:
        self.session = session
        self.urls = urls

    async def get_server_keys(self, server_name: str) -> JsonDict:
        return await self._request("GET", server_name, "/_matrix/key/v2/server", None)

    async def query_notary(self, notary_server_name: str, body: JsonDict) -> JsonDict:
        return await self._request("POST", notary_server_name, "/_matrix/key/v2/query", body)

    async def _request(self, method: str, server: str, path: str, body: Any) -> JsonDict:
        if server not in self.urls:
            raise KeyFetchError(f"no address for {server}")
        try:
            async with self.session.request(method, self.urls[server] + path, json=body) as r:
                if r.status != 200:
                    raise KeyFetchError(f"status {r.status}")
                answer: JsonDict = await r.json()
                return answer
        except (aiohttp.ClientError, ValueError) as e:
            raise KeyFetchError(str(e)) from e


@dataclass
class Origin:
    """A server publishing its keys at GET /_matrix/key/v2/server: by default the genuine
    response (server_keys_json), else whatever `respond` makes."""

    name: str
    clock: MutableClock
    keys: ServerKeys = field(default_factory=lambda: ServerKeys(generate_signing_key("o_1")))
    validity_ms: int = DAY
    respond: Callable[[], JsonDict] | None = None
    up: bool = True
    gate: asyncio.Event | None = None  # set: answers wait until it is
    requests: int = 0

    @property
    def verify_key(self) -> VerifyKey:
        return get_verify_key(self.keys.signing_key)

    def genuine(self) -> JsonDict:
        return server_keys_json(self.name, self.keys, self.clock.now, self.validity_ms)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.gate is not None:
            await self.gate.wait()
        if not self.up:
            return web.json_response({"errcode": "M_UNKNOWN"}, status=502)
        return web.json_response(self.respond() if self.respond else self.genuine())


@dataclass
class Notary:
    name: str
    keys: ServerKeys
    keyring: Keyring
    server: TestServer

    def trusted(self) -> TrustedKeyServer:
        return TrustedKeyServer(self.name, {self.keys.key_id: self.keys.verify_key_base64})


class Network:
    """Servers on 127.0.0.1, reached by name through one HttpKeyFetchClient."""

    def __init__(
        self, aiohttp_server: ServerFactory, session: aiohttp.ClientSession, tmp_path: Path
    ) -> None:
        self.aiohttp_server = aiohttp_server
        self.clock = MutableClock()
        self.urls: dict[str, str] = {}
        self.client = HttpKeyFetchClient(session, self.urls)
        self.tmp_path = tmp_path
        self.databases: list[Database] = []

    async def origin(self, name: str = ORIGIN) -> Origin:
        origin = Origin(name, self.clock)
        app = web.Application()
        app.router.add_get("/_matrix/key/v2/server", origin.handle)
        server = await self.aiohttp_server(app)
        self.urls[name] = str(server.make_url("")).rstrip("/")
        return origin

    async def notary(self, name: str = NOTARY) -> Notary:
        """Another homeserver of ours acting as a notary, on a SQLite database of its own."""
        db = await SqliteDatabase.open(self.tmp_path / f"{name}.db")
        self.databases.append(db)
        await apply_migrations(db)
        keys = ServerKeys(generate_signing_key("n_1"))
        keyring = Keyring(name, keys, ServerKeysStore(db), self.client, (), self.clock)
        app = web.Application()
        install_client_middleware(app)
        KeyQueryServlet(name, keys, self.clock).register(app.router)
        app[KEYRING] = keyring
        server = await self.aiohttp_server(app)
        self.urls[name] = str(server.make_url("")).rstrip("/")
        return Notary(name, keys, keyring, server)

    def keyring(
        self,
        store: ServerKeysStore,
        notaries: tuple[TrustedKeyServer, ...] = (),
        keys: ServerKeys | None = None,
    ) -> Keyring:
        our_keys = keys or ServerKeys(generate_signing_key("u_1"))
        return Keyring(US, our_keys, store, self.client, notaries, self.clock)


@asynccontextmanager
async def open_network(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Network]:
    async with aiohttp.ClientSession() as session:
        network = Network(aiohttp_server, session, tmp_path)
        yield network
        for db in network.databases:
            await db.close()


@pytest.fixture
async def net(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Network]:
    async with open_network(aiohttp_server, tmp_path) as network:
        yield network


def same_key(a: VerifyKey | None, b: VerifyKey) -> bool:
    return a is not None and a.encode() == b.encode() and a.version == b.version


async def test_fetches_directly_then_answers_from_the_store(net: Network, storage: Storage) -> None:
    origin = await net.origin()
    keyring: VerifyKeys = net.keyring(storage.server_keys)
    key_id = origin.keys.key_id
    assert same_key(await keyring.get_verify_key(ORIGIN, key_id, NOW), origin.verify_key)
    assert origin.requests == 1
    assert same_key(await keyring.get_verify_key(ORIGIN, key_id, NOW), origin.verify_key)
    # A fresh keyring on the same database (a restart) has it too.
    restarted = net.keyring(storage.server_keys)
    assert same_key(await restarted.get_verify_key(ORIGIN, key_id, NOW + HOUR), origin.verify_key)
    assert origin.requests == 1
    # The original response is kept, signed by the origin only.
    stored = await storage.server_keys.get_key_response(ORIGIN)
    assert stored is not None
    assert stored.response == origin.genuine()
    assert (stored.valid_until_ts, stored.fetched_ts) == (NOW + DAY, NOW)


async def test_own_keys_come_from_server_keys(net: Network, storage: Storage) -> None:
    old = generate_signing_key("u_0")
    ours = ServerKeys(
        generate_signing_key("u_1"), {"ed25519:u_0": OldVerifyKey(get_verify_key(old), NOW)}
    )
    # No address for US: a fetch could not find anything.
    keyring = net.keyring(storage.server_keys, keys=ours)
    found = await keyring.get_verify_keys(
        {(US, "ed25519:u_1"): NOW + 30 * DAY, (US, "ed25519:u_0"): NOW - 1}
    )
    assert same_key(found[(US, "ed25519:u_1")], get_verify_key(ours.signing_key))
    assert same_key(found[(US, "ed25519:u_0")], get_verify_key(old))
    assert await keyring.get_verify_key(US, "ed25519:u_0", NOW + 1) is None


async def test_bulk_lookup_fetches_each_server_once(net: Network, storage: Storage) -> None:
    one, two = await net.origin("one.test"), await net.origin("two.test")
    keyring = net.keyring(storage.server_keys)
    found = await keyring.get_verify_keys(
        {
            ("one.test", one.keys.key_id): NOW,
            ("one.test", "ed25519:unknown"): NOW,
            ("two.test", two.keys.key_id): 0,
        }
    )
    assert set(found) == {("one.test", one.keys.key_id), ("two.test", two.keys.key_id)}
    assert same_key(found[("two.test", two.keys.key_id)], two.verify_key)
    assert (one.requests, two.requests) == (1, 1)


async def test_expired_keys_are_fetched_again(net: Network, storage: Storage) -> None:
    origin = await net.origin()
    keyring = net.keyring(storage.server_keys)
    assert await keyring.get_verify_key(ORIGIN, origin.keys.key_id, NOW) is not None
    net.clock.now = NOW + 2 * DAY
    # An event from within the validity period needs no new fetch.
    assert await keyring.get_verify_key(ORIGIN, origin.keys.key_id, NOW + DAY) is not None
    assert origin.requests == 1
    assert await keyring.get_verify_key(ORIGIN, origin.keys.key_id, net.clock.now) is not None
    assert origin.requests == 2
    [stored] = (await storage.server_keys.get_verify_keys([(ORIGIN, origin.keys.key_id)])).values()
    assert stored.valid_until_ts == NOW + 3 * DAY


async def test_room_version_validity_via_valid_at_ts(net: Network, storage: Storage) -> None:
    """v5+: a key verifies events up to its valid_until_ts; v1-v4 ask with 0 (any time)."""
    origin = await net.origin()
    keyring = net.keyring(storage.server_keys)
    key_id = origin.keys.key_id
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW + DAY) is not None
    origin.up = False
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW + DAY + 1) is None
    assert origin.requests == 2  # it tried to find a longer-lived copy
    assert await keyring.get_verify_key(ORIGIN, key_id, 0) is not None
    assert origin.requests == 2


async def test_validity_is_capped_at_seven_days(net: Network, storage: Storage) -> None:
    origin = await net.origin()
    origin.validity_ms = 30 * DAY
    keyring = net.keyring(storage.server_keys)
    key_id = origin.keys.key_id
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW + MAX_KEY_VALIDITY_MS) is not None
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW + MAX_KEY_VALIDITY_MS + 1) is None
    assert origin.requests == 2
    [key] = parse_key_response(ORIGIN, origin.genuine(), NOW)
    assert key.valid_until_ts == NOW + 7 * DAY
    # The notary copy keeps the origin's own valid_until_ts.
    stored = await storage.server_keys.get_key_response(ORIGIN)
    assert stored is not None and stored.response["valid_until_ts"] == NOW + 30 * DAY


async def test_old_verify_keys_verify_events_before_they_expired(
    net: Network, storage: Storage
) -> None:
    origin = await net.origin()
    old = generate_signing_key("o_0")
    origin.keys.old_verify_keys["ed25519:o_0"] = OldVerifyKey(get_verify_key(old), NOW - HOUR)
    keyring = net.keyring(storage.server_keys)
    assert same_key(
        await keyring.get_verify_key(ORIGIN, "ed25519:o_0", NOW - 2 * HOUR), get_verify_key(old)
    )
    assert await keyring.get_verify_key(ORIGIN, "ed25519:o_0", NOW - HOUR + 1) is None
    # No response can make an old key valid for longer: no fetch for that.
    assert origin.requests == 1
    [stored] = (await storage.server_keys.get_verify_keys([(ORIGIN, "ed25519:o_0")])).values()
    assert stored == ServerVerifyKey(
        "ed25519:o_0", encode_verify_key_base64(get_verify_key(old)), NOW - HOUR, NOW - HOUR
    )


def _signed(body: JsonDict, server: str, key: SigningKey) -> JsonDict:
    return sign_json(body, server, key)


def _forgeries(origin: Origin) -> dict[str, Callable[[], JsonDict]]:
    other = generate_signing_key("x_1")
    listed = {origin.keys.key_id: {"key": origin.keys.verify_key_base64}}

    def tampered() -> JsonDict:
        body = origin.genuine()
        body["valid_until_ts"] += 1
        return body

    def wrong_server_name() -> JsonDict:
        body = {"server_name": "evil.test", "verify_keys": listed, "valid_until_ts": NOW + DAY}
        return _signed(body, "evil.test", origin.keys.signing_key)

    def signed_by_unlisted_key() -> JsonDict:
        body = {"server_name": ORIGIN, "verify_keys": listed, "valid_until_ts": NOW + DAY}
        return _signed(body, ORIGIN, other)

    def unsigned() -> JsonDict:
        return {"server_name": ORIGIN, "verify_keys": listed, "valid_until_ts": NOW + DAY}

    def bad_key() -> JsonDict:
        body = {
            "server_name": ORIGIN,
            "verify_keys": {**listed, "ed25519:bad": {"key": "not base64!"}},
            "valid_until_ts": NOW + DAY,
        }
        return _signed(body, ORIGIN, origin.keys.signing_key)

    def no_valid_until() -> JsonDict:
        return _signed(
            {"server_name": ORIGIN, "verify_keys": listed}, ORIGIN, origin.keys.signing_key
        )

    return {
        f.__name__: f
        for f in (
            tampered,
            wrong_server_name,
            signed_by_unlisted_key,
            unsigned,
            bad_key,
            no_valid_until,
        )
    }


@pytest.mark.parametrize(
    "forgery",
    [
        "tampered",
        "wrong_server_name",
        "signed_by_unlisted_key",
        "unsigned",
        "bad_key",
        "no_valid_until",
    ],
)
async def test_forged_responses_are_refused(net: Network, storage: Storage, forgery: str) -> None:
    origin = await net.origin()
    origin.respond = _forgeries(origin)[forgery]
    keyring = net.keyring(storage.server_keys)
    assert await keyring.get_verify_key(ORIGIN, origin.keys.key_id, NOW) is None
    assert origin.requests == 1
    assert await storage.server_keys.get_key_response(ORIGIN) is None
    assert await storage.server_keys.get_verify_keys([(ORIGIN, origin.keys.key_id)]) == {}


async def test_notary_answers_when_the_origin_is_down(net: Network, storage: Storage) -> None:
    origin = await net.origin()
    notary = await net.notary()
    # The notary saw the origin's keys while it was up.
    assert await notary.keyring.key_response(ORIGIN, [], NOW) is not None
    origin.up = False
    keyring = net.keyring(storage.server_keys, (notary.trusted(),))
    assert same_key(
        await keyring.get_verify_key(ORIGIN, origin.keys.key_id, NOW), origin.verify_key
    )
    assert origin.requests == 2  # the notary's fetch and ours; the notary answered from its cache
    # Kept as the origin signed it, without the notary's signature.
    stored = await storage.server_keys.get_key_response(ORIGIN)
    assert stored is not None and set(stored.response["signatures"]) == {ORIGIN}


async def test_notary_with_a_bad_signature_is_refused(net: Network, storage: Storage) -> None:
    origin = await net.origin()
    notary = await net.notary()
    assert await notary.keyring.key_response(ORIGIN, [], NOW) is not None
    origin.up = False
    impostor_key = encode_verify_key_base64(get_verify_key(generate_signing_key("n_1")))
    trusted = TrustedKeyServer(NOTARY, {notary.keys.key_id: impostor_key})
    keyring = net.keyring(storage.server_keys, (trusted,))
    assert await keyring.get_verify_key(ORIGIN, origin.keys.key_id, NOW) is None
    assert await storage.server_keys.get_key_response(ORIGIN) is None


async def test_concurrent_callers_share_one_fetch(net: Network, storage: Storage) -> None:
    origin = await net.origin()
    origin.gate = asyncio.Event()
    keyring = net.keyring(storage.server_keys)
    lookups = [
        asyncio.create_task(keyring.get_verify_key(ORIGIN, origin.keys.key_id, NOW))
        for _ in range(5)
    ]
    while origin.requests == 0:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # time for any further request to arrive
    origin.gate.set()
    keys = await asyncio.gather(*lookups)
    assert all(same_key(k, origin.verify_key) for k in keys)
    assert origin.requests == 1


async def test_failed_fetches_back_off(net: Network, storage: Storage) -> None:
    origin = await net.origin()
    origin.up = False
    keyring = net.keyring(storage.server_keys)
    key_id = origin.keys.key_id
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW) is None
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW) is None
    assert origin.requests == 1
    net.clock.now += FIRST_BACKOFF_MS
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW) is None
    assert origin.requests == 2
    # The second failure doubles the wait.
    net.clock.now += FIRST_BACKOFF_MS
    origin.up = True
    assert await keyring.get_verify_key(ORIGIN, key_id, NOW) is None
    assert origin.requests == 2
    net.clock.now += FIRST_BACKOFF_MS
    assert same_key(await keyring.get_verify_key(ORIGIN, key_id, NOW), origin.verify_key)
    assert origin.requests == 3


async def test_answer_without_the_key_pauses_without_escalating(
    net: Network, storage: Storage
) -> None:
    origin = await net.origin()
    keyring = net.keyring(storage.server_keys)
    for _ in range(3):
        assert await keyring.get_verify_key(ORIGIN, "ed25519:nope", NOW) is None
        assert await keyring.get_verify_key(ORIGIN, "ed25519:nope", NOW) is None
        net.clock.now += FIRST_BACKOFF_MS
    assert origin.requests == 3


async def test_store_never_shortens_validity_and_old_keys_stay_old(storage: Storage) -> None:
    store = storage.server_keys
    response = {"server_name": ORIGIN, "valid_until_ts": NOW + DAY, "signatures": {}}
    await store.store_key_response(
        ORIGIN, response, NOW, [ServerVerifyKey("ed25519:a", "k", NOW + DAY)]
    )
    older = {**response, "valid_until_ts": NOW + HOUR}
    await store.store_key_response(
        ORIGIN, older, NOW, [ServerVerifyKey("ed25519:a", "k", NOW + HOUR)]
    )
    stored = await store.get_key_response(ORIGIN)
    assert stored is not None and stored.response == response
    assert (await store.get_verify_keys([(ORIGIN, "ed25519:a")]))[(ORIGIN, "ed25519:a")] == (
        ServerVerifyKey("ed25519:a", "k", NOW + DAY)
    )
    retired = ServerVerifyKey("ed25519:a", "k", NOW - HOUR, NOW - HOUR)
    await store.store_key_response(ORIGIN, response, NOW, [retired])
    await store.store_key_response(
        ORIGIN, response, NOW, [ServerVerifyKey("ed25519:a", "k", NOW + 2 * DAY)]
    )
    found = await store.get_verify_keys(
        [(ORIGIN, "ed25519:a"), (ORIGIN, "ed25519:b"), ("x", "ed25519:a")]
    )
    assert found == {(ORIGIN, "ed25519:a"): retired}
