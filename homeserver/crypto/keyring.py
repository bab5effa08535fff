"""The keyring: other servers' signing keys, fetched from the server itself or through trusted
notaries, checked and cached (S2S "Retrieving server keys"; room versions 5+ "Signing key
validity period")."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeGuard

from signedjson.key import get_verify_key
from signedjson.sign import SignatureVerifyException, verify_signed_json
from signedjson.types import VerifyKey

from homeserver.clock import Clock, SystemClock
from homeserver.config import TrustedKeyServer
from homeserver.crypto.keys import ServerKeys, verify_key_from_base64
from homeserver.storage.stores.server_keys import (
    ServerKeysStore,
    ServerVerifyKey,
    StoredKeyResponse,
)

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

# keys.yaml valid_until_ts: "Servers MUST use the lesser of this field and 7 days into the
# future", so a stolen key cannot be made valid for long.
MAX_KEY_VALIDITY_MS = 7 * 24 * 60 * 60 * 1000
# A server none of the sources answered for is left alone this long, doubling with each failure
# up to the cap (keys_server.yaml: "limit how frequently they query"). The first step is also
# the pause after an answer that lacked the key asked for, which does not escalate: otherwise
# anyone could make us stop fetching a server's keys by naming keys it does not have.
FIRST_BACKOFF_MS = 10_000
MAX_BACKOFF_MS = 60 * 60 * 1000


class KeyFetchError(Exception):
    """A key request got no answer to use: unreachable, an error status, not JSON."""


class KeyFetchClient(Protocol):
    """Outbound key requests, made by the federation transport. Any failure to get a JSON
    answer raises KeyFetchError; the keyring checks what comes back."""

    async def get_server_keys(self, server_name: str) -> JsonDict:
        """The body of GET /_matrix/key/v2/server on `server_name`."""
        ...

    async def query_notary(self, notary_server_name: str, body: JsonDict) -> JsonDict:
        """The body of POST /_matrix/key/v2/query with `body` on the notary."""
        ...


class InvalidKeyResponse(Exception):
    pass


def signed_by(obj: JsonDict, signer: str, keys: Mapping[str, VerifyKey]) -> bool:
    """Whether `obj` carries `signer`'s signature by at least one of `keys` (key ID -> key) and
    every signature it has by one of them verifies."""
    signatures = obj.get("signatures")
    by_signer = signatures.get(signer) if isinstance(signatures, dict) else None
    if not isinstance(by_signer, dict):
        return False
    used = [keys[key_id] for key_id in by_signer if key_id in keys]
    try:
        for key in used:
            verify_signed_json(obj, signer, key)
    except (SignatureVerifyException, ValueError, TypeError):
        return False
    return bool(used)


def parse_key_response(server_name: str, response: object, now_ms: int) -> list[ServerVerifyKey]:
    """The verify keys in a key response of `server_name` (keys.yaml), once checked: it names
    the server, is well formed and is signed by the keys it lists as current. Current keys are
    valid until the response's valid_until_ts, capped at 7 days from `now_ms`; old ones until
    their expired_ts. Raises InvalidKeyResponse."""
    if not isinstance(response, dict) or response.get("server_name") != server_name:
        raise InvalidKeyResponse(f"not a key response of {server_name}")
    valid_until_ts = response.get("valid_until_ts")
    if not _is_int(valid_until_ts):
        raise InvalidKeyResponse("valid_until_ts is not an integer")
    cap = now_ms + MAX_KEY_VALIDITY_MS
    current = {
        key_id: ServerVerifyKey(key_id, key, min(valid_until_ts, cap))
        for key_id, key in _published_keys(response, "verify_keys")
    }
    if not signed_by(response, server_name, _decoded(current.values())):
        raise InvalidKeyResponse("not signed by a key it lists in verify_keys")
    old: list[ServerVerifyKey] = []
    for key_id, key in _published_keys(response, "old_verify_keys"):
        expired_ts = response["old_verify_keys"][key_id].get("expired_ts")
        if not _is_int(expired_ts):
            raise InvalidKeyResponse(f"old key {key_id} has no integer expired_ts")
        if key_id not in current:
            old.append(ServerVerifyKey(key_id, key, min(expired_ts, cap), expired_ts))
    return [*current.values(), *old]


def _published_keys(response: JsonDict, field: str) -> list[tuple[str, str]]:
    """(key ID, base64 key) of the Ed25519 keys under `field`; keys of algorithms we do not
    know are left out, keys that do not decode make the whole response invalid."""
    entries = response.get(field, {})
    if not isinstance(entries, dict):
        raise InvalidKeyResponse(f"{field} is not an object")
    keys = []
    for key_id, entry in entries.items():
        if not key_id.startswith("ed25519:"):
            continue
        key = entry.get("key") if isinstance(entry, dict) else None
        if not isinstance(key, str):
            raise InvalidKeyResponse(f"{field} {key_id} has no key")
        try:
            verify_key_from_base64(key_id, key)
        except ValueError:
            raise InvalidKeyResponse(f"{field} {key_id} is not an Ed25519 key") from None
        keys.append((key_id, key))
    return keys


def _decoded(keys: Iterable[ServerVerifyKey]) -> dict[str, VerifyKey]:
    return {k.key_id: verify_key_from_base64(k.key_id, k.key) for k in keys}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _as_origin_signed(server_name: str, response: JsonDict) -> JsonDict:
    """The response with the origin's signatures only: a notary's are not ours to pass on."""
    return {**response, "signatures": {server_name: response["signatures"][server_name]}}


@dataclass(frozen=True, slots=True)
class _Notary:
    server_name: str
    verify_keys: dict[str, VerifyKey]


@dataclass(frozen=True, slots=True)
class _Backoff:
    failures: int
    retry_at_ts: int


class Keyring:
    """Verify keys by server and key ID, valid for a given timestamp (event origin_server_ts in
    room versions 5+, 0 before that; the current time for request signatures). Implements
    federation.auth.VerifyKeys. Our own keys come from ServerKeys; other servers' from the
    store, else fetched: from the server, then through each trusted notary in turn."""

    def __init__(
        self,
        server_name: str,
        server_keys: ServerKeys,
        store: ServerKeysStore,
        client: KeyFetchClient,
        trusted_key_servers: Sequence[TrustedKeyServer] = (),
        clock: Clock | None = None,
    ) -> None:
        self.server_name = server_name
        self._server_keys = server_keys
        self._store = store
        self._client = client
        self._clock = clock or SystemClock()
        self._notaries = [
            _Notary(
                t.server_name,
                {
                    key_id: verify_key_from_base64(key_id, key)
                    for key_id, key in t.verify_keys.items()
                },
            )
            for t in trusted_key_servers
        ]
        # One fetch per server at a time; callers arriving meanwhile wait for it.
        self._fetches: dict[str, asyncio.Task[dict[str, ServerVerifyKey]]] = {}
        self._backoff: dict[str, _Backoff] = {}

    async def get_verify_key(
        self, server_name: str, key_id: str, valid_at_ts: int
    ) -> VerifyKey | None:
        found = await self.get_verify_keys({(server_name, key_id): valid_at_ts})
        return found.get((server_name, key_id))

    async def get_verify_keys(
        self, wanted: Mapping[tuple[str, str], int]
    ) -> dict[tuple[str, str], VerifyKey]:
        """The keys among `wanted` ((server name, key ID) -> timestamp they must be valid at)
        that are known or can be fetched; one fetch per server whatever the number of keys."""
        found: dict[tuple[str, str], VerifyKey] = {}
        remote: dict[tuple[str, str], int] = {}
        for (server_name, key_id), ts in wanted.items():
            if server_name != self.server_name:
                remote[(server_name, key_id)] = ts
            elif (own := self._own_key(key_id, ts)) is not None:
                found[(server_name, key_id)] = own
        stored = await self._store.get_verify_keys(remote)
        missing: dict[str, dict[str, int]] = {}
        for (server_name, key_id), ts in remote.items():
            key = stored.get((server_name, key_id))
            if key is not None and key.valid_at(ts):
                found[(server_name, key_id)] = verify_key_from_base64(key_id, key.key)
            elif key is None or key.expired_ts is None:  # no response can extend an old key
                missing.setdefault(server_name, {})[key_id] = ts
        fetched = await asyncio.gather(*(self._fetch(s, needs) for s, needs in missing.items()))
        for (server_name, needs), keys in zip(missing.items(), fetched, strict=True):
            for key_id, ts in needs.items():
                key = keys.get(key_id)
                if key is not None and key.valid_at(ts):
                    found[(server_name, key_id)] = verify_key_from_base64(key_id, key.key)
        return found

    async def key_response(
        self, server_name: str, key_ids: Collection[str], minimum_valid_until_ts: int
    ) -> JsonDict | None:
        """Another server's newest key response as it signed it, for serving as a notary
        (our own keys are the caller's to answer). From the cache while it is valid until
        `minimum_valid_until_ts`, lists `key_ids` and is in the first half of its lifetime
        (keys_server.yaml); fetched otherwise, though the cached one is still returned when
        that fails ("so that the signatures of old events can still be checked")."""
        cached = await self._store.get_key_response(server_name)
        if cached is None or not self._fresh(cached, key_ids, minimum_valid_until_ts):
            await self._fetch(server_name, dict.fromkeys(key_ids, minimum_valid_until_ts))
            cached = await self._store.get_key_response(server_name)
        return None if cached is None else cached.response

    def _own_key(self, key_id: str, ts: int) -> VerifyKey | None:
        if key_id == self._server_keys.key_id:
            return get_verify_key(self._server_keys.signing_key)
        old = self._server_keys.old_verify_keys.get(key_id)
        return old.key if old is not None and ts <= old.expired_ts else None

    def _fresh(self, cached: StoredKeyResponse, key_ids: Collection[str], min_ts: int) -> bool:
        published = {
            *cached.response.get("verify_keys", {}),
            *cached.response.get("old_verify_keys", {}),
        }
        half_life_ts = cached.fetched_ts + (cached.valid_until_ts - cached.fetched_ts) // 2
        return (
            cached.valid_until_ts >= min_ts
            and self._clock.time_ms() <= half_life_ts
            and all(key_id in published for key_id in key_ids)
        )

    async def _fetch(self, server_name: str, needs: dict[str, int]) -> dict[str, ServerVerifyKey]:
        """The keys a fetch of `server_name`'s keys found (key ID -> key), by the fetch under
        way if there is one; nothing while the server is being backed off."""
        task = self._fetches.get(server_name)
        if task is None:
            backoff = self._backoff.get(server_name)
            if backoff is not None and self._clock.time_ms() < backoff.retry_at_ts:
                return {}
            task = asyncio.create_task(self._fetch_from_sources(server_name, needs))
            self._fetches[server_name] = task
            task.add_done_callback(partial(self._fetch_done, server_name))
        # A caller that gives up (cancelled) must not cancel the fetch others wait for.
        return await asyncio.shield(task)

    def _fetch_done(self, server_name: str, task: asyncio.Task[dict[str, ServerVerifyKey]]) -> None:
        if self._fetches.get(server_name) is task:
            del self._fetches[server_name]

    async def _fetch_from_sources(
        self, server_name: str, needs: dict[str, int]
    ) -> dict[str, ServerVerifyKey]:
        """Ask the server, then each notary, until the keys in `needs` (key ID -> timestamp
        they must be valid at; empty: any answer will do) are found."""
        found = await self._fetch_direct(server_name)
        for notary in self._notaries:
            if _satisfies(found, needs):
                break
            found.update(await self._fetch_via_notary(notary, server_name, needs))
        now = self._clock.time_ms()
        if _satisfies(found, needs):
            self._backoff.pop(server_name, None)
        elif found:
            self._backoff[server_name] = _Backoff(0, now + FIRST_BACKOFF_MS)
        else:
            previous = self._backoff.get(server_name)
            failures = (previous.failures if previous else 0) + 1
            delay = min(FIRST_BACKOFF_MS * 2 ** (failures - 1), MAX_BACKOFF_MS)
            self._backoff[server_name] = _Backoff(failures, now + delay)
            logger.info("no server keys server=%s retry_in_ms=%d", server_name, delay)
        return found

    async def _fetch_direct(self, server_name: str) -> dict[str, ServerVerifyKey]:
        try:
            response = await self._client.get_server_keys(server_name)
        except KeyFetchError as e:
            logger.info("server keys fetch failed server=%s reason=%s", server_name, e)
            return {}
        return await self._accept(server_name, response, via=server_name)

    async def _fetch_via_notary(
        self, notary: _Notary, server_name: str, needs: dict[str, int]
    ) -> dict[str, ServerVerifyKey]:
        # Room versions 5+: "servers MUST set the minimum_valid_until_ts property".
        query = {key_id: {"minimum_valid_until_ts": ts} for key_id, ts in needs.items()}
        try:
            answer = await self._client.query_notary(
                notary.server_name, {"server_keys": {server_name: query}}
            )
        except KeyFetchError as e:
            logger.info(
                "notary key query failed server=%s notary=%s reason=%s",
                server_name,
                notary.server_name,
                e,
            )
            return {}
        entries = answer.get("server_keys") if isinstance(answer, dict) else None
        found: dict[str, ServerVerifyKey] = {}
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("server_name") != server_name:
                continue
            if not signed_by(entry, notary.server_name, notary.verify_keys):
                logger.warning(
                    "notary response not signed by the notary server=%s notary=%s",
                    server_name,
                    notary.server_name,
                )
                continue
            found.update(await self._accept(server_name, entry, via=notary.server_name))
        return found

    async def _accept(
        self, server_name: str, response: JsonDict, via: str
    ) -> dict[str, ServerVerifyKey]:
        """Check and store a key response; the keys in it, none if it is not valid."""
        now = self._clock.time_ms()
        try:
            keys = parse_key_response(server_name, response, now)
        except InvalidKeyResponse as e:
            logger.warning("invalid key response server=%s via=%s reason=%s", server_name, via, e)
            return {}
        await self._store.store_key_response(
            server_name, _as_origin_signed(server_name, response), now, keys
        )
        return {key.key_id: key for key in keys}


def _satisfies(found: Mapping[str, ServerVerifyKey], needs: Mapping[str, int]) -> bool:
    return bool(found) and all(
        key_id in found and found[key_id].valid_at(ts) for key_id, ts in needs.items()
    )
