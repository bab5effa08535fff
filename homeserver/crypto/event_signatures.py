"""Checking the signatures on events from other servers (S-S API "Validating hashes and
signatures on received events", step 2 of "Checks performed on receipt of a PDU").

Each server that must sign the event (the sender's; in room versions 1 and 2 also the event
ID's; for a restricted join also the authorising server's) needs at least one signature by a
key we can obtain, and every signature of such a server by a key we know must verify. Keys
are asked of the keyring in one batch for all the events checked together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from signedjson.types import VerifyKey

from homeserver.crypto.signing import verify_event_signature
from homeserver.events.event import MEMBER, Event
from homeserver.events.room_versions import EventFormat
from homeserver.identifiers import domain_of


class VerifyKeysBatch(Protocol):
    """Servers' verify keys, each valid at least until a timestamp (the keyring)."""

    async def get_verify_keys(
        self, wanted: Mapping[tuple[str, str], int]
    ) -> dict[tuple[str, str], VerifyKey]: ...


def servers_that_must_sign(event: Event) -> set[str]:
    servers = {domain_of(event.sender)}
    if event.room_version.event_format is EventFormat.V1 and ":" in event.event_id:
        # Room versions 1 and 2: event IDs name the server that made them.
        servers.add(event.event_id.split(":", 1)[1])
    if (
        event.type == MEMBER
        and event.room_version.restricted_join_rule
        and event.membership == "join"
    ):
        authoriser = event.content.get("join_authorised_via_users_server")
        if isinstance(authoriser, str) and ":" in authoriser:
            servers.add(domain_of(authoriser))
    return servers


class EventSignatureChecker:
    def __init__(self, keys: VerifyKeysBatch) -> None:
        self.keys = keys

    async def failures(self, events: Sequence[Event]) -> dict[str, str]:
        """event_id -> why its signatures do not pass, for those of `events` that fail."""
        wanted: dict[tuple[str, str], int] = {}
        for event in events:
            valid_at = _valid_at(event)
            for server in servers_that_must_sign(event):
                for key_id in _signatures_of(event, server):
                    key = (server, key_id)
                    wanted[key] = max(wanted.get(key, 0), valid_at)
        keys = await self.keys.get_verify_keys(wanted) if wanted else {}
        failed: dict[str, str] = {}
        for event in events:
            reason = _check(event, keys)
            if reason is not None:
                failed[event.event_id] = reason
        return failed


def _valid_at(event: Event) -> int:
    # Room versions from 5 on: a key counts only for events made while it was valid.
    return event.origin_server_ts if event.room_version.enforce_key_validity else 0


def _signatures_of(event: Event, server: str) -> list[str]:
    by_key = event.signatures.get(server)
    if not isinstance(by_key, Mapping):
        return []
    return [k for k in by_key if isinstance(k, str) and k.startswith("ed25519:")]


def _check(event: Event, keys: Mapping[tuple[str, str], VerifyKey]) -> str | None:
    for server in sorted(servers_that_must_sign(event)):
        known = [keys[(server, k)] for k in _signatures_of(event, server) if (server, k) in keys]
        if not known:
            return f"no signature of {server} by a key we could obtain"
        for verify_key in known:
            if not verify_event_signature(event.room_version, event.pdu, server, verify_key):
                return f"bad signature of {server} with ed25519:{verify_key.version}"
    return None
