"""Time as the rest of the server sees it, so tests can pin it."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time_ms(self) -> int: ...


class SystemClock:
    def time_ms(self) -> int:
        return int(time.time() * 1000)
