"""Server signing keys in Synapse's key file format: one `ed25519 <version> <unpadded b64 seed>`
line per key. The first key signs; the rest are kept as old verify keys.
"""
from __future__ import annotations

import binascii
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from signedjson.key import (
    decode_signing_key_base64,
    decode_verify_key_bytes,
    encode_signing_key_base64,
    encode_verify_key_base64,
    generate_signing_key,
    get_verify_key,
)
from signedjson.types import SigningKey, VerifyKey
from unpaddedbase64 import decode_base64


@dataclass(frozen=True)
class OldVerifyKey:
    key: VerifyKey
    expired_ts: int


@dataclass
class ServerKeys:
    signing_key: SigningKey  # has .alg and .version set by signedjson
    old_verify_keys: dict[str, OldVerifyKey] = field(default_factory=dict)

    @property
    def key_id(self) -> str:
        return f"{self.signing_key.alg}:{self.signing_key.version}"

    @property
    def verify_key_base64(self) -> str:
        return encode_verify_key_base64(get_verify_key(self.signing_key))


class KeyFileError(ValueError):
    pass


def new_key_version() -> str:
    # Synapse names keys a_XXXX: four random characters from [a-zA-Z0-9_].
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
    return "a_" + "".join(secrets.choice(alphabet) for _ in range(4))


def parse_key_file(text: str) -> list[SigningKey]:
    keys = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] != "ed25519":
            raise KeyFileError(f"line {lineno}: expected 'ed25519 <version> <base64 seed>'")
        try:
            key = decode_signing_key_base64(parts[0], parts[1], parts[2])
        except Exception:
            raise KeyFileError(f"line {lineno}: the key seed is not valid base64 ed25519") from None
        keys.append(key)
    if not keys:
        raise KeyFileError("the key file holds no key")
    return keys


def format_key_file(keys: list[SigningKey]) -> str:
    return "".join(
        f"{k.alg} {k.version} {encode_signing_key_base64(k)}\n" for k in keys
    )


def generate_key_file(path: Path) -> SigningKey:
    """Write a new one-key file readable by its owner only."""
    key = generate_signing_key(new_key_version())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(format_key_file([key]))
    return key


def load_or_create_server_keys(path: Path, old_keys_expired_ts: int = 0) -> ServerKeys:
    """The first key in the file signs; any further ones become old verify keys."""
    if not path.exists():
        generate_key_file(path)
    keys = parse_key_file(path.read_text())
    old = {
        f"{k.alg}:{k.version}": OldVerifyKey(get_verify_key(k), old_keys_expired_ts)
        for k in keys[1:]
    }
    return ServerKeys(signing_key=keys[0], old_verify_keys=old)


def verify_key_from_base64(key_id: str, key_base64: str) -> VerifyKey:
    """A VerifyKey ("ed25519:<version>") from the unpadded base64 form keys are published in;
    ValueError when it is not one."""
    try:
        return decode_verify_key_bytes(key_id, decode_base64(key_base64))
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"{key_id} is not a valid Ed25519 public key") from e
