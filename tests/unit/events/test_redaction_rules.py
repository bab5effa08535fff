"""The redaction algorithm per room version (rooms/fragments/v1-redactions.md, v6-redactions.md,
rooms/v8.md, v9-redactions.md, v11-redactions.md), driven by the table in
tests/fixtures/spec_vectors/redaction_content.json."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from homeserver.events.redaction import prune_event_dict
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RedactionRules

TABLE = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "spec_vectors" / "redaction_content.json")
    .read_text(encoding="utf-8")
)["cases"]

# Which rules each room version uses (rooms/v*.md "Redactions").
RULES_BY_VERSION = {
    "1": "V1", "2": "V1", "3": "V1", "4": "V1", "5": "V1", "6": "V6", "7": "V6",
    "8": "V8", "9": "V9", "10": "V9", "11": "V11", "12": "V11",
}
TOP_LEVEL_V1 = {
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
    "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts",
    "membership",
}
TOP_LEVEL_V11 = TOP_LEVEL_V1 - {"origin", "membership", "prev_state"}


def _pdu(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """A PDU carrying every top-level key any version keeps, plus ones none keep."""
    return {
        "event_id": "$e:domain", "type": event_type, "room_id": "!r:domain",
        "sender": "@a:domain", "state_key": "", "content": copy.deepcopy(content),
        "hashes": {"sha256": "h"}, "signatures": {"domain": {"ed25519:1": "s"}}, "depth": 3,
        "prev_events": [], "prev_state": [], "auth_events": [], "origin": "domain",
        "origin_server_ts": 5, "membership": "join", "redacts": "$t:domain",
        "unsigned": {"age": 1}, "custom_top_level": {"x": 1},
    }


def test_room_versions_use_the_expected_rules() -> None:
    assert {v: rv.redaction.name for v, rv in KNOWN_ROOM_VERSIONS.items()} == RULES_BY_VERSION


@pytest.mark.parametrize("version", sorted(RULES_BY_VERSION, key=int))
@pytest.mark.parametrize("case", TABLE, ids=[c["type"] for c in TABLE])
def test_content_kept_per_version(case: dict[str, Any], version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    pdu = _pdu(case["type"], case["content"])
    before = copy.deepcopy(pdu)
    pruned = prune_event_dict(rv, pdu)
    assert pruned["content"] == case["expected"][RULES_BY_VERSION[version]], case["reason"]
    assert pdu == before, "redaction must not modify its input"


@pytest.mark.parametrize("version", sorted(RULES_BY_VERSION, key=int))
def test_top_level_keys_kept(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    pruned = prune_event_dict(rv, _pdu("m.room.message", {"body": "x"}))
    expected = TOP_LEVEL_V11 if rv.redaction is RedactionRules.V11 else TOP_LEVEL_V1
    assert set(pruned) == expected
    # `unsigned` (and the top-level `redacts` of pre-v11 redactions) are not kept.
    assert "unsigned" not in pruned and "redacts" not in pruned
    assert "custom_top_level" not in pruned


def test_v11_drops_origin_membership_prev_state() -> None:
    pdu = _pdu("m.room.member", {"membership": "join"})
    old = prune_event_dict(KNOWN_ROOM_VERSIONS["10"], pdu)
    new = prune_event_dict(KNOWN_ROOM_VERSIONS["11"], pdu)
    assert set(old) - set(new) == {"origin", "membership", "prev_state"}


def test_v11_third_party_invite_keeps_only_signed() -> None:
    signed = {"mxid": "@a:domain", "token": "t", "signatures": {"id": {"ed25519:0": "s"}}}
    content = {
        "membership": "invite", "third_party_invite": {"display_name": "a", "signed": signed},
    }
    pdu = _pdu("m.room.member", content)
    assert prune_event_dict(KNOWN_ROOM_VERSIONS["11"], pdu)["content"] == {
        "membership": "invite", "third_party_invite": {"signed": signed},
    }
    assert prune_event_dict(KNOWN_ROOM_VERSIONS["10"], pdu)["content"] == {"membership": "invite"}
    # Only for member events.
    other = _pdu("m.room.message", {"third_party_invite": {"signed": signed}})
    assert prune_event_dict(KNOWN_ROOM_VERSIONS["11"], other)["content"] == {}


def test_v11_create_content_fully_kept_and_v12_create_without_room_id() -> None:
    content = {"room_version": "12", "additional_creators": ["@b:domain"], "m.federate": True}
    pdu = _pdu("m.room.create", content)
    del pdu["room_id"]
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS["12"], pdu)
    assert pruned["content"] == content
    assert "room_id" not in pruned


def test_redaction_redacts_moves_into_content_in_v11() -> None:
    pdu = _pdu("m.room.redaction", {"redacts": "$t:domain", "reason": "r"})
    assert prune_event_dict(KNOWN_ROOM_VERSIONS["11"], pdu)["content"] == {"redacts": "$t:domain"}
    # Pre-v11 the top-level `redacts` is not protected and the content is emptied.
    v10 = prune_event_dict(KNOWN_ROOM_VERSIONS["10"], pdu)
    assert v10["content"] == {} and "redacts" not in v10


@pytest.mark.parametrize("version", ["1", "11"])
@pytest.mark.parametrize("content", [None, "text", 5, ["membership"]])
def test_non_object_content_becomes_empty(version: str, content: Any) -> None:
    pdu = _pdu("m.room.member", {})
    pdu["content"] = content
    assert prune_event_dict(KNOWN_ROOM_VERSIONS[version], pdu)["content"] == {}


@pytest.mark.parametrize("version", sorted(RULES_BY_VERSION, key=int))
def test_redaction_is_idempotent(version: str) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    for case in TABLE:
        once = prune_event_dict(rv, _pdu(case["type"], case["content"]))
        assert prune_event_dict(rv, once) == once, case["type"]
