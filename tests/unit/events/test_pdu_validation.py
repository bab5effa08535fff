"""validate_pdu and validate_canonical_json_value: the event format of each room version
(S2S "Checks performed on receipt of a PDU" step 1, PDU schemas pdu_v1 ... pdu_v12), the C-S
"Size limits" and appendices "Canonical JSON"."""
from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from canonicaljson import encode_canonical_json

from homeserver.errors import Codes, InvalidEvent, TooLarge
from homeserver.events.event import Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, EventFormat
from homeserver.events.validation import (
    MAX_PDU_SIZE,
    PduFieldTooLarge,
    validate_canonical_json_value,
    validate_pdu,
)
from homeserver.identifiers import is_valid_server_name, is_valid_user_id

ALL = sorted(KNOWN_ROOM_VERSIONS, key=int)
STRICT = [v for v in ALL if KNOWN_ROOM_VERSIONS[v].strict_canonical_json]
LENIENT = [v for v in ALL if not KNOWN_ROOM_VERSIONS[v].strict_canonical_json]
Mutate = Callable[[dict[str, Any]], None]
PduFor = Callable[..., dict[str, Any]]


def top(key: Any, value: Any) -> Mutate:
    """Set a top-level key of the PDU."""
    return lambda pdu: pdu.__setitem__(key, value)


def inner(key: Any, value: Any) -> Mutate:
    """Set a key of the PDU's content."""
    return lambda pdu: pdu["content"].__setitem__(key, value)


@pytest.fixture
def pdu_for(make_event: Callable[..., Event]) -> Callable[[str], dict[str, Any]]:
    def build(version: str, **kwargs: Any) -> dict[str, Any]:
        return copy.deepcopy(make_event(KNOWN_ROOM_VERSIONS[version], **kwargs).pdu)

    return build


def _rejects(version: str, pdu: Any, exc: type[Exception], *words: str) -> Exception:
    with pytest.raises(exc) as info:
        validate_pdu(KNOWN_ROOM_VERSIONS[version], pdu)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    return info.value


def test_versions_split_as_the_spec_says() -> None:
    assert LENIENT == ["1", "2", "3", "4", "5"]
    assert STRICT == ["6", "7", "8", "9", "10", "11", "12"]


# --- Built events pass -----------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_built_events_are_valid(version: str, pdu_for: PduFor) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    validate_pdu(rv, pdu_for(version))
    validate_pdu(rv, pdu_for(version, type="m.room.member", state_key="@alice:domain",
                             content={"membership": "join"}))
    target = "$x:domain" if rv.event_format is EventFormat.V1 else "$" + "b" * 43
    validate_pdu(rv, pdu_for(version, type="m.room.redaction", content={}, redacts=target))


@pytest.mark.parametrize("version", ALL)
def test_create_event(version: str, pdu_for: PduFor) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    create = pdu_for(version, type="m.room.create", state_key="", content={"room_version": version},
                     prev_events=[], auth_events=[], depth=1)
    validate_pdu(rv, create)
    if rv.room_id_from_create_event:
        assert "room_id" not in create
        with_room = dict(create, room_id="!" + "A" * 43)
        _rejects(version, with_room, InvalidEvent, "'room_id'", "absent", "m.room.create")
    else:
        _rejects(version, {k: v for k, v in create.items() if k != "room_id"}, InvalidEvent,
                 "'room_id' is missing")


def test_spec_pdu_examples_shapes(pdu_for: PduFor) -> None:
    # Shapes of the spec's PDU examples (data/api/server-server/examples/pdu_v1.json, pdu_v4,
    # pdu_v12) with our well-formed IDs: pairs in v1, plain IDs after.
    v1 = pdu_for("1")
    ref = ["$af232176:example.org", {"sha256": "abase64encodedsha256hashshouldbe43byteslong"}]
    v1["prev_events"] = [ref]
    v1["auth_events"] = [ref]
    validate_pdu(KNOWN_ROOM_VERSIONS["1"], v1)
    v12 = pdu_for("12")
    v12["room_id"] = "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"
    validate_pdu(KNOWN_ROOM_VERSIONS["12"], v12)


# --- Required keys and JSON types --------------------------------------------------------------

REQUIRED = ["type", "sender", "room_id", "content", "depth", "origin_server_ts", "prev_events",
            "auth_events", "hashes", "signatures"]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("key", REQUIRED)
def test_missing_required_key(version: str, key: str, pdu_for: PduFor) -> None:
    pdu = pdu_for(version)
    del pdu[key]
    err = _rejects(version, pdu, InvalidEvent, f"'{key}' is missing")
    assert err.errcode == Codes.BAD_JSON and err.status == 400  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_v2_event_id_required(version: str, pdu_for: PduFor) -> None:
    pdu = pdu_for(version)
    del pdu["event_id"]
    _rejects(version, pdu, InvalidEvent, "'event_id' is missing")
    for bad in (5, None, "$nodomain", "event:domain", "$a:bad domain"):
        _rejects(version, dict(pdu, event_id=bad), InvalidEvent, "'event_id'")
    _rejects(version, dict(pdu, event_id="$" + "e" * 250 + ":domain"), TooLarge, "'event_id'")


@pytest.mark.parametrize("version", ["3", "11"])
def test_v3_plus_ignores_an_event_id_key(version: str, pdu_for: PduFor) -> None:
    validate_pdu(KNOWN_ROOM_VERSIONS[version], dict(pdu_for(version), event_id="$whatever"))


WRONG_TYPES: list[tuple[str, Mutate, str]] = [
    ("type int", top("type", 5), "'type' must be a string"),
    ("type null", top("type", None), "'type' must be a string, not null"),
    ("sender list", top("sender", ["@a:domain"]), "'sender' must be a string"),
    ("room_id int", top("room_id", 1), "'room_id' must be a string"),
    ("content list", top("content", []), "'content' must be an object"),
    ("content string", top("content", "{}"), "'content' must be an object"),
    ("depth string", top("depth", "5"), "'depth' must be an integer"),
    ("depth bool", top("depth", True), "'depth' must be an integer, not a boolean"),
    ("depth float", top("depth", 5.0), "'depth' must be an integer, not a float"),
    ("depth negative", top("depth", -1), "'depth' must not be negative"),
    ("ts string", top("origin_server_ts", "1"), "'origin_server_ts' must be an integer"),
    ("ts bool", top("origin_server_ts", False), "'origin_server_ts' must be an integer"),
    ("prev_events object", top("prev_events", {}), "'prev_events' must be an array"),
    ("auth_events string", top("auth_events", "$x"), "'auth_events' must be an array"),
    ("hashes list", top("hashes", []), "'hashes' must be an object"),
    ("hashes no sha256", top("hashes", {"sha512": "x"}), "'hashes.sha256'"),
    ("hashes sha256 int", top("hashes", {"sha256": 1}), "'hashes.sha256'"),
    ("signatures list", top("signatures", []), "'signatures' must be an object"),
    ("signatures server not object", top("signatures", {"domain": "sig"}),
     "'signatures.domain'"),
    ("signature not string", top("signatures", {"domain": {"ed25519:1": 5}}),
     "'signatures.domain.ed25519:1' must be a string"),
    ("state_key int", top("state_key", 0), "'state_key' must be a string"),
    ("state_key null", top("state_key", None), "'state_key' must be a string"),
    ("unsigned list", top("unsigned", []), "'unsigned' must be an object"),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("name", "mutate", "message"), WRONG_TYPES, ids=[w[0] for w in WRONG_TYPES]
)
def test_wrong_json_types(
    version: str, name: str, mutate: Mutate, message: str, pdu_for: PduFor
) -> None:
    pdu = pdu_for(version)
    mutate(pdu)
    _rejects(version, pdu, InvalidEvent, message)


def test_not_an_object() -> None:
    bad: Any
    for bad in ([], "event", None, 5):
        _rejects("11", bad, InvalidEvent, "not a JSON object")


@pytest.mark.parametrize("version", ["1", "10"])
def test_pre_v11_top_level_redacts_must_be_a_string(
    version: str, pdu_for: PduFor
) -> None:
    pdu = pdu_for(version, type="m.room.redaction", content={})
    pdu["redacts"] = 5
    _rejects(version, pdu, InvalidEvent, "'redacts'")


# --- Identifiers -------------------------------------------------------------------------------

GOOD_SENDERS = [
    "@alice:domain", "@a.b_c=d-e/f+g:example.org", "@alice:example.org:8448",
    "@alice:1.2.3.4", "@alice:1.2.3.4:1234", "@alice:[1234:5678::abcd]",
    "@alice:[1234:5678::abcd]:5678",
    # appendices "Historical User IDs": any code points but ':' and NUL, even empty.
    "@Alice Smith:example.org", "@:example.org", "@ünï©ødé\x01:example.org",
]
BAD_SENDERS = [
    "alice", "@alice", "@alice:", "alice:example.org", "#alice:example.org",
    "@al\x00ice:example.org", "@alice:bad domain", "@alice:example.org:port",
    "@alice:example.org:123456", "@alice:[zz::1]", "@alice:exa_mple.org",
]


@pytest.mark.parametrize("sender", GOOD_SENDERS)
def test_good_senders(sender: str, pdu_for: PduFor) -> None:
    assert is_valid_user_id(sender)
    for version in ("1", "12"):
        validate_pdu(KNOWN_ROOM_VERSIONS[version], dict(pdu_for(version), sender=sender))


@pytest.mark.parametrize("sender", BAD_SENDERS)
def test_bad_senders(sender: str, pdu_for: PduFor) -> None:
    assert not is_valid_user_id(sender)
    for version in ("1", "12"):
        _rejects(version, dict(pdu_for(version), sender=sender), InvalidEvent,
                 "'sender' is not a valid user ID")


def test_server_names() -> None:
    for good in ("matrix.org", "matrix.org:8888", "1.2.3.4", "1.2.3.4:1234",
                 "[1234:5678::abcd]", "[1234:5678::abcd]:5678", "localhost", "a-b.c"):
        assert is_valid_server_name(good), good
    for bad in ("", "matrix.org:", ":8448", "[::1", "ma trix.org", "matrix.org:abc",
                "under_score.org", "é.org", 5):
        assert not is_valid_server_name(bad), bad


@pytest.mark.parametrize("version", [v for v in ALL if v != "12"])
@pytest.mark.parametrize("room_id", ["!abc", "abc:domain", "#alias:domain", "!a\x00b:domain",
                                     "!abc:", "!abc:bad domain", "!" + "A" * 43])
def test_bad_room_ids_with_domain(
    version: str, room_id: str, pdu_for: PduFor
) -> None:
    _rejects(version, dict(pdu_for(version), room_id=room_id), InvalidEvent,
             "'room_id' is not a valid room ID")


@pytest.mark.parametrize("room_id", ["!room:domain", "!" + "A" * 42, "!" + "A" * 44,
                                     "!" + "A" * 42 + "+", "!" + "A" * 42 + "/", "$" + "A" * 43])
def test_bad_v12_room_ids(room_id: str, pdu_for: PduFor) -> None:
    _rejects("12", dict(pdu_for("12"), room_id=room_id), InvalidEvent,
             "'room_id' is not a valid room ID", "43-character")


def test_good_v12_room_id(pdu_for: PduFor) -> None:
    validate_pdu(KNOWN_ROOM_VERSIONS["12"], dict(pdu_for("12"), room_id="!" + "a-_Z9" * 8 + "xyz"))


# --- prev_events / auth_events -----------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_reference_count_limits(
    version: str, pdu_for: PduFor, example_event_id: Callable[..., str]
) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    ids = [example_event_id(rv, n) for n in range(21)]
    refs = [[i, {}] for i in ids] if rv.event_format is EventFormat.V1 else ids
    validate_pdu(rv, dict(pdu_for(version), prev_events=refs[:20], auth_events=refs[:10]))
    validate_pdu(rv, dict(pdu_for(version), prev_events=[], auth_events=[]))
    _rejects(version, dict(pdu_for(version), prev_events=refs[:21]), InvalidEvent,
             "'prev_events'", "21", "20")
    _rejects(version, dict(pdu_for(version), auth_events=refs[:11]), InvalidEvent,
             "'auth_events'", "11", "10")


V1_BAD_REFS: list[tuple[Any, str]] = [
    ("$a:domain", "[event_id, {hashes}] pair"),
    (["$a:domain"], "pair"),
    (["$a:domain", {}, {}], "pair"),
    ([5, {}], "[0]' is not a valid event ID"),
    (["a:domain", {}], "[0]' is not a valid event ID"),
    (["$" + "a" * 43, {}], "[0]' is not a valid event ID"),
    (["$a:domain", "hash"], "[1]' must be an object"),
    (["$a:domain", {"sha256": 5}], "[1].sha256' must be a string"),
]


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("key", ["prev_events", "auth_events"])
@pytest.mark.parametrize(("ref", "message"), V1_BAD_REFS)
def test_v1_reference_shape(
    version: str, key: str, ref: Any, message: str, pdu_for: PduFor
) -> None:
    pdu = pdu_for(version)
    pdu[key] = [["$ok:domain", {"sha256": "abc"}], ref]
    _rejects(version, pdu, InvalidEvent, f"'{key}[1]", message)


@pytest.mark.parametrize("key", ["prev_events", "auth_events"])
def test_v3_reference_alphabet(key: str, pdu_for: PduFor) -> None:
    good = "$" + "a" * 41 + "+/"
    validate_pdu(KNOWN_ROOM_VERSIONS["3"], dict(pdu_for("3"), **{key: [good]}))
    for bad in ("$" + "a" * 41 + "-_", "$a:domain", "$" + "a" * 42, ["$" + "a" * 43, {}], 5):
        _rejects("3", dict(pdu_for("3"), **{key: [bad]}), InvalidEvent, f"'{key}[0]'", "standard")


@pytest.mark.parametrize("version", ["4", "10", "11", "12"])
@pytest.mark.parametrize("key", ["prev_events", "auth_events"])
def test_v4_plus_reference_alphabet(
    version: str, key: str, pdu_for: PduFor
) -> None:
    good = "$" + "a" * 41 + "-_"
    validate_pdu(KNOWN_ROOM_VERSIONS[version], dict(pdu_for(version), **{key: [good]}))
    for bad in ("$" + "a" * 41 + "+/", "$a:domain", "$" + "a" * 44, "", ["$" + "a" * 43]):
        _rejects(version, dict(pdu_for(version), **{key: [bad]}), InvalidEvent,
                 f"'{key}[0]'", "URL-safe")


# --- depth and origin_server_ts ranges ---------------------------------------------------------


@pytest.mark.parametrize("version", LENIENT)
def test_depth_limit_before_v6(version: str, pdu_for: PduFor) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    validate_pdu(rv, dict(pdu_for(version), depth=0))
    validate_pdu(rv, dict(pdu_for(version), depth=2**63 - 1))
    _rejects(version, dict(pdu_for(version), depth=2**63), InvalidEvent, "'depth'", str(2**63 - 1))


@pytest.mark.parametrize("version", STRICT)
def test_depth_limit_from_v6(version: str, pdu_for: PduFor) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    validate_pdu(rv, dict(pdu_for(version), depth=2**53 - 1))
    _rejects(version, dict(pdu_for(version), depth=2**53), InvalidEvent, "'depth'", str(2**53 - 1))


def test_origin_server_ts_range(pdu_for: PduFor) -> None:
    validate_pdu(KNOWN_ROOM_VERSIONS["5"], dict(pdu_for("5"), origin_server_ts=2**63 - 1))
    validate_pdu(KNOWN_ROOM_VERSIONS["5"], dict(pdu_for("5"), origin_server_ts=-5))
    _rejects("5", dict(pdu_for("5"), origin_server_ts=2**63), InvalidEvent, "'origin_server_ts'")
    _rejects("6", dict(pdu_for("6"), origin_server_ts=2**53), InvalidEvent, "origin_server_ts",
             "Canonical JSON range")


# --- Field size limits -------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_type_and_state_key_limits(version: str, pdu_for: PduFor) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    validate_pdu(rv, dict(pdu_for(version), type="t" * 255, state_key="s" * 255))
    # Exactly 255 bytes of two-byte characters plus one ASCII is fine too.
    validate_pdu(rv, dict(pdu_for(version), state_key="é" * 127 + "s"))
    for key in ("type", "state_key"):
        too_long = dict(pdu_for(version), **{key: "x" * 256})
        err = _rejects(version, too_long, TooLarge, f"'{key}'", "255")
        assert err.status == 413 and err.errcode == Codes.TOO_LARGE  # type: ignore[attr-defined]
        assert isinstance(err, PduFieldTooLarge) and not err.persist_as_rejected


@pytest.mark.parametrize("version", ALL)
def test_byte_limit_versus_code_points(version: str, pdu_for: PduFor) -> None:
    # 128 two-byte characters: within 255 code points, over 255 bytes. Synapse counted code
    # points before room version 11, so there such events are rejected but kept.
    rv = KNOWN_ROOM_VERSIONS[version]
    err = _rejects(version, dict(pdu_for(version), state_key="é" * 128), PduFieldTooLarge,
                   "'state_key'", "256 bytes")
    assert err.persist_as_rejected is (rv.redaction.name != "V11")  # type: ignore[attr-defined]


@pytest.mark.parametrize("version", ["1", "11", "12"])
def test_sender_and_room_id_limits(version: str, pdu_for: PduFor) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    sender = "@" + "a" * (255 - len("@:domain")) + ":domain"
    assert len(sender) == 255
    validate_pdu(rv, dict(pdu_for(version), sender=sender))
    _rejects(version, dict(pdu_for(version), sender="@a" + sender[1:]), TooLarge, "'sender'")
    if not rv.room_id_from_create_event:
        room_id = "!" + "r" * (255 - len("!:domain")) + ":domain"
        validate_pdu(rv, dict(pdu_for(version), room_id=room_id))
        _rejects(version, dict(pdu_for(version), room_id="!r" + room_id[1:]), TooLarge, "'room_id'")


def _pad_to(pdu: dict[str, Any], size: int) -> dict[str, Any]:
    padded = copy.deepcopy(pdu)
    padded["content"]["pad"] = ""
    base = len(encode_canonical_json(padded))
    padded["content"]["pad"] = "x" * (size - base)
    assert len(encode_canonical_json(padded)) == size
    return padded


@pytest.mark.parametrize("version", ["1", "5", "6", "11", "12"])
def test_pdu_size_limit(version: str, pdu_for: PduFor) -> None:
    rv = KNOWN_ROOM_VERSIONS[version]
    pdu = pdu_for(version)
    validate_pdu(rv, _pad_to(pdu, MAX_PDU_SIZE))  # exactly 65536 bytes: allowed
    validate_pdu(rv, _pad_to(pdu, MAX_PDU_SIZE - 1))
    err = _rejects(version, _pad_to(pdu, MAX_PDU_SIZE + 1), TooLarge, "65537 bytes", "65536")
    assert err.status == 413 and err.errcode == Codes.TOO_LARGE  # type: ignore[attr-defined]
    assert not isinstance(err, PduFieldTooLarge)


def test_pdu_size_counts_utf8_bytes_and_signatures(pdu_for: PduFor) -> None:
    # Bytes, not characters: two ASCII characters become one three-byte character.
    pdu = _pad_to(pdu_for("11"), MAX_PDU_SIZE - 1)
    pdu["content"]["pad"] = pdu["content"]["pad"][:-2] + "日"
    validate_pdu(KNOWN_ROOM_VERSIONS["11"], pdu)  # 65536 bytes
    pdu["content"]["pad"] = pdu["content"]["pad"][:-2] + "é日"  # same characters, one more byte
    _rejects("11", pdu, TooLarge, "65537 bytes")
    # Signatures count: another server's signature pushes a full event over.
    full = _pad_to(pdu_for("11"), MAX_PDU_SIZE)
    full["signatures"]["other.example"] = {"ed25519:a": "c2ln"}
    _rejects("11", full, TooLarge)


def test_built_signed_event_at_the_limit(make_event: Callable[..., Event]) -> None:
    # A real signed event padded to exactly 65536 bytes: hash and signature have fixed sizes.
    rv = KNOWN_ROOM_VERSIONS["12"]
    probe = make_event(rv, content={"body": ""})
    pad = MAX_PDU_SIZE - len(encode_canonical_json(probe.pdu))
    event = make_event(rv, content={"body": "x" * pad})
    assert len(encode_canonical_json(event.pdu)) == MAX_PDU_SIZE
    validate_pdu(rv, event.pdu)
    over = make_event(rv, content={"body": "x" * (pad + 1)})
    _rejects("12", over.pdu, TooLarge)


# --- Canonical JSON ----------------------------------------------------------------------------

NON_CANONICAL_IN_STRICT: list[tuple[str, Mutate, str]] = [
    ("float", inner("x", 1.5), "content.x: float"),
    ("integral float", inner("x", 1.0), "content.x: float"),
    ("negative zero float", inner("x", -0.0), "content.x: float"),
    ("int over 2**53-1", inner("x", 2**53), "content.x: integer"),
    ("int under -(2**53)+1", inner("x", -(2**53)), "content.x: integer"),
    ("nested float", inner("a", [0, {"b": [1, 2.5]}]),
     "content.a[1].b[1]: float"),
    ("nested big int", inner("a", {"b": {"c": [2**60]}}),
     "content.a.b.c[0]: integer"),
    ("float in unsigned", top("unsigned", {"age": 1.5}), "unsigned.age: float"),
    ("big int at top level", top("custom", 2**64), "custom: integer"),
]


@pytest.mark.parametrize("version", STRICT)
@pytest.mark.parametrize(("name", "mutate", "where"), NON_CANONICAL_IN_STRICT,
                         ids=[c[0] for c in NON_CANONICAL_IN_STRICT])
def test_strict_versions_reject_non_canonical_numbers(
    version: str, name: str, mutate: Mutate, where: str, pdu_for: PduFor
) -> None:
    pdu = pdu_for(version)
    mutate(pdu)
    _rejects(version, pdu, InvalidEvent, where, f"room version {version}")


@pytest.mark.parametrize("version", LENIENT)
@pytest.mark.parametrize(("name", "mutate", "where"), NON_CANONICAL_IN_STRICT,
                         ids=[c[0] for c in NON_CANONICAL_IN_STRICT])
def test_lenient_versions_accept_big_ints_and_floats(
    version: str, name: str, mutate: Mutate, where: str, pdu_for: PduFor
) -> None:
    # appendices "Canonical JSON" warning: rooms v1-v5 may hold such JSON and servers SHOULD
    # handle it; rooms/fragments/v1-canonical-json.md: servers MUST NOT strictly enforce it.
    pdu = pdu_for(version)
    mutate(pdu)
    validate_pdu(KNOWN_ROOM_VERSIONS[version], pdu)


@pytest.mark.parametrize("version", ALL)
def test_canonical_range_edges_accepted(version: str, pdu_for: PduFor) -> None:
    pdu = pdu_for(version)
    pdu["content"].update({"max": 2**53 - 1, "min": -(2**53) + 1, "zero": 0, "t": True,
                           "f": False, "n": None, "nested": [[[{"x": [2**53 - 1]}]]]})
    validate_pdu(KNOWN_ROOM_VERSIONS[version], pdu)


ALWAYS_REJECTED: list[tuple[str, Mutate, str]] = [
    ("NaN", inner("x", float("nan")), "content.x: nan"),
    ("Infinity", inner("x", float("inf")), "content.x: inf"),
    ("-Infinity nested", inner("a", [{"b": float("-inf")}]),
     "content.a[0].b: -inf"),
    ("non-string key", inner(1, "x"), "content: object key 1"),
    ("nested non-string key", inner("a", {None: 1}),
     "content.a: object key None"),
    ("lone surrogate value", inner("x", "a\ud800b"),
     "content.x: string is not valid Unicode"),
    ("lone surrogate key", inner("\udfff", 1),
     "content: object key"),
    ("set value", inner("x", {1, 2}), "content.x: set is not a JSON value"),
    ("bytes value", inner("x", b"raw"), "content.x: bytes"),
]


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize(
    ("name", "mutate", "where"), ALWAYS_REJECTED, ids=[c[0] for c in ALWAYS_REJECTED]
)
def test_invalid_json_values_rejected_in_every_version(
    version: str, name: str, mutate: Mutate, where: str, pdu_for: PduFor
) -> None:
    pdu = pdu_for(version)
    mutate(pdu)
    _rejects(version, pdu, InvalidEvent, where)


# --- validate_canonical_json_value on its own -------------------------------------------------


def test_value_helper_strict_and_lenient() -> None:
    ok = {"a": [1, -1, 2**53 - 1, -(2**53) + 1, "s", None, True, {"b": []}], "c": ("t", 1)}
    validate_canonical_json_value(ok, strict=True)
    validate_canonical_json_value(ok, strict=False)
    lenient_only = {"a": 1.5, "b": [2**70], "c": -0.0}
    validate_canonical_json_value(lenient_only, strict=False)
    with pytest.raises(InvalidEvent, match=r"^content\.a: float 1\.5"):
        validate_canonical_json_value(lenient_only, strict=True)
    with pytest.raises(InvalidEvent, match=r"^body\.b\[0\]: integer"):
        validate_canonical_json_value({"b": [2**70]}, strict=True, path="body")


def test_value_helper_errors_are_bad_json() -> None:
    with pytest.raises(InvalidEvent) as info:
        validate_canonical_json_value({"x": float("nan")}, strict=False)
    assert info.value.errcode == Codes.BAD_JSON and info.value.status == 400


@pytest.mark.parametrize(("value", "strict", "message"), [
    (1.5, True, "content: float"),
    (2**53, True, "content: integer"),
    (float("nan"), False, "content: nan"),
    ("\ud800", False, "content: string is not valid Unicode"),
    (object(), False, "content: object is not a JSON value"),
])
def test_value_helper_on_scalars(value: Any, strict: bool, message: str) -> None:
    with pytest.raises(InvalidEvent, match="^" + message.replace(".", r"\.")):
        validate_canonical_json_value(value, strict=strict)


def test_value_helper_scalars_accepted() -> None:
    value: Any
    for value in (0, 2**53 - 1, "x", True, None, [], {}):
        validate_canonical_json_value(value, strict=True)
    for value in (1.5, 2**80, -0.0):
        validate_canonical_json_value(value, strict=False)


def test_value_helper_bools_are_not_range_checked_as_ints() -> None:
    validate_canonical_json_value({"t": True, "f": False}, strict=True)


def test_value_helper_deep_nesting_needs_no_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    validate_canonical_json_value(deep, strict=True)
    bad: Any = 1.5
    for _ in range(10_000):
        bad = {"k": bad}
    with pytest.raises(InvalidEvent, match=r"^content(\.k){10000}: float"):
        validate_canonical_json_value(bad, strict=True)


def test_value_helper_int_subclasses_and_mappings() -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 100

    validate_canonical_json_value({"l": Level.HIGH}, strict=True)

    class Big(int):
        pass

    with pytest.raises(InvalidEvent, match="integer"):
        validate_canonical_json_value({"l": Big(2**60)}, strict=True)


def test_pdu_may_be_a_non_dict_mapping(pdu_for: PduFor) -> None:
    from types import MappingProxyType

    validate_pdu(KNOWN_ROOM_VERSIONS["11"], MappingProxyType(pdu_for("11")))


def test_validation_does_not_modify_the_pdu(pdu_for: PduFor) -> None:
    pdu = pdu_for("12")
    before = copy.deepcopy(pdu)
    validate_pdu(KNOWN_ROOM_VERSIONS["12"], pdu)
    assert pdu == before
