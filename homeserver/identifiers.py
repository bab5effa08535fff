"""Identifier grammars (appendices "Server Name", "User Identifiers", "Historical User IDs"):
one definition for event validation, the auth rules and the config."""

from __future__ import annotations

import functools
import re

# hostname [":" port], hostname = IPv4 / "[" IPv6 "]" / dns-name (1*255 of DIGIT / ALPHA / "-"
# / "."); an IPv4 literal only uses dns-name characters, so two alternatives cover all three.
SERVER_NAME_PATTERN = r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(?::[0-9]{1,5})?"
_SERVER_NAME_RE = re.compile(SERVER_NAME_PATTERN + r"\Z")
# Servers must accept any localpart but `:` and NUL, even an empty one (historical user IDs).
_USER_ID_RE = re.compile(r"@[^:\x00]*:" + SERVER_NAME_PATTERN + r"\Z")

MAX_ID_BYTES = 255


def is_valid_server_name(value: object) -> bool:
    return isinstance(value, str) and _SERVER_NAME_RE.match(value) is not None


def is_valid_user_id(value: object) -> bool:
    """A user ID as servers must accept it in events: the grammar above, at most 255 bytes."""
    return isinstance(value, str) and _is_valid_user_id(value)


# Power levels events list every privileged user and state resolution re-checks the same
# events many times, so the answers are remembered.
@functools.lru_cache(maxsize=65536)
def _is_valid_user_id(value: str) -> bool:
    if _USER_ID_RE.match(value) is None:
        return False
    try:
        return len(value.encode("utf-8")) <= MAX_ID_BYTES
    except UnicodeEncodeError:  # a lone surrogate is not a legal code point
        return False


def domain_of(identifier: str) -> str:
    """The server name after the first `:` of a sigil-prefixed identifier ("" if none)."""
    return identifier.partition(":")[2]
