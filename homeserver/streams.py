"""StreamToken: where a client is in every stream /sync serves (C-S API "Syncing": `since`,
`next_batch`, and the `prev_batch` / `from` tokens of /messages).

A token names one position per stream: `events` (the room event stream, i.e. the events
table's stream_ordering) and one slot per other source of sync data. Its wire form is opaque
to clients: "s" then the positions joined by "_" in FIELDS order, e.g. "s12_3_0_7_0_0_0".
A bare number (the legacy form: an events position only) is accepted as well.

Pagination (/messages) reads `events` only: from a `prev_batch` it returns events with
stream_ordering <= token.events, newest first; from a `next_batch`, the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import ClassVar

from homeserver.errors import Codes, MatrixError

# The slots of a token, in wire order. Appending a slot keeps old tokens valid (a missing
# trailing slot reads as 0); never reorder or remove one.
FIELDS = (
    "events",
    "typing",
    "receipts",
    "presence",
    "account_data",
    "to_device",
    "device_lists",
)

_WIRE = re.compile(r"s(\d{1,18}(?:_\d{1,18})*)\Z")
_LEGACY = re.compile(r"\d{1,18}\Z")


class InvalidToken(MatrixError):
    errcode = Codes.INVALID_PARAM


@dataclass(frozen=True, slots=True)
class StreamToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    presence: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    START: ClassVar[StreamToken]  # every position at the start (assigned below)

    @classmethod
    def parse(cls, text: str) -> StreamToken:
        """A token from its wire form; 400 M_INVALID_PARAM for anything else."""
        if _LEGACY.match(text):
            return cls(events=int(text))
        match = _WIRE.match(text)
        if match is None:
            raise InvalidToken(f"Invalid stream token {text[:64]!r}")
        parts = [int(p) for p in match.group(1).split("_")]
        if len(parts) > len(FIELDS):
            raise InvalidToken(f"Invalid stream token {text[:64]!r}")
        return cls(*parts)

    def __str__(self) -> str:
        return (
            f"s{self.events}_{self.typing}_{self.receipts}_{self.presence}"
            f"_{self.account_data}_{self.to_device}_{self.device_lists}"
        )

    def get(self, name: str) -> int:
        if name not in FIELDS:
            raise KeyError(name)
        value: int = getattr(self, name)
        return value

    def with_position(self, name: str, position: int) -> StreamToken:
        if name not in FIELDS:
            raise KeyError(name)
        return replace(self, **{name: position})


StreamToken.START = StreamToken()
# __str__ spells the slots out, for speed: it must follow FIELDS.
assert tuple(f.name for f in fields(StreamToken)) == FIELDS
