"""Room versions 1 to 12 as one table of feature flags (spec: rooms/v1.md ... rooms/v12.md).

Code asks a flag (`room_version.knock_join_rule`), never compares version strings.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from homeserver.errors import UnsupportedRoomVersion


class EventFormat(enum.Enum):
    # v1, v2: event_id is chosen by the origin server and carried in the PDU; prev_events and
    # auth_events are [event_id, {hashes}] pairs.
    V1 = 1
    # v3: event IDs are the reference hash, standard base64; prev/auth events are plain IDs.
    V2 = 2
    # v4 to v12: as V2 but URL-safe base64.
    V3 = 3


class StateResAlgorithm(enum.Enum):
    V1 = 1
    V2 = 2
    # v12: iterative auth checks start from an empty map; the conflicted state subgraph joins
    # the full conflicted set.
    V2_1 = 3


class RedactionRules(enum.Enum):
    V1 = 1  # rooms/fragments/v1-redactions.md
    V6 = 6  # m.room.aliases loses its special case
    V8 = 8  # join_rules keeps `allow`
    V9 = 9  # member keeps `join_authorised_via_users_server`
    V11 = 11  # rooms/fragments/v11-redactions.md


@dataclass(frozen=True, slots=True)
class RoomVersion:
    identifier: str
    event_format: EventFormat
    state_res: StateResAlgorithm
    redaction: RedactionRules
    # v5+: signing keys must be valid at the event's origin_server_ts.
    enforce_key_validity: bool
    # v1-v5: m.room.aliases has its own auth rule (rule 4 of the v1 rules).
    special_case_aliases_auth: bool
    # v6+: integers only within +-(2**53 - 1); no floats.
    strict_canonical_json: bool
    # v6+: `notifications` in power levels is subject to the power level change rules.
    limit_notifications_power_levels: bool
    knock_join_rule: bool
    restricted_join_rule: bool
    knock_restricted_join_rule: bool
    # v10+: power level values must be JSON integers, not numeric strings.
    integer_power_levels: bool
    # v11+: `creator` leaves m.room.create; `redacts` moves into content.
    implicit_room_creator: bool
    redacts_in_content: bool
    # v11+: the 255-byte limits on sender/type/state_key/event_id are hard; before, Synapse
    # let such events in (measured in codepoints), so they are stored rejected, not dropped.
    strict_event_byte_limits: bool
    # v12: room ID is derived from the create event; creators have infinite power and the
    # create event is never listed in auth_events.
    room_id_from_create_event: bool
    privileged_creators: bool

    @property
    def event_id_in_pdu(self) -> bool:
        return self.event_format is EventFormat.V1


def _v(
    identifier: str,
    event_format: EventFormat,
    state_res: StateResAlgorithm,
    redaction: RedactionRules,
    *,
    enforce_key_validity: bool = True,
    special_case_aliases_auth: bool = False,
    strict_canonical_json: bool = True,
    limit_notifications_power_levels: bool = True,
    knock_join_rule: bool = True,
    restricted_join_rule: bool = True,
    knock_restricted_join_rule: bool = True,
    integer_power_levels: bool = True,
    implicit_room_creator: bool = True,
    redacts_in_content: bool = True,
    strict_event_byte_limits: bool = True,
    room_id_from_create_event: bool = False,
    privileged_creators: bool = False,
) -> RoomVersion:
    return RoomVersion(
        identifier=identifier,
        event_format=event_format,
        state_res=state_res,
        redaction=redaction,
        enforce_key_validity=enforce_key_validity,
        special_case_aliases_auth=special_case_aliases_auth,
        strict_canonical_json=strict_canonical_json,
        limit_notifications_power_levels=limit_notifications_power_levels,
        knock_join_rule=knock_join_rule,
        restricted_join_rule=restricted_join_rule,
        knock_restricted_join_rule=knock_restricted_join_rule,
        integer_power_levels=integer_power_levels,
        implicit_room_creator=implicit_room_creator,
        redacts_in_content=redacts_in_content,
        strict_event_byte_limits=strict_event_byte_limits,
        room_id_from_create_event=room_id_from_create_event,
        privileged_creators=privileged_creators,
    )


_PRE_V6 = dict(
    special_case_aliases_auth=True,
    strict_canonical_json=False,
    limit_notifications_power_levels=False,
)
_PRE_V7 = dict(knock_join_rule=False)
_PRE_V8 = dict(restricted_join_rule=False)
_PRE_V10 = dict(knock_restricted_join_rule=False, integer_power_levels=False)
_PRE_V11 = dict(
    implicit_room_creator=False, redacts_in_content=False, strict_event_byte_limits=False
)

_F, _S, _R = EventFormat, StateResAlgorithm, RedactionRules

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v
    for v in (
        _v("1", _F.V1, _S.V1, _R.V1, enforce_key_validity=False,
           **_PRE_V6, **_PRE_V7, **_PRE_V8, **_PRE_V10, **_PRE_V11),
        _v("2", _F.V1, _S.V2, _R.V1, enforce_key_validity=False,
           **_PRE_V6, **_PRE_V7, **_PRE_V8, **_PRE_V10, **_PRE_V11),
        _v("3", _F.V2, _S.V2, _R.V1, enforce_key_validity=False,
           **_PRE_V6, **_PRE_V7, **_PRE_V8, **_PRE_V10, **_PRE_V11),
        _v("4", _F.V3, _S.V2, _R.V1, enforce_key_validity=False,
           **_PRE_V6, **_PRE_V7, **_PRE_V8, **_PRE_V10, **_PRE_V11),
        _v("5", _F.V3, _S.V2, _R.V1, **_PRE_V6, **_PRE_V7, **_PRE_V8, **_PRE_V10, **_PRE_V11),
        _v("6", _F.V3, _S.V2, _R.V6, **_PRE_V7, **_PRE_V8, **_PRE_V10, **_PRE_V11),
        _v("7", _F.V3, _S.V2, _R.V6, **_PRE_V8, **_PRE_V10, **_PRE_V11),
        _v("8", _F.V3, _S.V2, _R.V8, **_PRE_V10, **_PRE_V11),
        _v("9", _F.V3, _S.V2, _R.V9, **_PRE_V10, **_PRE_V11),
        _v("10", _F.V3, _S.V2, _R.V9, **_PRE_V11),
        _v("11", _F.V3, _S.V2, _R.V11),
        _v("12", _F.V3, _S.V2_1, _R.V11, room_id_from_create_event=True, privileged_creators=True),
    )
}

# The spec recommends v12 for new rooms (client-server-api: "Room versions").
DEFAULT_ROOM_VERSION = KNOWN_ROOM_VERSIONS["12"]


def get_room_version(identifier: str) -> RoomVersion:
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except (KeyError, TypeError):
        raise UnsupportedRoomVersion(f"Unsupported room version {identifier!r}") from None
