"""Token-bucket rate limits keyed by user, account or IP (C-S API "Rate limiting": 429
M_LIMIT_EXCEEDED with retry_after_ms). In memory: each process limits what it serves."""

from __future__ import annotations

from dataclasses import dataclass

from homeserver.clock import Clock
from homeserver.config import LimitsConfig, RateLimit
from homeserver.errors import Codes, MatrixError

# Buckets untouched this long are full again and can be forgotten.
_IDLE_MS = 10 * 60 * 1000


@dataclass
class _Bucket:
    tokens: float
    updated_ms: int


class RateLimiter:
    def __init__(self, limit: RateLimit, clock: Clock) -> None:
        self.limit = limit
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def check(self, key: str) -> None:
        """Take one token for `key`, or raise 429 with how long until one is free."""
        self._take(key, consume=True)

    def check_available(self, key: str) -> None:
        """Raise 429 if `key` has no token left, without taking one (for limits that count
        only failures, such as wrong passwords)."""
        self._take(key, consume=False)

    def _take(self, key: str, *, consume: bool) -> None:
        if self.limit.per_second <= 0:
            return
        now = self.clock.time_ms()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) > 100_000:
                self._forget_idle(now)
            bucket = self._buckets[key] = _Bucket(float(self.limit.burst), now)
        refill = (now - bucket.updated_ms) / 1000 * self.limit.per_second
        bucket.tokens = min(float(self.limit.burst), bucket.tokens + refill)
        bucket.updated_ms = now
        if bucket.tokens >= 1:
            if consume:
                bucket.tokens -= 1
            return
        wait_ms = int((1 - bucket.tokens) / self.limit.per_second * 1000) + 1
        raise MatrixError("Too many requests", Codes.LIMIT_EXCEEDED, retry_after_ms=wait_ms)

    def _forget_idle(self, now: int) -> None:
        for key in [k for k, b in self._buckets.items() if now - b.updated_ms > _IDLE_MS]:
            del self._buckets[key]


@dataclass
class RateLimits:
    messages: RateLimiter
    login_ip: RateLimiter
    login_account: RateLimiter
    registration_ip: RateLimiter
    media_uploads: RateLimiter
    threepid_validation: RateLimiter

    @classmethod
    def from_config(cls, limits: LimitsConfig, clock: Clock) -> RateLimits:
        return cls(
            RateLimiter(limits.messages, clock),
            RateLimiter(limits.login_ip, clock),
            RateLimiter(limits.login_account, clock),
            RateLimiter(limits.registration_ip, clock),
            RateLimiter(limits.media_uploads, clock),
            RateLimiter(limits.threepid_validation, clock),
        )
