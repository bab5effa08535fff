"""Shared fixtures for the event core tests: the spec's test signing key and an event factory.

Helpers are fixtures (not importable modules) so this directory needs no package name.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from signedjson.key import decode_signing_key_base64

from homeserver.events.builder import EventBuilder
from homeserver.events.event import Event
from homeserver.events.room_versions import EventFormat, RoomVersion

SPEC_VECTORS = Path(__file__).resolve().parents[2] / "fixtures" / "spec_vectors"


@pytest.fixture(scope="session")
def signing_key() -> SigningKey:
    """appendices "Cryptographic Test Vectors": the fixed seed, key ID ed25519:1."""
    vectors = json.loads((SPEC_VECTORS / "signing.json").read_text(encoding="utf-8"))
    alg, version = vectors["key_id"].split(":")
    return decode_signing_key_base64(alg, version, vectors["signing_key_seed"])


def _example_event_id(rv: RoomVersion, n: int) -> str:
    """A well-formed event ID for `rv` (of no real event); v3 IDs use the standard alphabet's
    `+/`, v4+ the URL-safe `-_`, so the alphabet checks are exercised."""
    if rv.event_format is EventFormat.V1:
        return f"$event{n}:domain"
    body = f"{n:02d}" + "a" * 39
    return "$" + body + ("+/" if rv.event_format is EventFormat.V2 else "-_")


@pytest.fixture(scope="session")
def example_event_id() -> Callable[[RoomVersion, int], str]:
    return _example_event_id


@pytest.fixture(scope="session")
def make_event(signing_key: SigningKey) -> Callable[..., Event]:
    def build(
        rv: RoomVersion,
        *,
        type: str = "m.room.message",
        content: dict[str, Any] | None = None,
        state_key: str | None = None,
        sender: str = "@alice:domain",
        room_id: str | None = None,
        prev_events: list[Any] | None = None,
        auth_events: list[Any] | None = None,
        depth: int = 5,
        redacts: str | None = None,
        key: SigningKey = signing_key,
    ) -> Event:
        """A signed event of `rv`'s format from server `domain`."""
        if room_id is None and not (rv.room_id_from_create_event and type == "m.room.create"):
            room_id = "!" + "A" * 43 if rv.room_id_from_create_event else "!room:domain"
        return EventBuilder(
            room_version=rv,
            type=type,
            sender=sender,
            content=content if content is not None else {"msgtype": "m.text", "body": "hello"},
            room_id=room_id,
            state_key=state_key,
            redacts=redacts,
        ).build(
            prev_events=prev_events if prev_events is not None else [_example_event_id(rv, 1)],
            auth_events=auth_events if auth_events is not None else [_example_event_id(rv, 2)],
            depth=depth,
            origin_server_ts=1_700_000_000_000,
            server_name="domain",
            signing_key=key,
        )

    return build
