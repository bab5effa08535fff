"""Signed key objects as an encrypting client makes them (C-S API "End-to-End Encryption"),
for tests and benchmarks that exercise the key endpoints without a full crypto library."""

from __future__ import annotations

import copy
from typing import Any

from nacl.signing import SigningKey as NaclSigningKey
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from signedjson.types import SigningKey

JsonDict = dict[str, Any]


def public_of(key: SigningKey) -> str:
    return encode_verify_key_base64(get_verify_key(key))


def curve25519_public() -> str:
    """A 32-byte public key in unpadded base64 (the server never checks what it is)."""
    return encode_verify_key_base64(NaclSigningKey.generate().verify_key)


class TestDevice:
    """One device's ed25519 identity key, which signs its device keys and one-time keys."""

    __test__ = False  # not a pytest test class

    def __init__(self, user_id: str, device_id: str) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.signing_key = generate_signing_key(device_id)
        self.ed25519 = public_of(self.signing_key)
        self._next_key = 0

    def sign(self, obj: JsonDict) -> JsonDict:
        return sign_json(copy.deepcopy(obj), self.user_id, self.signing_key)

    def device_keys(self) -> JsonDict:
        return self.sign(
            {
                "user_id": self.user_id,
                "device_id": self.device_id,
                "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                "keys": {
                    f"curve25519:{self.device_id}": curve25519_public(),
                    f"ed25519:{self.device_id}": self.ed25519,
                },
            }
        )

    def one_time_keys(self, n: int, fallback: bool = False) -> JsonDict:
        keys = {}
        for _ in range(n):
            self._next_key += 1
            body: JsonDict = {"key": curve25519_public()}
            if fallback:
                body["fallback"] = True
            keys[f"signed_curve25519:AAAA{self._next_key:06d}"] = self.sign(body)
        return keys


class CrossSigningKeys:
    """A user's master, self-signing and user-signing keys; each signs under the key ID
    ed25519:<its public key>."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.keys: dict[str, SigningKey] = {}
        for usage in ("master", "self_signing", "user_signing"):
            key = generate_signing_key("pending")
            key.version = public_of(key)
            self.keys[usage] = key

    def public(self, usage: str) -> str:
        return public_of(self.keys[usage])

    def key_object(self, usage: str) -> JsonDict:
        public = self.public(usage)
        obj: JsonDict = {
            "user_id": self.user_id,
            "usage": [usage],
            "keys": {f"ed25519:{public}": public},
        }
        return obj if usage == "master" else self.sign_with("master", obj)

    def sign_with(self, usage: str, obj: JsonDict) -> JsonDict:
        signed = copy.deepcopy(obj)
        signed.pop("unsigned", None)
        return sign_json(signed, self.user_id, self.keys[usage])

    def upload_body(self) -> JsonDict:
        return {
            "master_key": self.key_object("master"),
            "self_signing_key": self.key_object("self_signing"),
            "user_signing_key": self.key_object("user_signing"),
        }
