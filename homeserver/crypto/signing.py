"""Signing and verifying events (S2S "Signing events", appendices "Signing JSON").

Event signatures cover the redacted event, so a redacted copy still verifies.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from signedjson.types import SigningKey, VerifyKey

from homeserver.events.event import add_content_hash
from homeserver.events.redaction import prune_event_dict
from homeserver.events.room_versions import RoomVersion


def compute_event_signature(
    room_version: RoomVersion, pdu: Mapping[str, Any], server_name: str, key: SigningKey
) -> dict[str, dict[str, str]]:
    redacted = prune_event_dict(room_version, pdu)
    redacted.pop("signatures", None)
    signatures: dict[str, dict[str, str]] = sign_json(redacted, server_name, key)["signatures"]
    return signatures


def hash_and_sign_event(
    room_version: RoomVersion, pdu: dict[str, Any], server_name: str, key: SigningKey
) -> None:
    """Add the content hash and this server's signature to `pdu` in place."""
    add_content_hash(pdu)
    sigs = compute_event_signature(room_version, pdu, server_name, key)
    existing = pdu.setdefault("signatures", {})
    for name, by_key in sigs.items():
        existing.setdefault(name, {}).update(by_key)


def countersign_event(
    room_version: RoomVersion, pdu: Mapping[str, Any], server_name: str, key: SigningKey
) -> dict[str, Any]:
    """A copy of another server's `pdu` with this server's signature added (an invite to one
    of our users, a restricted join we vouch for); its hashes and event ID are unchanged."""
    signatures = {name: dict(by_key) for name, by_key in pdu.get("signatures", {}).items()}
    for name, by_key in compute_event_signature(room_version, pdu, server_name, key).items():
        signatures.setdefault(name, {}).update(by_key)
    return {**pdu, "signatures": signatures}


def verify_event_signature(
    room_version: RoomVersion, pdu: Mapping[str, Any], server_name: str, verify_key: VerifyKey
) -> bool:
    """True when `pdu` carries a valid signature by `server_name` with `verify_key`
    (whose .alg/.version name the key ID)."""
    redacted = prune_event_dict(room_version, pdu)
    try:
        verify_signed_json(redacted, server_name, verify_key)
    except (SignatureVerifyException, TypeError, ValueError):
        # A malformed `signatures` value is as good as no signature.
        return False
    return True
