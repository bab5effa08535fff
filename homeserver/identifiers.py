"""Identifier grammars (appendices "Server Name", "User Identifiers", "Historical User IDs",
"3PID Types"): one definition for event validation, the auth rules, the config and 3PIDs."""

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


# An email address an SMTP server takes in RCPT TO (RFC 5321 Mailbox, without quoted local
# parts or address literals): no spaces, no header syntax, a host name as the domain.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_RE = re.compile(
    r"[^@\s\x00-\x1f\x7f<>()\[\],;:\"\\]{1,64}@" + rf"(?:{_LABEL}\.)*{_LABEL}\.?"
)
MAX_EMAIL_CHARS = 254


def canonical_email(address: str) -> str | None:
    """The 3PID address of an email address (appendices "3PID Types", E-Mail): the local part
    case-folded, the domain lower-cased. None when `address` is not a plain address."""
    if len(address) > MAX_EMAIL_CHARS or _EMAIL_RE.fullmatch(address) is None:
        return None
    local, _, domain = address.rpartition("@")
    canonical = f"{local.casefold()}@{domain.lower()}"
    # Case folding can lengthen the local part ("ß" becomes "ss").
    return canonical if len(canonical) <= MAX_EMAIL_CHARS else None
