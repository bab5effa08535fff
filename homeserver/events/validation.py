"""Format checks on a PDU before signatures, hashes or auth rules: S2S "Checks performed on
receipt of a PDU" step 1 (the event format of rooms/v*.md), C-S "Size limits", appendices
"Canonical JSON" and "Identifier Grammar".
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from canonicaljson import encode_canonical_json

from homeserver.errors import InvalidEvent, TooLarge
from homeserver.events.room_versions import EventFormat, RoomVersion
from homeserver.identifiers import SERVER_NAME_PATTERN, is_valid_user_id

# C-S "Size limits": the complete event, in the federation format with its signatures, as
# Canonical JSON.
MAX_PDU_SIZE = 65536
# C-S "Size limits": sender, room_id and event_id take the 255-byte limit of their identifier
# grammar (appendices "User Identifiers", "Room IDs", "Event IDs"); state_key and type are
# limited to 255 bytes directly.
MAX_FIELD_BYTES = 255
# S2S PDU schemas (pdu_v1 ... pdu_v12): "Must contain less than or equal to 20 events" /
# "... 10 events".
MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
# appendices "Canonical JSON": integers in [-(2**53)+1, (2**53)-1].
CANONICALJSON_MAX_INT = 2**53 - 1
CANONICALJSON_MIN_INT = -CANONICALJSON_MAX_INT
# pdu_v1/v3/v4 `depth`: at most 2**63 - 1; depth_v6.yaml lowers it to 2**53 - 1.
MAX_DEPTH = 2**63 - 1
# pdu_base `origin_server_ts` is an int64.
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# appendices "Room IDs" with a domain (room versions 1 to 11).
_ROOM_ID_WITH_DOMAIN_RE = re.compile(r"![^:\x00]*:" + SERVER_NAME_PATTERN + r"\Z")
# Room versions 1 and 2 ("v1-event-ids"): $opaque_id:domain.
_EVENT_ID_WITH_DOMAIN_RE = re.compile(r"\$[^:\x00]*:" + SERVER_NAME_PATTERN + r"\Z")
# v3: reference hash in standard unpadded base64; v4+: URL-safe (a sha256 is 43 characters).
_EVENT_ID_V3_RE = re.compile(r"\$[A-Za-z0-9+/]{43}\Z")
_EVENT_ID_V4_RE = re.compile(r"\$[A-Za-z0-9_\-]{43}\Z")
# v12: the room ID is the create event's ID with the `!` sigil.
_ROOM_ID_V12_RE = re.compile(r"![A-Za-z0-9_\-]{43}\Z")

_CREATE = "m.room.create"


class PduFieldTooLarge(TooLarge):
    """A PDU field over its 255-byte limit (413 M_TOO_LARGE).

    `persist_as_rejected` is True when the field is within 255 code points but over 255 bytes
    in a room version before 11: Synapse counted code points there, so such events exist in
    real rooms and must be stored as rejected rather than dropped to keep the DAG whole.
    """

    def __init__(self, message: str, *, persist_as_rejected: bool = False) -> None:
        super().__init__(message)
        self.persist_as_rejected = persist_as_rejected


# ---------------------------------------------------------------------------------------------
# Identifier grammars


def is_valid_room_id(room_version: RoomVersion, value: object) -> bool:
    if not isinstance(value, str):
        return False
    if room_version.room_id_from_create_event:
        return _ROOM_ID_V12_RE.match(value) is not None
    return (
        len(value.encode("utf-8", "surrogatepass")) <= MAX_FIELD_BYTES
        and _ROOM_ID_WITH_DOMAIN_RE.match(value) is not None
    )


def is_valid_room_id_of_some_version(value: object) -> bool:
    """A room ID in the grammar of some room version: what a client may name before anyone
    knows the room's version."""
    return isinstance(value, str) and (
        _ROOM_ID_V12_RE.match(value) is not None
        or (
            len(value.encode("utf-8", "surrogatepass")) <= MAX_FIELD_BYTES
            and _ROOM_ID_WITH_DOMAIN_RE.match(value) is not None
        )
    )


def is_valid_event_id(room_version: RoomVersion, value: object) -> bool:
    if not isinstance(value, str):
        return False
    fmt = room_version.event_format
    if fmt is EventFormat.V1:
        return (
            len(value.encode("utf-8", "surrogatepass")) <= MAX_FIELD_BYTES
            and _EVENT_ID_WITH_DOMAIN_RE.match(value) is not None
        )
    if fmt is EventFormat.V2:
        return _EVENT_ID_V3_RE.match(value) is not None
    return _EVENT_ID_V4_RE.match(value) is not None


# ---------------------------------------------------------------------------------------------
# Canonical JSON values


def validate_canonical_json_value(value: Any, strict: bool, *, path: str = "content") -> None:
    """Raise InvalidEvent (400 M_BAD_JSON) unless `value` is encodable as Canonical JSON.

    Always rejected: NaN and infinite floats, object keys that are not strings, strings with
    lone surrogates (not encodable as UTF-8), and non-JSON types. With `strict` (room versions
    with strict_canonical_json, and anything a client sends): every number must be an integer
    in [-(2**53)+1, 2**53-1]; floats are rejected even when integral. `path` names the value in
    the error message. The walk is iterative, so nesting depth costs no stack.
    """
    problem = _find_json_problem(value, strict)
    if problem is not None:
        where, reason = problem
        raise InvalidEvent(f"{_format_path(path, where)}: {reason}")


# A path is built only when a problem is found: each container on the stack holds a link
# (parent link, key), so pushing costs O(1) whatever the nesting depth.
_Link = tuple[Any, "str | int"] | None


def _find_json_problem(root: Any, strict: bool) -> tuple[tuple[str | int, ...], str] | None:
    """The path and reason of the first non-canonical value under `root`, or None."""
    reason = _scalar_problem(root, strict)
    if reason is not None:
        return (), reason
    if not isinstance(root, (dict, list, tuple)):
        return None
    stack: list[tuple[Any, _Link]] = [(root, None)]
    while stack:
        container, link = stack.pop()
        items: Any
        if isinstance(container, dict):
            for key in container:
                if type(key) is not str:
                    return _unlink(link), f"object key {_short(key)} is not a string"
                if not key.isascii() and not _utf8_ok(key):
                    return _unlink(link), (
                        f"object key {_short(key)} is not valid Unicode (lone surrogate)"
                    )
            items = container.items()
        else:
            items = enumerate(container)
        for key, v in items:
            t = type(v)
            if t is str:
                if not v.isascii() and not _utf8_ok(v):
                    return _unlink((link, key)), "string is not valid Unicode (lone surrogate)"
            elif t is int:
                if strict and (v > CANONICALJSON_MAX_INT or v < CANONICALJSON_MIN_INT):
                    return _unlink((link, key)), (
                        f"integer {_short(v)} is outside the Canonical JSON range "
                        "[-(2**53)+1, (2**53)-1]"
                    )
            elif t is dict or t is list or t is tuple:
                stack.append((v, (link, key)))
            elif v is None or t is bool:
                pass
            else:
                reason = _scalar_problem(v, strict)
                if reason is not None:
                    return _unlink((link, key)), reason
                if isinstance(v, (dict, list, tuple)):
                    stack.append((v, (link, key)))
    return None


def _unlink(link: _Link) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    while link is not None:
        link, key = link
        parts.append(key)
    return tuple(reversed(parts))


def _scalar_problem(v: Any, strict: bool) -> str | None:
    """Why a non-container value is not Canonical JSON; handles subclasses (IntEnum, ...)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        if v.isascii() or _utf8_ok(v):
            return None
        return "string is not valid Unicode (lone surrogate)"
    if isinstance(v, int):
        if strict and (v > CANONICALJSON_MAX_INT or v < CANONICALJSON_MIN_INT):
            return (
                f"integer {_short(v)} is outside the Canonical JSON range "
                "[-(2**53)+1, (2**53)-1]"
            )
        return None
    if isinstance(v, float):
        if not math.isfinite(v):
            return f"{v!r} is not a JSON number"
        if strict:
            return f"float {v!r} is not allowed: Canonical JSON numbers are integers"
        return None
    if isinstance(v, (dict, list, tuple)):
        return None
    return f"{type(v).__name__} is not a JSON value"


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _format_path(root: str, parts: tuple[str | int, ...]) -> str:
    out = [root]
    for part in parts:
        out.append(f"[{part}]" if isinstance(part, int) else (f".{part}" if any(out) else part))
    return "".join(out) or "event"


def _short(value: Any, limit: int = 64) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# PDUs


def validate_pdu(room_version: RoomVersion, pdu: Mapping[str, Any]) -> None:
    """Check that `pdu` has the event format of `room_version`; raise InvalidEvent (400
    M_BAD_JSON) or TooLarge (413 M_TOO_LARGE, a PduFieldTooLarge for single fields) naming the
    offending field. Does not check hashes, signatures or auth rules.

    Over federation, strip `unsigned` down to the keys you trust first (it is covered by
    neither hashes nor signatures, so any server on the path may have added to it); this
    function checks the PDU as given, `unsigned` included.
    """
    if not isinstance(pdu, Mapping):
        raise InvalidEvent("The event is not a JSON object")
    _check_fields(room_version, pdu)
    strict = room_version.strict_canonical_json
    body = pdu if type(pdu) is dict else dict(pdu)
    try:
        encoded = encode_canonical_json(body)
    except (TypeError, ValueError):
        # The encoder's own message names no field; walk to find which value it refused.
        problem = _find_json_problem(body, strict)
        where, reason = problem if problem is not None else ((), "not encodable as Canonical JSON")
        raise InvalidEvent(f"{_format_path('', where)}: {reason}") from None
    if len(encoded) > MAX_PDU_SIZE:
        raise TooLarge(
            f"The event is {len(encoded)} bytes of Canonical JSON, over the "
            f"{MAX_PDU_SIZE}-byte limit"
        )
    # The encoder already refused NaN, infinities, lone surrogates and non-JSON types; the walk
    # adds non-string keys (which json.dumps would stringify) and, in strict room versions,
    # integers out of range and floats.
    problem = _find_json_problem(body, strict)
    if problem is not None:
        where, reason = problem
        suffix = (
            f" (room version {room_version.identifier} enforces Canonical JSON)" if strict else ""
        )
        raise InvalidEvent(f"{_format_path('', where)}: {reason}{suffix}")


def _check_fields(rv: RoomVersion, pdu: Mapping[str, Any]) -> None:
    # `type`: a string of at most 255 bytes (C-S "Size limits").
    event_type = _required(pdu, "type", str, "a string")
    _check_length(rv, "type", event_type)

    # sender: a user ID (appendices "User Identifiers"; historical localparts accepted).
    sender = _required(pdu, "sender", str, "a string")
    _check_length(rv, "sender", sender)
    if not is_valid_user_id(sender):
        raise InvalidEvent(f"'sender' is not a valid user ID: {_short(sender)}")

    # room_id: v12 create events have none (the room ID is derived from their event ID);
    # every other event needs one in the format of its room version.
    if rv.room_id_from_create_event and event_type == _CREATE:
        if "room_id" in pdu:
            raise InvalidEvent(
                f"'room_id' must be absent from an m.room.create event in room version "
                f"{rv.identifier}"
            )
        # The room ID is derived from the room's create event, ("m.room.create", ""); Synapse
        # derives none for another state_key (or none at all) and refuses such a PDU.
        if pdu.get("state_key") != "":
            raise InvalidEvent(
                f"an m.room.create event must have an empty 'state_key' in room version "
                f"{rv.identifier}"
            )
    else:
        room_id = _required(pdu, "room_id", str, "a string")
        _check_length(rv, "room_id", room_id)
        if not is_valid_room_id(rv, room_id):
            expected = (
                "'!' and the 43-character URL-safe base64 hash of the create event"
                if rv.room_id_from_create_event
                else "'!opaque_id:server_name'"
            )
            raise InvalidEvent(f"'room_id' is not a valid room ID ({expected}): {_short(room_id)}")

    # event_id: carried in the PDU in v1/v2 only; later versions derive it.
    if rv.event_format is EventFormat.V1:
        event_id = _required(pdu, "event_id", str, "a string")
        _check_length(rv, "event_id", event_id)
        if _EVENT_ID_WITH_DOMAIN_RE.match(event_id) is None:
            raise InvalidEvent(
                f"'event_id' is not a valid event ID ('$opaque_id:server_name'): "
                f"{_short(event_id)}"
            )

    if "state_key" in pdu:
        state_key = pdu["state_key"]
        if not isinstance(state_key, str):
            raise InvalidEvent("'state_key' must be a string when present")
        _check_length(rv, "state_key", state_key)

    _required(pdu, "content", dict, "an object")

    depth = _required_int(pdu, "depth")
    max_depth = CANONICALJSON_MAX_INT if rv.strict_canonical_json else MAX_DEPTH
    if depth < 0:
        raise InvalidEvent(f"'depth' must not be negative: {depth}")
    if depth > max_depth:
        raise InvalidEvent(
            f"'depth' {depth} is over the maximum {max_depth} for room version {rv.identifier}"
        )

    ts = _required_int(pdu, "origin_server_ts")
    if not _INT64_MIN <= ts <= _INT64_MAX:
        raise InvalidEvent(f"'origin_server_ts' {ts} does not fit in a 64-bit integer")

    _check_refs(rv, pdu, "prev_events", MAX_PREV_EVENTS)
    _check_refs(rv, pdu, "auth_events", MAX_AUTH_EVENTS)

    hashes = _required(pdu, "hashes", dict, "an object")
    if not isinstance(hashes.get("sha256"), str):
        raise InvalidEvent("'hashes.sha256' must be a string (the content hash)")

    signatures = _required(pdu, "signatures", dict, "an object")
    for server, by_key in signatures.items():
        if not isinstance(by_key, dict):
            raise InvalidEvent(f"'signatures.{server}' must be an object of key ID to signature")
        for key_id, sig in by_key.items():
            if not isinstance(sig, str):
                raise InvalidEvent(f"'signatures.{server}.{key_id}' must be a string")

    if "unsigned" in pdu and not isinstance(pdu["unsigned"], dict):
        raise InvalidEvent("'unsigned' must be an object when present")

    # Before v11 an m.room.redaction names its target at the top level.
    if not rv.redacts_in_content and "redacts" in pdu and not isinstance(pdu["redacts"], str):
        raise InvalidEvent("'redacts' must be a string (an event ID) when present")


def _required(pdu: Mapping[str, Any], key: str, kind: type, kind_name: str) -> Any:
    if key not in pdu:
        raise InvalidEvent(f"'{key}' is missing")
    value = pdu[key]
    if not isinstance(value, kind):
        raise InvalidEvent(f"'{key}' must be {kind_name}, not {_json_type(value)}")
    return value


def _required_int(pdu: Mapping[str, Any], key: str) -> int:
    if key not in pdu:
        raise InvalidEvent(f"'{key}' is missing")
    value = pdu[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEvent(f"'{key}' must be an integer, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _check_length(rv: RoomVersion, key: str, value: str) -> None:
    """C-S "Size limits": at most 255 bytes. Synapse always limited code points and, before
    room version 11, let byte-limit breaches through as rejected events (event_auth.py
    `_check_size_limits`), so those are flagged `persist_as_rejected`."""
    if len(value) <= MAX_FIELD_BYTES and value.isascii():
        return
    if len(value) > MAX_FIELD_BYTES:
        raise PduFieldTooLarge(f"'{key}' is {len(value)} characters, over {MAX_FIELD_BYTES} bytes")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_FIELD_BYTES:
        raise PduFieldTooLarge(
            f"'{key}' is {size} bytes, over the {MAX_FIELD_BYTES}-byte limit",
            persist_as_rejected=not rv.strict_event_byte_limits,
        )


def _check_refs(rv: RoomVersion, pdu: Mapping[str, Any], key: str, limit: int) -> None:
    refs = _required(pdu, key, list, "an array")
    if len(refs) > limit:
        raise InvalidEvent(f"'{key}' lists {len(refs)} events, over the limit of {limit}")
    if rv.event_format is EventFormat.V1:
        # v1/v2: [event_id, {"sha256": reference hash}] pairs. The hash is advisory and servers
        # send {} when they do not know it, so only its shape is checked.
        for i, ref in enumerate(refs):
            if not isinstance(ref, (list, tuple)) or len(ref) != 2:
                raise InvalidEvent(
                    f"'{key}[{i}]' must be an [event_id, {{hashes}}] pair in room version "
                    f"{rv.identifier}"
                )
            event_id, hashes = ref
            if not is_valid_event_id(rv, event_id):
                raise InvalidEvent(f"'{key}[{i}][0]' is not a valid event ID: {_short(event_id)}")
            if not isinstance(hashes, dict):
                raise InvalidEvent(f"'{key}[{i}][1]' must be an object of hashes")
            if "sha256" in hashes and not isinstance(hashes["sha256"], str):
                raise InvalidEvent(f"'{key}[{i}][1].sha256' must be a string")
        return
    for i, ref in enumerate(refs):
        if not is_valid_event_id(rv, ref):
            alphabet = "standard" if rv.event_format is EventFormat.V2 else "URL-safe"
            raise InvalidEvent(
                f"'{key}[{i}]' is not a valid event ID ('$' and 43 characters of {alphabet} "
                f"base64 in room version {rv.identifier}): {_short(ref)}"
            )
