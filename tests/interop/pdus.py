"""Hypothesis strategies for raw PDUs: every event type the redaction algorithm treats
specially, with the content keys each keeps or drops, random extra content and top-level keys
(origin, membership, prev_state, unsigned, Synapse's legacy age_ts/outlier/destinations, and
arbitrary names), in the shape of each room version's event format."""
from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, EventFormat
from tests.interop.rooms import ALICE, BOB, json_ints, json_values

# Top-level keys Synapse strips before the content hash although the spec does not
# (synapse/crypto/event_signing.py compute_content_hash).
SYNAPSE_ONLY_STRIPPED = ("age_ts", "outlier", "destinations")

_STANDARD_KEYS = {
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
    "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts",
    "membership", "unsigned", "redacts", *SYNAPSE_ONLY_STRIPPED,
}

SPECIAL_TYPES = [
    "m.room.member", "m.room.create", "m.room.join_rules", "m.room.power_levels",
    "m.room.aliases", "m.room.history_visibility", "m.room.redaction",
]
OTHER_TYPES = ["m.room.message", "m.room.topic", "m.room.name", "m.room.encrypted",
               "org.example.custom", "m.room.third_party_invite", "m.room.guest_access"]

keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
extra_content = st.dictionaries(keys, json_values, max_size=3)
user_ids = st.sampled_from([ALICE, BOB, "@x:c.test"])

_third_party_invite = st.one_of(
    st.fixed_dictionaries({"signed": json_values}, optional={"display_name": st.text(max_size=5),
                                                             "other": json_values}),
    st.fixed_dictionaries({}, optional={"display_name": st.text(max_size=5)}),
    json_values,
)

SPECIAL_CONTENT: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "m.room.member": st.fixed_dictionaries(
        {"membership": st.sampled_from(["join", "invite", "leave", "ban", "knock"])},
        optional={
            "third_party_invite": _third_party_invite,
            "join_authorised_via_users_server": st.one_of(user_ids, json_values),
            "displayname": st.text(max_size=5),
            "reason": st.text(max_size=5),
        }),
    "m.room.create": st.fixed_dictionaries({}, optional={
        "creator": user_ids, "room_version": st.sampled_from(["1", "11", "12"]),
        "m.federate": st.booleans(), "predecessor": json_values, "type": st.text(max_size=4),
        "additional_creators": st.lists(user_ids, max_size=2)}),
    "m.room.join_rules": st.fixed_dictionaries({}, optional={
        "join_rule": st.sampled_from(["public", "invite", "restricted", "knock_restricted"]),
        "allow": st.one_of(st.lists(st.fixed_dictionaries(
            {"type": st.just("m.room_membership"), "room_id": st.just("!r:a.test")}),
            max_size=2), json_values)}),
    "m.room.power_levels": st.fixed_dictionaries({}, optional={
        **{k: json_ints for k in ("ban", "events_default", "kick", "redact", "state_default",
                                  "users_default", "invite")},
        "events": st.dictionaries(keys, json_ints, max_size=2),
        "users": st.dictionaries(user_ids, json_ints, max_size=2),
        "notifications": st.dictionaries(keys, json_ints, max_size=2)}),
    "m.room.aliases": st.fixed_dictionaries({}, optional={
        "aliases": st.lists(st.just("#a:a.test"), max_size=2)}),
    "m.room.history_visibility": st.fixed_dictionaries({}, optional={
        "history_visibility": st.sampled_from(["shared", "joined", "world_readable"])}),
    "m.room.redaction": st.fixed_dictionaries({}, optional={
        "redacts": st.one_of(st.just("$target:a.test"), json_values),
        "reason": st.text(max_size=5)}),
}


def _event_ref(version: str, i: int) -> Any:
    if KNOWN_ROOM_VERSIONS[version].event_format is EventFormat.V1:
        return [f"$ref{i}:a.test", {"sha256": "aGFzaA"}]
    return "$" + f"{i:02d}" + "A" * 41


@st.composite
def pdus(draw: st.DrawFn, version: str, *, synapse_only_keys: bool = True,
         hashes_and_signatures: bool = True) -> dict[str, Any]:
    """A structurally valid PDU of the room version's format whose type, content and extra
    top-level keys are random. With `hashes_and_signatures` it carries a (wrong) `hashes`
    object, which Synapse needs to parse it, and maybe another server's signature."""
    rv = KNOWN_ROOM_VERSIONS[version]
    event_type = draw(st.sampled_from(SPECIAL_TYPES + OTHER_TYPES))
    content = dict(draw(extra_content))
    if event_type in SPECIAL_CONTENT:
        content.update(draw(SPECIAL_CONTENT[event_type]))
    pdu: dict[str, Any] = {
        "type": event_type,
        "sender": draw(user_ids),
        "content": content,
        "depth": draw(st.integers(1, 2**31)),
        "origin_server_ts": draw(st.integers(0, 2**42)),
        "prev_events": [_event_ref(version, i) for i in range(draw(st.integers(0, 2)))],
        "auth_events": [_event_ref(version, 10 + i) for i in range(draw(st.integers(0, 3)))],
    }
    if not (rv.room_id_from_create_event and event_type == "m.room.create"):
        pdu["room_id"] = "!room:a.test"
    if event_type != "m.room.redaction" and event_type != "m.room.message" or draw(st.booleans()):
        if event_type not in ("m.room.redaction", "m.room.message") or draw(st.booleans()):
            pdu["state_key"] = draw(st.sampled_from(["", ALICE, "x"]))
    if event_type == "m.room.redaction" and draw(st.booleans()):
        pdu["redacts"] = draw(st.one_of(st.just("$target:a.test"), json_values))
    if rv.event_format is EventFormat.V1:
        pdu["event_id"] = "$" + draw(st.text("abcdef0123", min_size=1, max_size=8)) + ":a.test"
    optional = {
        "origin": st.sampled_from(["a.test", "b.test"]),
        "membership": st.sampled_from(["join", "leave"]),
        "prev_state": st.just([]),
        # Synapse's parser types `age_ts` and `replaces_state` and refuses a PDU where they
        # are of another type; that is not what these tests look at.
        "unsigned": st.fixed_dictionaries({}, optional={
            "age": json_ints, "age_ts": json_ints, "replaces_state": st.just("$old:a.test"),
            "prev_content": json_values, "random": json_values}),
    }
    if hashes_and_signatures:
        # Synapse will not parse a PDU without `hashes`.
        pdu["hashes"] = draw(st.fixed_dictionaries(
            {"sha256": st.just("aGFzaA")}, optional={"sha512": st.just("b3RoZXI")}))
        optional["signatures"] = st.fixed_dictionaries(
            {}, optional={"b.test": st.just({"ed25519:x": "c2ln"})})
    if synapse_only_keys:
        optional.update({k: json_values for k in SYNAPSE_ONLY_STRIPPED})
    pdu.update(draw(st.fixed_dictionaries({}, optional=optional)))
    pdu.update(draw(st.dictionaries(keys.filter(lambda k: k not in _STANDARD_KEYS), json_values,
                                    max_size=2)))
    return pdu
