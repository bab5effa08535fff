"""DehydratedDeviceHandler: dehydrated devices (MSC3814), so that a user with no client
running still has a device that others encrypt room keys for.

A client uploads the device, its keys and its encrypted private state (`device_data`, opaque
here) in one request; the device then collects to-device messages like any other. A later
client of the user fetches the device data, decrypts it, and reads those messages through
`events`, which never deletes them (an interrupted rehydration can start again).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.clock import Clock
from homeserver.errors import Codes, Forbidden, MatrixError, NotFound
from homeserver.handlers.device_lists import DeviceLists
from homeserver.handlers.devices import MAX_DEVICE_NAME_LEN
from homeserver.handlers.e2e_keys import check_device_keys, optional_object, parse_keys
from homeserver.handlers.to_device import MAX_PER_SYNC, client_format
from homeserver.storage import Storage

JsonDict = dict[str, Any]
# Device IDs are free text to clients; MSC3814 makes this one the device's curve25519 key.
MAX_DEVICE_ID_LEN = 255


class DehydratedDeviceHandler:
    def __init__(self, storage: Storage, device_lists: DeviceLists, clock: Clock) -> None:
        self.storage = storage
        self.device_lists = device_lists
        self.clock = clock

    async def put(self, user_id: str, body: Mapping[str, Any]) -> JsonDict:
        """PUT /dehydrated_device: replaces the user's dehydrated device, if any."""
        device_id = body.get("device_id")
        if not isinstance(device_id, str) or not 0 < len(device_id) <= MAX_DEVICE_ID_LEN:
            raise MatrixError("device_id must be a non-empty string", Codes.INVALID_PARAM)
        device_data = body.get("device_data")
        if not isinstance(device_data, dict) or not isinstance(device_data.get("algorithm"), str):
            raise MatrixError("device_data must be an object with an algorithm", Codes.BAD_JSON)
        name = body.get("initial_device_display_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_DEVICE_NAME_LEN):
            raise MatrixError("Invalid initial_device_display_name", Codes.INVALID_PARAM)
        device_keys = body.get("device_keys")
        if not isinstance(device_keys, dict):
            # A dehydrated device nobody can encrypt for would be of no use.
            raise MatrixError("device_keys are required", Codes.MISSING_PARAM)
        check_device_keys(device_keys, user_id, device_id)
        one_time_keys = parse_keys(optional_object(body, "one_time_keys"), "one_time_keys")
        fallback_keys = parse_keys(optional_object(body, "fallback_keys"), "fallback_keys")
        keys = self.storage.e2e_keys
        async with self.device_lists.changing(user_id) as change:
            txn = change.txn
            current = await self.storage.dehydrated_devices.get_for_update_txn(txn, user_id)
            if device_id != current:
                if any(
                    d.device_id == device_id
                    for d in await self.storage.accounts.get_devices(user_id)
                ):
                    # Taking over a running device would hand it another device's keys.
                    raise MatrixError("That device ID is in use", Codes.INVALID_PARAM)
                if current is not None:
                    await self.storage.accounts.delete_devices_txn(txn, user_id, [current])
                    change.deleted.append(current)
            await self.storage.accounts.add_device_txn(
                txn, user_id, device_id, name, self.clock.time_ms()
            )
            await keys.set_device_keys_txn(txn, user_id, device_id, device_keys)
            await keys.add_one_time_keys_txn(txn, user_id, device_id, one_time_keys)
            await keys.set_fallback_keys_txn(txn, user_id, device_id, fallback_keys)
            await self.storage.dehydrated_devices.set_txn(txn, user_id, device_id, device_data)
            change.updated.append(device_id)
        return {"device_id": device_id}

    async def get(self, user_id: str) -> JsonDict:
        found = await self.storage.dehydrated_devices.get(user_id)
        if found is None:
            raise NotFound("No dehydrated device available")
        return {"device_id": found[0], "device_data": found[1]}

    async def delete(self, user_id: str) -> JsonDict:
        async with self.device_lists.changing(user_id) as change:
            current = await self.storage.dehydrated_devices.get_for_update_txn(
                change.txn, user_id
            )
            if current is None:
                raise NotFound("No dehydrated device available")
            await self.storage.accounts.delete_devices_txn(change.txn, user_id, [current])
            change.deleted.append(current)
        return {"device_id": current}

    async def events(self, user_id: str, device_id: str, next_batch: str | None) -> JsonDict:
        """POST /dehydrated_device/{device_id}/events: the device's to-device messages after
        `next_batch`, a batch at a time; an empty batch means the client has them all."""
        found = await self.storage.dehydrated_devices.get(user_id)
        if found is None or found[0] != device_id:
            raise Forbidden("That is not your dehydrated device")
        since = 0
        if next_batch is not None:
            if not next_batch.isdigit() or len(next_batch) > 18:
                raise MatrixError("Invalid next_batch", Codes.INVALID_PARAM)
            since = int(next_batch)
        to_device = self.storage.to_device
        upto = await to_device.current()
        rows = await to_device.get_messages(user_id, device_id, since, upto, MAX_PER_SYNC)
        return {
            "events": [client_format(r) for r in rows],
            "next_batch": str(rows[-1].stream_id if rows else since),
        }
