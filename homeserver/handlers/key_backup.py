"""KeyBackupHandler: server-side key backups (C-S API "Server-side key backups"), the
/room_keys/version and /room_keys/keys endpoints.

Versions are opaque strings to clients; ours are the decimal form of a per-user counter.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.errors import Codes, MatrixError, NotFound
from homeserver.storage.stores.key_backup import (
    BackedUpKey,
    BackupVersion,
    KeyBackupStore,
    NotCurrent,
    Tally,
)

JsonDict = dict[str, Any]
# The largest integer canonical JSON allows (appendices, "Canonical JSON").
MAX_JSON_INT = 2**53 - 1
# Never a version: they are numbered from 1. Stands for any string that is not one of ours.
NO_VERSION = 0


class KeyBackupHandler:
    def __init__(self, store: KeyBackupStore) -> None:
        self.store = store

    async def create_version(self, user_id: str, body: Mapping[str, Any]) -> JsonDict:
        """POST /room_keys/version."""
        algorithm = _required(body, "algorithm", str)
        auth_data = _required(body, "auth_data", dict)
        version = await self.store.create_version(user_id, algorithm, auth_data)
        return {"version": str(version)}

    async def get_version(self, user_id: str, version: str | None) -> JsonDict:
        """GET /room_keys/version (the latest: `version` None) and /room_keys/version/{v}."""
        if version is None:
            info = await self.store.get_version(user_id, None)
            if info is None:
                raise NotFound("No current backup version")
        else:
            info = await self._existing(user_id, version)
        return {
            "algorithm": info.algorithm,
            "auth_data": info.auth_data,
            "count": info.count,
            "etag": str(info.etag),
            "version": str(info.version),
        }

    async def update_version(self, user_id: str, version: str, body: Mapping[str, Any]) -> None:
        """PUT /room_keys/version/{version}: only auth_data changes."""
        algorithm = _required(body, "algorithm", str)
        auth_data = _required(body, "auth_data", dict)
        if "version" in body and body["version"] != version:
            raise MatrixError(
                "The version in the body does not match the version in the path",
                Codes.INVALID_PARAM,
            )
        info = await self._existing(user_id, version)
        if algorithm != info.algorithm:
            raise MatrixError("Algorithm does not match", Codes.INVALID_PARAM)
        if not await self.store.update_auth_data(user_id, info.version, auth_data):
            raise NotFound("Unknown backup version")  # deleted meanwhile

    async def delete_version(self, user_id: str, version: str) -> None:
        """DELETE /room_keys/version/{version}: the version and its keys. Deleting a version
        that was already deleted succeeds (the spec's 200 answer)."""
        if not await self.store.delete_version(user_id, _version_number(version)):
            raise NotFound("Unknown backup version")

    async def put_keys(
        self,
        user_id: str,
        version: str,
        body: Mapping[str, Any],
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> JsonDict:
        """PUT /room_keys/keys[/{roomId}[/{sessionId}]]: `body` is all rooms' keys, one room's,
        or one session's key. Each key is stored unless the backup has a better one for its
        session."""
        if room_id is None:
            rooms = _required(body, "rooms", dict)
        elif session_id is None:
            rooms = {room_id: body}
        else:
            rooms = {room_id: {"sessions": {session_id: body}}}
        keys = _parse_rooms(rooms)
        result = await self.store.put_keys(user_id, _version_number(version), keys)
        if isinstance(result, NotCurrent):
            if result.current is None:
                raise NotFound("Unknown backup version")
            raise MatrixError(
                "Wrong backup version.",
                Codes.WRONG_ROOM_KEYS_VERSION,
                status=403,
                current_version=str(result.current),
            )
        return _tally_json(result)

    async def get_keys(
        self,
        user_id: str,
        version: str,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> JsonDict:
        """GET /room_keys/keys[/{roomId}[/{sessionId}]]."""
        keys = await self.store.get_keys(user_id, _version_number(version), room_id, session_id)
        if keys is None:
            raise NotFound("Unknown backup version")
        if session_id is not None:
            if not keys:
                raise NotFound("Key not found.")
            return _key_json(keys[0])
        rooms: dict[str, JsonDict] = {}
        for key in keys:
            rooms.setdefault(key.room_id, {})[key.session_id] = _key_json(key)
        if room_id is not None:
            return {"sessions": rooms.get(room_id, {})}
        return {"rooms": {room: {"sessions": sessions} for room, sessions in rooms.items()}}

    async def delete_keys(
        self,
        user_id: str,
        version: str,
        room_id: str | None = None,
        session_id: str | None = None,
    ) -> JsonDict:
        """DELETE /room_keys/keys[/{roomId}[/{sessionId}]]."""
        result = await self.store.delete_keys(
            user_id, _version_number(version), room_id, session_id
        )
        if result is None:
            raise NotFound("Unknown backup version")
        return _tally_json(result)

    async def _existing(self, user_id: str, version: str) -> BackupVersion:
        info = await self.store.get_version(user_id, _version_number(version))
        if info is None:
            raise NotFound("Unknown backup version")
        return info


def _version_number(version: str) -> int:
    """The number of a version string we issued, else NO_VERSION (which matches none)."""
    # Only the exact decimal form we hand out: not "01", " 1", "+1" or non-ASCII digits.
    if version.isascii() and version.isdigit() and len(version) <= 18:
        number = int(version)
        if str(number) == version:
            return number
    return NO_VERSION


def _required(body: Mapping[str, Any], key: str, kind: type) -> Any:
    if key not in body:
        raise MatrixError(f"Missing parameter: {key}", Codes.MISSING_PARAM)
    value = body[key]
    if not isinstance(value, kind):
        raise MatrixError(f"Parameter {key} has the wrong type", Codes.INVALID_PARAM)
    return value


def _parse_rooms(rooms: Mapping[str, Any]) -> list[BackedUpKey]:
    """The keys of a `rooms` map (room ID -> {"sessions": session ID -> KeyBackupData})."""
    keys: list[BackedUpKey] = []
    for room_id, room in rooms.items():
        if not isinstance(room, dict):
            raise MatrixError(f"The keys of room {room_id} must be an object", Codes.BAD_JSON)
        sessions = _required(room, "sessions", dict)
        for session_id, data in sessions.items():
            if not isinstance(data, dict):
                raise MatrixError(
                    f"The key of session {session_id} must be an object", Codes.BAD_JSON
                )
            keys.append(
                BackedUpKey(
                    room_id=room_id,
                    session_id=session_id,
                    first_message_index=_count(data, "first_message_index"),
                    forwarded_count=_count(data, "forwarded_count"),
                    is_verified=_required(data, "is_verified", bool),
                    session_data=_required(data, "session_data", dict),
                )
            )
    return keys


def _count(data: Mapping[str, Any], key: str) -> int:
    value = _required(data, key, int)
    # bool is an int in Python, not in JSON.
    if isinstance(value, bool) or not 0 <= value <= MAX_JSON_INT:
        raise MatrixError(f"{key} must be a non-negative integer", Codes.INVALID_PARAM)
    return int(value)


def _key_json(key: BackedUpKey) -> JsonDict:
    return {
        "first_message_index": key.first_message_index,
        "forwarded_count": key.forwarded_count,
        "is_verified": key.is_verified,
        "session_data": key.session_data,
    }


def _tally_json(tally: Tally) -> JsonDict:
    return {"etag": str(tally.etag), "count": tally.count}
