"""Matrix errors: errcodes, the exception tree, and the errcode -> HTTP status mapping.

Raise these anywhere; each transport renders them in exactly one middleware.
"""

from __future__ import annotations

from typing import Any


class Codes:
    FORBIDDEN = "M_FORBIDDEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    UNAUTHORIZED = "M_UNAUTHORIZED"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    INVALID_ROOM_STATE = "M_INVALID_ROOM_STATE"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    UNABLE_TO_AUTHORISE_JOIN = "M_UNABLE_TO_AUTHORISE_JOIN"
    UNABLE_TO_GRANT_JOIN = "M_UNABLE_TO_GRANT_JOIN"
    BAD_STATE = "M_BAD_STATE"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    EXCLUSIVE = "M_EXCLUSIVE"
    RESOURCE_LIMIT_EXCEEDED = "M_RESOURCE_LIMIT_EXCEEDED"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    USER_LOCKED = "M_USER_LOCKED"
    INVALID_SIGNATURE = "M_INVALID_SIGNATURE"
    WRONG_ROOM_KEYS_VERSION = "M_WRONG_ROOM_KEYS_VERSION"
    THREEPID_IN_USE = "M_THREEPID_IN_USE"
    THREEPID_NOT_FOUND = "M_THREEPID_NOT_FOUND"
    THREEPID_AUTH_FAILED = "M_THREEPID_AUTH_FAILED"
    THREEPID_MEDIUM_NOT_SUPPORTED = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    SERVER_NOT_TRUSTED = "M_SERVER_NOT_TRUSTED"
    # The Identity Service API's, which a homeserver's submit_url shares (identity-service-api
    # "Standard error responses", POST /validate/email/submitToken).
    NO_VALID_SESSION = "M_NO_VALID_SESSION"
    SESSION_EXPIRED = "M_SESSION_EXPIRED"
    TOKEN_INCORRECT = "M_TOKEN_INCORRECT"


# The status a client sees for an errcode unless the raiser chose one explicitly.
_STATUS_BY_CODE: dict[str, int] = {
    Codes.FORBIDDEN: 403,
    Codes.UNKNOWN_TOKEN: 401,
    Codes.MISSING_TOKEN: 401,
    Codes.UNAUTHORIZED: 401,
    Codes.USER_LOCKED: 401,
    Codes.NOT_FOUND: 404,
    Codes.UNRECOGNIZED: 404,
    Codes.LIMIT_EXCEEDED: 429,
    Codes.TOO_LARGE: 413,
    Codes.UNKNOWN: 500,
    Codes.GUEST_ACCESS_FORBIDDEN: 403,
    Codes.USER_DEACTIVATED: 403,
    Codes.RESOURCE_LIMIT_EXCEEDED: 403,
}


def status_for(errcode: str) -> int:
    return _STATUS_BY_CODE.get(errcode, 400)


class MatrixError(Exception):
    """An error with a Matrix errcode; `status` defaults to the errcode's usual HTTP status."""

    errcode: str = Codes.UNKNOWN

    def __init__(
        self,
        message: str,
        errcode: str | None = None,
        status: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if errcode is not None:
            self.errcode = errcode
        self.status = status if status is not None else status_for(self.errcode)
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        return {"errcode": self.errcode, "error": self.message, **self.extra}


class Forbidden(MatrixError):
    errcode = Codes.FORBIDDEN


class NotFound(MatrixError):
    errcode = Codes.NOT_FOUND


class BadJson(MatrixError):
    errcode = Codes.BAD_JSON


class InvalidParam(MatrixError):
    errcode = Codes.INVALID_PARAM


class TooLarge(MatrixError):
    errcode = Codes.TOO_LARGE


class UnsupportedRoomVersion(MatrixError):
    errcode = Codes.UNSUPPORTED_ROOM_VERSION


class AuthError(Forbidden):
    """An event failed the authorization rules; `message` names the rule."""


class InvalidEvent(BadJson):
    """An event is malformed: wrong types, over the size limits, not canonical JSON."""


class InteractiveAuthRequired(MatrixError):
    """401 asking the client to complete user-interactive authentication (C-S API "User-
    interactive authentication API"). The body carries the flows, params and session, plus the
    stages completed so far; errcode/error only when an attempted stage failed."""

    def __init__(
        self,
        session: str,
        flows: list[list[str]],
        completed: list[str],
        params: dict[str, Any] | None = None,
        failure: MatrixError | None = None,
    ) -> None:
        super().__init__(
            failure.message if failure else "Additional authentication is required",
            failure.errcode if failure else Codes.UNAUTHORIZED,
            status=401,
        )
        self.body: dict[str, Any] = {
            "session": session,
            "flows": [{"stages": stages} for stages in flows],
            "params": params or {},
        }
        if completed:
            self.body["completed"] = completed
        if failure is not None:
            self.body["errcode"] = failure.errcode
            self.body["error"] = failure.message

    def to_json(self) -> dict[str, Any]:
        return self.body
