"""E2eKeysHandler: the key endpoints of C-S API "End-to-End Encryption": device, one-time and
fallback key upload, key query and claim, cross-signing keys and signatures.

The server never sees a private key or plaintext. It checks what it can (a device's keys are
signed by the device's own ed25519 key, cross-signing keys by the master key, uploaded
signatures by the key they claim) so that one user cannot publish keys or signatures as
another, and it hands each one-time key out once.
"""

from __future__ import annotations

import binascii
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any, Protocol

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.handlers.device_lists import SIGNED_CURVE25519, DeviceLists
from homeserver.identifiers import domain_of, is_valid_user_id
from homeserver.storage.stores.e2e_keys import ClaimRequest, E2eKeysStore, Signature

JsonDict = dict[str, Any]
MASTER, SELF_SIGNING, USER_SIGNING = "master", "self_signing", "user_signing"
CROSS_SIGNING_FIELDS = {
    MASTER: "master_key",
    SELF_SIGNING: "self_signing_key",
    USER_SIGNING: "user_signing_key",
}
# One request names at most this many devices or keys: enough for any real client, and it
# bounds the work one request can ask for.
MAX_KEYS_PER_REQUEST = 10_000

# require_password(user_id, auth, purpose): user-interactive authentication (handlers/uia.py).
PasswordCheck = Callable[[str, Mapping[str, Any] | None, str], Awaitable[str]]


class RemoteKeys(Protocol):
    """Asks other servers for their users' keys (S-S API "End-to-End Encryption":
    /user/keys/query and /user/keys/claim). Each returns the same shape as the local answer,
    with unreachable servers in `failures`."""

    async def query_keys(self, device_keys: Mapping[str, list[str]]) -> JsonDict: ...

    async def claim_keys(self, one_time_keys: Mapping[str, Mapping[str, str]]) -> JsonDict: ...


class SignatureFailure(MatrixError):
    """One signature of a /keys/signatures/upload that is not stored; reported per key."""


class E2eKeysHandler:
    def __init__(
        self,
        store: E2eKeysStore,
        device_lists: DeviceLists,
        server_name: str,
        require_password: PasswordCheck,
    ) -> None:
        self.store = store
        self.device_lists = device_lists
        self.server_name = server_name
        self.require_password = require_password
        # Until federation sets one, remote users' keys are reported as failures.
        self.remote: RemoteKeys | None = None

    # -- POST /keys/upload ---------------------------------------------------------------------

    async def upload_keys(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> JsonDict:
        device_keys = optional_object(body, "device_keys")
        one_time_keys = parse_keys(optional_object(body, "one_time_keys"), "one_time_keys")
        fallback_keys = parse_keys(optional_object(body, "fallback_keys"), "fallback_keys")
        if len({algorithm for algorithm, _k, _v in fallback_keys}) != len(fallback_keys):
            raise MatrixError("At most one fallback key per algorithm", Codes.INVALID_PARAM)
        if device_keys is not None:
            check_device_keys(device_keys, user_id, device_id)
            stored = await self.store.get_one_device_keys(user_id, device_id)
            if stored != device_keys:
                async with self.device_lists.changing(user_id) as change:
                    await self.store.set_device_keys_txn(
                        change.txn, user_id, device_id, device_keys
                    )
                    change.updated.append(device_id)
        if one_time_keys:
            # A key ID already used for a different key would leave the client unable to tell
            # which of its private keys a claimer used; the same key again is a retry.
            existing = await self.store.get_one_time_keys(
                user_id, device_id, [(a, k) for a, k, _v in one_time_keys]
            )
            for algorithm, key_id, key in one_time_keys:
                if existing.get((algorithm, key_id), key) != key:
                    raise MatrixError(
                        f"One-time key {algorithm}:{key_id} already exists with another value",
                        Codes.INVALID_PARAM,
                    )
        if one_time_keys or fallback_keys:
            async with self.store.db.transaction() as txn:
                await self.store.add_one_time_keys_txn(txn, user_id, device_id, one_time_keys)
                await self.store.set_fallback_keys_txn(txn, user_id, device_id, fallback_keys)
        counts = await self.store.count_one_time_keys(user_id, device_id)
        return {"one_time_key_counts": {SIGNED_CURVE25519: 0, **counts}}

    # -- POST /keys/query ----------------------------------------------------------------------

    async def query_keys(self, requester: str, body: Mapping[str, Any]) -> JsonDict:
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise MatrixError("device_keys must be an object", Codes.BAD_JSON)
        local: dict[str, list[str]] = {}
        remote: dict[str, list[str]] = {}
        total = 0
        for user_id, device_ids in wanted.items():
            if not is_valid_user_id(user_id):
                raise MatrixError(f"{user_id!r} is not a valid user ID", Codes.INVALID_PARAM)
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise MatrixError("Each user's device IDs must be a list", Codes.BAD_JSON)
            total += max(1, len(device_ids))
            target = local if domain_of(user_id) == self.server_name else remote
            target[user_id] = device_ids
        if total > MAX_KEYS_PER_REQUEST:
            raise MatrixError("Too many devices in one query", Codes.INVALID_PARAM)
        result = await self._query_local(requester, local)
        if remote:
            if self.remote is None:
                for server in {domain_of(u) for u in remote}:
                    result["failures"][server] = {"status": 503, "message": "Not federating"}
            else:
                _merge_response(result, await self.remote.query_keys(remote))
        return result

    async def _query_local(self, requester: str, wanted: Mapping[str, list[str]]) -> JsonDict:
        result: JsonDict = {
            "device_keys": {user_id: {} for user_id in wanted},
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
            "failures": {},
        }
        if not wanted:
            return result
        devices = await self.store.get_device_keys(wanted.items())
        signatures = await self.store.get_signatures(wanted.keys())
        types = (MASTER, SELF_SIGNING, USER_SIGNING) if requester in wanted else ()
        cross_signing = await self.store.get_cross_signing_keys(
            wanted.keys(), {MASTER, SELF_SIGNING, *types}
        )
        by_target: dict[tuple[str, str], list[Signature]] = {}
        for s in signatures:
            by_target.setdefault((s.target_user_id, s.target_key_id), []).append(s)
        for device in devices:
            keys = device.keys
            _add_signatures(keys, by_target.get((device.user_id, device.device_id), ()))
            if device.display_name is not None:
                keys.setdefault("unsigned", {})["device_display_name"] = device.display_name
            result["device_keys"][device.user_id][device.device_id] = keys
        for user_id, by_type in cross_signing.items():
            for key_type, key in by_type.items():
                if key_type == USER_SIGNING and user_id != requester:
                    continue
                if key_type == MASTER:
                    # A user-signing key's signature is the signer's own business: only the
                    # signer sees it (C-S API "Cross-signing").
                    shown = [
                        s
                        for s in by_target.get((user_id, public_key_of(key)), ())
                        if s.signer_user_id in (user_id, requester)
                    ]
                    _add_signatures(key, shown)
                result[f"{key_type}_keys"][user_id] = key
        return result

    # -- other servers asking about our users (S-S API "End-to-End Encryption") ------------

    async def query_for_server(self, body: Mapping[str, Any]) -> JsonDict:
        """POST /user/keys/query: our users' device and cross-signing keys. A server asks for
        itself, not for a user: no user-signing key or signature is shown."""
        wanted = body.get("device_keys")
        if not isinstance(wanted, dict):
            raise MatrixError("device_keys must be an object", Codes.BAD_JSON)
        ours = {u: d for u, d in wanted.items() if domain_of(str(u)) == self.server_name}
        for device_ids in ours.values():
            if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
                raise MatrixError("Each user's device IDs must be a list", Codes.BAD_JSON)
        if sum(max(1, len(d)) for d in ours.values()) > MAX_KEYS_PER_REQUEST:
            raise MatrixError("Too many devices in one query", Codes.INVALID_PARAM)
        result = await self._query_local("", ours)
        for by_device in result["device_keys"].values():
            for keys in by_device.values():
                _hide_device_name(keys)
        return {k: result[k] for k in ("device_keys", "master_keys", "self_signing_keys")}

    async def claim_for_server(self, body: Mapping[str, Any]) -> JsonDict:
        """POST /user/keys/claim: one-time (else fallback) keys of our users' devices."""
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise MatrixError("one_time_keys must be an object", Codes.BAD_JSON)
        ours = {u: d for u, d in wanted.items() if domain_of(str(u)) == self.server_name}
        result = await self.claim_keys({"one_time_keys": ours})
        return {"one_time_keys": result["one_time_keys"]}

    async def devices_for_server(self, user_id: str) -> JsonDict:
        """GET /user/devices/{userId}: the user's devices that have keys, with them."""
        if domain_of(user_id) != self.server_name:
            raise NotFound(f"{user_id} is not a user of this server")
        devices = await self.store.get_device_keys([(user_id, [])])
        cross_signing = (
            await self.store.get_cross_signing_keys([user_id], {MASTER, SELF_SIGNING})
        ).get(user_id, {})
        answer: JsonDict = {
            "user_id": user_id,
            "stream_id": await self.store.current_device_list_position(),
            "devices": [
                {"device_id": d.device_id, "keys": _hide_device_name(d.keys)}
                for d in sorted(devices, key=lambda d: d.device_id)
            ],
        }
        for key_type, name in ((MASTER, "master_key"), (SELF_SIGNING, "self_signing_key")):
            if key_type in cross_signing:
                answer[name] = cross_signing[key_type]
        return answer

    # -- POST /keys/claim ----------------------------------------------------------------------

    async def claim_keys(self, body: Mapping[str, Any]) -> JsonDict:
        wanted = body.get("one_time_keys")
        if not isinstance(wanted, dict):
            raise MatrixError("one_time_keys must be an object", Codes.BAD_JSON)
        local: list[ClaimRequest] = []
        remote: dict[str, dict[str, str]] = {}
        for user_id, by_device in wanted.items():
            if not is_valid_user_id(user_id):
                raise MatrixError(f"{user_id!r} is not a valid user ID", Codes.INVALID_PARAM)
            if not isinstance(by_device, dict) or not all(
                isinstance(a, str) and a for a in by_device.values()
            ):
                raise MatrixError("Each device must name an algorithm", Codes.BAD_JSON)
            if domain_of(user_id) == self.server_name:
                local += [(user_id, d, a) for d, a in by_device.items()]
            else:
                remote[user_id] = by_device
        if len(local) + sum(len(d) for d in remote.values()) > MAX_KEYS_PER_REQUEST:
            raise MatrixError("Too many devices in one claim", Codes.INVALID_PARAM)
        result: JsonDict = {"one_time_keys": {}, "failures": {}}
        claimed = await self.store.claim_keys(local)
        for (user_id, device_id, _algorithm), key in claimed.items():
            by_device = result["one_time_keys"].setdefault(user_id, {})
            by_device[device_id] = {key.key_id: key.key}
        if remote:
            if self.remote is None:
                for server in {domain_of(u) for u in remote}:
                    result["failures"][server] = {"status": 503, "message": "Not federating"}
            else:
                _merge_response(result, await self.remote.claim_keys(remote))
        return result

    # -- POST /keys/device_signing/upload ---------------------------------------------------

    async def upload_cross_signing_keys(
        self, user_id: str, body: Mapping[str, Any], auth: Mapping[str, Any] | None
    ) -> None:
        new: dict[str, JsonDict] = {}
        for key_type, name in CROSS_SIGNING_FIELDS.items():
            key = optional_object(body, name)
            if key is not None:
                check_cross_signing_key(key, user_id, key_type)
                new[key_type] = key
        if not new:
            return
        existing = (await self.store.get_cross_signing_keys([user_id], CROSS_SIGNING_FIELDS)).get(
            user_id, {}
        )
        # C-S API: no user-interactive auth for a first upload, nor for the same keys again
        # (a retry after a lost response); replacing keys needs it.
        unchanged = MASTER in new and all(existing.get(t) == k for t, k in new.items())
        if MASTER in existing and not unchanged:
            await self.require_password(user_id, auth, "device_signing_upload")
        master = new.get(MASTER, existing.get(MASTER))
        if master is None:
            raise MatrixError("No master key available", Codes.MISSING_PARAM)
        master_id = f"ed25519:{public_key_of(master)}"
        for key_type in (SELF_SIGNING, USER_SIGNING):
            if key_type in new:
                verify_signature(new[key_type], user_id, master_id, public_key_of(master))
        publics = {public_key_of(k) for k in new.values()}
        if await self.store.device_ids_in_use(user_id, publics):
            # Device IDs and cross-signing keys share the key ID namespace of signatures.
            raise Forbidden("A cross-signing key has the same ID as one of your devices")
        async with self.device_lists.changing(user_id) as change:
            await self.store.set_cross_signing_keys_txn(
                change.txn, user_id, [(t, public_key_of(k), k) for t, k in new.items()]
            )
            change.signing_keys = True

    # -- POST /keys/signatures/upload -------------------------------------------------------

    async def upload_signatures(self, user_id: str, body: Mapping[str, Any]) -> JsonDict:
        own = (await self.store.get_cross_signing_keys([user_id], CROSS_SIGNING_FIELDS)).get(
            user_id, {}
        )
        failures: dict[str, dict[str, JsonDict]] = {}
        accepted: list[Signature] = []
        for target_user, by_key in body.items():
            if not isinstance(by_key, dict):
                raise MatrixError("Each user's keys must be an object", Codes.BAD_JSON)
            for key_id, signed in by_key.items():
                try:
                    if not isinstance(signed, dict):
                        raise SignatureFailure("A signed key must be an object", Codes.BAD_JSON)
                    if target_user == user_id:
                        accepted += await self._own_signatures(user_id, own, key_id, signed)
                    else:
                        accepted.append(
                            await self._user_signature(user_id, own, target_user, key_id, signed)
                        )
                except SignatureFailure as e:
                    failures.setdefault(target_user, {})[key_id] = e.to_json()
        if accepted:
            # A user-signing signature is shown to its signer only, so the signer is the one
            # whose view changed; the others change their own user's keys.
            async with self.device_lists.changing(user_id) as change:
                await self.store.add_signatures_txn(change.txn, accepted)
                for s in accepted:
                    if s.target_user_id != user_id:
                        continue  # another user's master key: only the signer sees it
                    # One of the user's devices, signed by the self-signing key, or the
                    # master key, signed by a device: either way other servers re-read it.
                    if await self.store.get_one_device_keys(user_id, s.target_key_id):
                        change.updated.append(s.target_key_id)
                    else:
                        change.signing_keys = True
        return {"failures": failures}

    async def _own_signatures(
        self, user_id: str, own: Mapping[str, JsonDict], key_id: str, signed: JsonDict
    ) -> list[Signature]:
        """Signatures over one of the user's own keys: a device's keys signed by the
        self-signing key, or the master key signed by devices."""
        master = own.get(MASTER)
        if master is not None and key_id == public_key_of(master):
            _require_same(signed, master)
            made = _new_signatures(signed, master, user_id)
            if not made:
                raise SignatureFailure("No new signature by the user", Codes.MISSING_PARAM)
            result = []
            for signer_key_id in made:
                algorithm, _, device_id = signer_key_id.partition(":")
                device = await self.store.get_one_device_keys(user_id, device_id)
                if algorithm != "ed25519" or device is None:
                    raise SignatureFailure(f"Unknown signing key {signer_key_id}", Codes.NOT_FOUND)
                signature = verify_signature(
                    signed, user_id, signer_key_id, device_public_key(device)
                )
                result.append(Signature(user_id, key_id, user_id, signer_key_id, signature))
            return result
        device = await self.store.get_one_device_keys(user_id, key_id)
        if device is None:
            raise SignatureFailure(f"Unknown device or key {key_id}", Codes.NOT_FOUND)
        self_signing = own.get(SELF_SIGNING)
        if self_signing is None:
            raise SignatureFailure("No self-signing key uploaded", Codes.NOT_FOUND)
        _require_same(signed, device)
        signer_key_id = f"ed25519:{public_key_of(self_signing)}"
        signature = verify_signature(signed, user_id, signer_key_id, public_key_of(self_signing))
        return [Signature(user_id, key_id, user_id, signer_key_id, signature)]

    async def _user_signature(
        self,
        user_id: str,
        own: Mapping[str, JsonDict],
        target_user: str,
        key_id: str,
        signed: JsonDict,
    ) -> Signature:
        """Another user's master key signed by the user's user-signing key."""
        user_signing = own.get(USER_SIGNING)
        if user_signing is None:
            raise SignatureFailure("No user-signing key uploaded", Codes.NOT_FOUND)
        theirs = await self.store.get_cross_signing_keys([target_user], {MASTER})
        master = theirs.get(target_user, {}).get(MASTER)
        if master is None or key_id != public_key_of(master):
            raise SignatureFailure(f"{key_id} is not {target_user}'s master key", Codes.NOT_FOUND)
        _require_same(signed, master)
        signer_key_id = f"ed25519:{public_key_of(user_signing)}"
        signature = verify_signature(signed, user_id, signer_key_id, public_key_of(user_signing))
        return Signature(target_user, key_id, user_id, signer_key_id, signature)


# -- validation ---------------------------------------------------------------------------------


def optional_object(body: Mapping[str, Any], name: str) -> JsonDict | None:
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise MatrixError(f"{name} must be an object", Codes.BAD_JSON)
    return value


def parse_keys(keys: JsonDict | None, name: str) -> list[tuple[str, str, JsonDict | str]]:
    """One-time or fallback keys, {"<algorithm>:<key ID>": key}, as (algorithm, key ID, key)
    rows. A key is a string (unsigned) or an object with a string `key`."""
    if not keys:
        return []
    if len(keys) > MAX_KEYS_PER_REQUEST:
        raise MatrixError(f"Too many {name}", Codes.INVALID_PARAM)
    rows: list[tuple[str, str, JsonDict | str]] = []
    for full_id, key in keys.items():
        algorithm, _, key_id = full_id.partition(":")
        if not algorithm or not key_id:
            raise MatrixError(f"{name}: {full_id!r} is not <algorithm>:<key ID>", Codes.BAD_JSON)
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str) or not isinstance(
                key.get("signatures", {}), dict
            ):
                raise MatrixError(f"{name}: {full_id} has no valid key", Codes.BAD_JSON)
        elif not isinstance(key, str):
            raise MatrixError(f"{name}: {full_id} must be a string or an object", Codes.BAD_JSON)
        rows.append((algorithm, key_id, key))
    return rows


def check_device_keys(keys: Mapping[str, Any], user_id: str, device_id: str) -> None:
    """The device's keys name the device and are signed by its own ed25519 key."""
    if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        raise MatrixError(
            "device_keys must name the user and device uploading them", Codes.INVALID_PARAM
        )
    algorithms = keys.get("algorithms")
    if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
        raise MatrixError("device_keys.algorithms must be a list of strings", Codes.BAD_JSON)
    key_map = keys.get("keys")
    if not isinstance(key_map, dict) or not all(isinstance(v, str) for v in key_map.values()):
        raise MatrixError("device_keys.keys must map key IDs to strings", Codes.BAD_JSON)
    signing_key_id = f"ed25519:{device_id}"
    if signing_key_id not in key_map:
        raise MatrixError(f"device_keys.keys has no {signing_key_id}", Codes.MISSING_PARAM)
    verify_signature(keys, user_id, signing_key_id, key_map[signing_key_id])


def check_cross_signing_key(key: Mapping[str, Any], user_id: str, key_type: str) -> None:
    """A cross-signing key of `user_id` for `key_type`, with exactly one ed25519 key."""
    if key.get("user_id") != user_id:
        raise MatrixError("A cross-signing key must name the uploading user", Codes.INVALID_PARAM)
    usage = key.get("usage")
    if not isinstance(usage, list) or key_type not in usage:
        raise MatrixError(f"The {key_type} key must have usage {key_type}", Codes.INVALID_PARAM)
    if not isinstance(key.get("signatures", {}), dict):
        raise MatrixError("signatures must be an object", Codes.BAD_JSON)
    public_key_of(key)


def public_key_of(key: Mapping[str, Any]) -> str:
    """The public key of a cross-signing key object: its single "ed25519:<key>" entry."""
    keys = key.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise MatrixError("A cross-signing key must have exactly one key", Codes.INVALID_PARAM)
    ((key_id, public),) = keys.items()
    if not isinstance(public, str) or key_id != f"ed25519:{public}":
        raise MatrixError("A cross-signing key must be ed25519:<public key>", Codes.INVALID_PARAM)
    return public


def device_public_key(device_keys: Mapping[str, Any]) -> str:
    public: str = device_keys["keys"][f"ed25519:{device_keys['device_id']}"]
    return public


def verify_signature(
    signed: Mapping[str, Any], signer: str, key_id: str, public_key_b64: str
) -> str:
    """Check the signature `signer` made with `key_id` over `signed`; returns it."""
    signature = _signatures_by(signed, signer).get(key_id)
    if not isinstance(signature, str):
        # A missing signature is as bad as a wrong one (cross_signing.yaml names
        # M_INVALID_SIGNATURE for a key that is not signed by the master key).
        raise SignatureFailure(f"No signature by {signer} with {key_id}", Codes.INVALID_SIGNATURE)
    try:
        verify_key = decode_verify_key_bytes(key_id, decode_base64(public_key_b64))
        verify_signed_json(dict(signed), signer, verify_key)
    except (SignatureVerifyException, ValueError, binascii.Error) as e:
        raise SignatureFailure(
            f"Invalid signature by {signer} with {key_id}", Codes.INVALID_SIGNATURE
        ) from e
    return signature


def _unsigned_part(value: Mapping[str, Any]) -> JsonDict:
    return {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}


def _require_same(signed: Mapping[str, Any], stored: Mapping[str, Any]) -> None:
    if _unsigned_part(signed) != _unsigned_part(stored):
        raise SignatureFailure("The signed object is not the stored key", Codes.INVALID_PARAM)


def _signatures_by(signed: Mapping[str, Any], signer: str) -> Mapping[str, Any]:
    signatures = signed.get("signatures", {})
    by_signer = signatures.get(signer, {}) if isinstance(signatures, dict) else None
    if not isinstance(by_signer, dict):
        raise SignatureFailure("signatures must map users to objects", Codes.BAD_JSON)
    return by_signer


def _new_signatures(signed: Mapping[str, Any], stored: Mapping[str, Any], user_id: str) -> JsonDict:
    """The signatures by `user_id` in `signed` that the stored object does not carry."""
    known = _signatures_by(stored, user_id)
    return {k: v for k, v in _signatures_by(signed, user_id).items() if known.get(k) != v}


def _add_signatures(key: JsonDict, signatures: Collection[Signature]) -> None:
    for s in signatures:
        key.setdefault("signatures", {}).setdefault(s.signer_user_id, {})[s.signer_key_id] = (
            s.signature
        )


def _hide_device_name(keys: JsonDict) -> JsonDict:
    """Device names stay on their server: they tend to say where and who a person is (and
    Synapse, by default, does not share them over federation either)."""
    unsigned = keys.get("unsigned")
    if isinstance(unsigned, dict):
        unsigned.pop("device_display_name", None)
        if not unsigned:
            del keys["unsigned"]
    return keys


def _merge_response(into: JsonDict, other: Mapping[str, Any]) -> None:
    for section, value in other.items():
        if isinstance(value, dict):
            into.setdefault(section, {}).update(value)
