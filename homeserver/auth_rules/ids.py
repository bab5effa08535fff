"""The identifier checks the authorization rules need: user ID validity (appendices "User
Identifiers", including "Historical User IDs") and the domain of a sender, room or event ID.
"""
from __future__ import annotations

import functools
import re

# appendices "Server Name": hostname [":" port], hostname = IPv4 / "[" IPv6 "]" / dns-name.
# An IPv4 literal only uses dns-name characters, so the dns-name branch covers it.
_SERVER_NAME = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(?::[0-9]{1,5})?")


def domain_of(identifier: str) -> str:
    """The server name after the first `:` of a sigil-prefixed identifier ("" if none)."""
    return identifier.partition(":")[2]


def is_valid_user_id(value: object) -> bool:
    """A user ID servers must accept: historical localparts allow anything but `:` and NUL
    (even empty); the server name must follow the grammar; at most 255 bytes in UTF-8."""
    return isinstance(value, str) and _is_valid_user_id(value)


# Power levels events list every privileged user and state resolution re-checks the same
# events many times, so remember the answers.
@functools.lru_cache(maxsize=65536)
def _is_valid_user_id(value: str) -> bool:
    if not value.startswith("@"):
        return False
    localpart, sep, server_name = value[1:].partition(":")
    if not sep or "\x00" in localpart or not _SERVER_NAME.fullmatch(server_name):
        return False
    try:
        return len(value.encode("utf-8")) <= 255
    except UnicodeEncodeError:  # a lone surrogate is not a legal code point
        return False
