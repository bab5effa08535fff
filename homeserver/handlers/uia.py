"""User-interactive authentication (C-S API "User-interactive authentication API"): sessions
that remember completed stages between requests, for registration, password change, device
deletion and account deactivation."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import Codes, InteractiveAuthRequired, MatrixError
from homeserver.storage import Storage

DUMMY = "m.login.dummy"
PASSWORD = "m.login.password"
REGISTRATION_TOKEN = "m.login.registration_token"

# A stage checker: given the client's `auth` dict, raise MatrixError unless it passes. What it
# returns is kept with the session and handed to the operation once the flow is complete.
StageChecker = Callable[[Mapping[str, Any]], Awaitable[object]]

SESSION_LIFETIME_MS = 30 * 60 * 1000
MAX_SESSIONS = 10_000


@dataclass
class _Session:
    created_ts: int
    completed: list[str] = field(default_factory=list)
    # What each completed stage's checker returned.
    results: dict[str, object] = field(default_factory=dict)
    # What the session was started for; a session cannot be reused for another operation.
    purpose: str = ""


class InteractiveAuth:
    """In-process sessions: a client completes a flow against one process. (Several worker
    processes will keep them in the database.)"""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._sessions: dict[str, _Session] = {}

    async def check(
        self,
        auth: Mapping[str, Any] | None,
        flows: list[list[str]],
        checkers: Mapping[str, StageChecker],
        purpose: str,
    ) -> Mapping[str, object]:
        """Return when some flow is complete, with what each completed stage's checker
        returned; otherwise raise InteractiveAuthRequired."""
        self._expire()
        session_id = auth.get("session") if auth else None
        session = self._sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None or session.purpose != purpose:
            session_id, session = self._new_session(purpose)
        assert isinstance(session_id, str)
        failure: MatrixError | None = None
        stage = auth.get("type") if auth else None
        if isinstance(stage, str):
            checker = checkers.get(stage)
            if checker is None or not any(stage in f for f in flows):
                failure = MatrixError(f"Unknown auth stage {stage}", Codes.UNRECOGNIZED)
            else:
                try:
                    assert auth is not None
                    session.results[stage] = await checker(auth)
                    if stage not in session.completed:
                        session.completed.append(stage)
                except MatrixError as e:
                    failure = e
        if any(all(s in session.completed for s in flow) for flow in flows):
            del self._sessions[session_id]
            return session.results
        raise InteractiveAuthRequired(session_id, flows, session.completed, failure=failure)

    def restart(
        self, flows: list[list[str]], purpose: str, failure: MatrixError
    ) -> InteractiveAuthRequired:
        """For a completed flow whose result no longer holds when the operation runs (a
        registration token used up meanwhile): the 401 that starts the client on a new
        session, saying why."""
        self._expire()
        session_id, _ = self._new_session(purpose)
        return InteractiveAuthRequired(session_id, flows, [], failure=failure)

    def _new_session(self, purpose: str) -> tuple[str, _Session]:
        session_id = secrets.token_urlsafe(16)
        session = self._sessions[session_id] = _Session(self.clock.time_ms(), purpose=purpose)
        return session_id, session

    def _expire(self) -> None:
        # Sessions sit in creation order: drop from the front while they are too old, and the
        # oldest beyond MAX_SESSIONS, so unauthenticated requests cannot grow this without end.
        cutoff = self.clock.time_ms() - SESSION_LIFETIME_MS
        while self._sessions:
            oldest_id = next(iter(self._sessions))
            oldest = self._sessions[oldest_id]
            if oldest.created_ts >= cutoff and len(self._sessions) <= MAX_SESSIONS:
                break
            del self._sessions[oldest_id]


async def dummy_stage(_auth: Mapping[str, Any]) -> None:
    return None


class RegistrationTokens:
    """The m.login.registration_token stage ("Token-authenticated registration"): a token from
    the operator. The stage only checks it; a use counts when the registration completes
    (`AuthHandler.register`), so an attempt that never finishes does not use the token up."""

    def __init__(self, storage: Storage, clock: Clock) -> None:
        self.storage = storage
        self.clock = clock

    async def is_valid(self, token: str) -> bool:
        return await self.storage.accounts.registration_token_valid(token, self.clock.time_ms())

    async def check(self, auth: Mapping[str, Any]) -> str:
        """Returns the token, for the registration to count its use."""
        token = auth.get("token")
        if not isinstance(token, str) or not await self.is_valid(token):
            raise MatrixError("Invalid registration token", Codes.UNAUTHORIZED, status=401)
        return token
