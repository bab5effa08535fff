"""The m.room.member authorization rule (rule 5 of room versions 1-5 and 12, rule 4 of 6-11),
including the third-party invite signature check.

Rule x.2 of v8+ (an event with `join_authorised_via_users_server` must be signed by that user's
server) needs server keys, so the caller checks it with the other signatures (S2S "Checks
performed on receipt of a PDU", step 2).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json
from unpaddedbase64 import decode_base64

from homeserver.auth_rules.power_levels import PowerLevels, room_creator
from homeserver.auth_rules.selection import JOIN_RULES_KEY
from homeserver.errors import AuthError
from homeserver.events.event import MEMBER, THIRD_PARTY_INVITE, Event, StateKey

JOIN, INVITE, LEAVE, BAN, KNOCK = "join", "invite", "leave", "ban", "knock"
_JOINED_OR_INVITED = frozenset({JOIN, INVITE})


def membership_of(auth_state: Mapping[StateKey, Event], user_id: str) -> str | None:
    """The user's current membership, None when they have no (valid) member event."""
    member = auth_state.get((MEMBER, user_id))
    return member.membership if member is not None else None


def _join_rule(auth_state: Mapping[StateKey, Event]) -> Any:
    # No m.room.join_rules event, or none with a `join_rule`, reads as "invite", as Synapse
    # and Ruma read it: only members and invitees may join a room that has not chosen a rule.
    join_rules = auth_state.get(JOIN_RULES_KEY)
    return join_rules.content.get("join_rule", INVITE) if join_rules is not None else INVITE


def check_membership(
    event: Event, auth_state: Mapping[StateKey, Event], levels: PowerLevels, rule: int
) -> None:
    """Allow or reject an m.room.member event; `rule` is the member rule's number in the room
    version, used in messages."""
    rv = event.room_version
    target = event.state_key
    if target is None or "membership" not in event.content:
        raise AuthError(f"{rule}.1: no state_key or no membership")
    membership = event.membership
    # v8 inserts the join_authorised_via_users_server signature rule as x.2.
    join_sub = 3 if rv.restricted_join_rule else 2
    if membership == JOIN:
        _check_join(event, target, auth_state, levels, f"{rule}.{join_sub}")
    elif membership == INVITE:
        _check_invite(event, target, auth_state, levels, f"{rule}.{join_sub + 1}")
    elif membership == LEAVE:
        _check_leave(event, target, auth_state, levels, f"{rule}.{join_sub + 2}")
    elif membership == BAN:
        _check_ban(event, target, auth_state, levels, f"{rule}.{join_sub + 3}")
    elif membership == KNOCK and rv.knock_join_rule:
        _check_knock(event, target, auth_state, f"{rule}.{join_sub + 4}")
    else:
        unknown_sub = join_sub + (5 if rv.knock_join_rule else 4)
        raise AuthError(f"{rule}.{unknown_sub}: unknown membership {membership!r}")


def _check_join(
    event: Event,
    target: str,
    auth_state: Mapping[StateKey, Event],
    levels: PowerLevels,
    rule: str,
) -> None:
    rv = event.room_version
    create = levels.create
    # x.1: the creator's own join straight after the create event (v11+: the create's sender).
    prev_events = event.prev_event_ids
    if (
        len(prev_events) == 1
        and prev_events[0] == create.event_id
        and target == room_creator(create)
    ):
        return
    sender = event.sender
    if sender != target:
        raise AuthError(f"{rule}.2: sender does not match state_key")
    current = membership_of(auth_state, sender)
    if current == BAN:
        raise AuthError(f"{rule}.3: sender is banned")
    join_rule = _join_rule(auth_state)
    if join_rule == INVITE or (rv.knock_join_rule and join_rule == KNOCK):
        if current in _JOINED_OR_INVITED:
            return
        raise AuthError(f"{rule}.4: join rule is {join_rule!r} and sender is not invited")
    # v8 adds `restricted`, v10 `knock_restricted`: non-members need a joined authoriser who
    # may invite.
    if (rv.restricted_join_rule and join_rule == "restricted") or (
        rv.knock_restricted_join_rule and join_rule == "knock_restricted"
    ):
        if current in _JOINED_OR_INVITED:
            return
        authoriser = event.content.get("join_authorised_via_users_server")
        if (
            not isinstance(authoriser, str)
            or membership_of(auth_state, authoriser) != JOIN
            or levels.user_level(authoriser) < levels.named_level("invite")
        ):
            raise AuthError(
                f"{rule}.5.2: join_authorised_via_users_server is not a joined user who may invite"
            )
        return
    public_sub = 6 if rv.restricted_join_rule else 5
    if join_rule == "public":
        return
    raise AuthError(f"{rule}.{public_sub + 1}: join rule {join_rule!r} does not allow joining")


def _check_invite(
    event: Event,
    target: str,
    auth_state: Mapping[StateKey, Event],
    levels: PowerLevels,
    rule: str,
) -> None:
    target_membership = membership_of(auth_state, target)
    if "third_party_invite" in event.content:
        if target_membership == BAN:
            raise AuthError(f"{rule}.1.1: target user is banned")
        _check_third_party_invite(event, target, auth_state, f"{rule}.1")
        return
    if membership_of(auth_state, event.sender) != JOIN:
        raise AuthError(f"{rule}.2: sender is not joined")
    if target_membership in (JOIN, BAN):
        raise AuthError(f"{rule}.3: target user is {target_membership}")
    if levels.user_level(event.sender) < levels.named_level("invite"):
        raise AuthError(f"{rule}.5: sender's power level is below the invite level")


def _check_third_party_invite(
    event: Event, target: str, auth_state: Mapping[StateKey, Event], rule: str
) -> None:
    invite = event.content["third_party_invite"]
    signed = invite.get("signed") if isinstance(invite, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError(f"{rule}.2: third_party_invite has no signed object")
    if "mxid" not in signed or "token" not in signed:
        raise AuthError(f"{rule}.3: signed has no mxid or no token")
    if signed["mxid"] != target:
        raise AuthError(f"{rule}.4: signed mxid does not match state_key")
    token = signed["token"]
    tpi = auth_state.get((THIRD_PARTY_INVITE, token)) if isinstance(token, str) else None
    if tpi is None:
        raise AuthError(f"{rule}.5: no m.room.third_party_invite for the token")
    if tpi.sender != event.sender:
        raise AuthError(f"{rule}.6: sender did not send the m.room.third_party_invite")
    if not _signed_by_any(signed, _public_keys(tpi.content)):
        raise AuthError(f"{rule}.8: no signature in signed matches the invite's public keys")


def _public_keys(content: Mapping[str, Any]) -> list[str]:
    """`public_key` and each `public_keys[].public_key` of an m.room.third_party_invite."""
    keys = []
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    entries = content.get("public_keys")
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, Mapping) and isinstance(entry.get("public_key"), str):
                keys.append(entry["public_key"])
    return keys


def _signed_by_any(signed: Mapping[str, Any], public_keys: list[str]) -> bool:
    """Rule x.1.7: any ed25519 signature in `signed` that verifies with any public key (unpadded
    base64, standard or URL-safe). Whether the key has since been revoked is not an auth rule."""
    signatures = signed.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    for public_key in public_keys:
        try:
            key_bytes = decode_base64(public_key)
        except ValueError:  # binascii.Error, or non-ASCII text
            continue
        for signer, by_key_id in signatures.items():
            if not isinstance(by_key_id, Mapping):
                continue
            for key_id in by_key_id:
                if not isinstance(key_id, str) or not key_id.startswith("ed25519:"):
                    continue
                try:
                    verify_key = decode_verify_key_bytes(key_id, key_bytes)
                    # signedjson wants a dict but only reads the mapping.
                    verify_signed_json(signed, signer, verify_key)  # type: ignore[arg-type]
                except (SignatureVerifyException, ValueError):
                    continue
                return True
    return False


def _check_leave(
    event: Event,
    target: str,
    auth_state: Mapping[StateKey, Event],
    levels: PowerLevels,
    rule: str,
) -> None:
    sender = event.sender
    sender_membership = membership_of(auth_state, sender)
    if sender == target:
        # v7 lets a user withdraw a knock too.
        if sender_membership in _JOINED_OR_INVITED or (
            event.room_version.knock_join_rule and sender_membership == KNOCK
        ):
            return
        raise AuthError(f"{rule}.1: sender cannot leave from membership {sender_membership!r}")
    if sender_membership != JOIN:
        raise AuthError(f"{rule}.2: sender is not joined")
    sender_level = levels.user_level(sender)
    # Unbanning needs the ban level as well as the kick level below.
    if membership_of(auth_state, target) == BAN and sender_level < levels.named_level("ban"):
        raise AuthError(f"{rule}.3: sender's power level is below the ban level")
    if sender_level >= levels.named_level("kick") and levels.user_level(target) < sender_level:
        return
    raise AuthError(f"{rule}.5: sender may not kick the target user")


def _check_ban(
    event: Event,
    target: str,
    auth_state: Mapping[StateKey, Event],
    levels: PowerLevels,
    rule: str,
) -> None:
    if membership_of(auth_state, event.sender) != JOIN:
        raise AuthError(f"{rule}.1: sender is not joined")
    sender_level = levels.user_level(event.sender)
    if sender_level >= levels.named_level("ban") and levels.user_level(target) < sender_level:
        return
    raise AuthError(f"{rule}.3: sender may not ban the target user")


def _check_knock(
    event: Event, target: str, auth_state: Mapping[StateKey, Event], rule: str
) -> None:
    rv = event.room_version
    join_rule = _join_rule(auth_state)
    # v7: only `knock` rooms; v10 adds `knock_restricted`.
    knock_restricted = rv.knock_restricted_join_rule and join_rule == "knock_restricted"
    if join_rule != KNOCK and not knock_restricted:
        raise AuthError(f"{rule}.1: join rule {join_rule!r} does not allow knocking")
    if event.sender != target:
        raise AuthError(f"{rule}.2: sender does not match state_key")
    current = membership_of(auth_state, event.sender)
    if current in (BAN, INVITE, JOIN):
        raise AuthError(f"{rule}.4: sender's membership is {current}")
