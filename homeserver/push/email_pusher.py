"""EmailPusher: emails a user the notifications they left unread (C-S API "Pushers", kind
"email"): once the oldest is notif_delay old, one email per room covering every notification
of that room still unread. Notifications read in time are not pending any more (the store
leaves read rows out), so they are never mailed. Only an address bound to the user (a 3PID
they proved, handlers/threepids.py) is ever mailed."""

from __future__ import annotations

import logging

from homeserver.clock import Clock
from homeserver.errors import InvalidParam
from homeserver.identifiers import canonical_email
from homeserver.push.email_digest import EmailDigests
from homeserver.push.mailer import Mailer, MailerError
from homeserver.push.pusher_pool import PusherWorker
from homeserver.storage.stores.push import PushActionRow, Pusher, PushStore
from homeserver.storage.stores.threepids import MEDIUM_EMAIL, ThreepidsStore

logger = logging.getLogger(__name__)

EMAIL = "email"
# pusher.yaml: "If the kind is "email", this is "m.email"."
EMAIL_APP_ID = "m.email"
BATCH = 100


def check_email_pusher(app_id: str, pushkey: str) -> str:
    """POST /pushers/set of kind "email": the pushkey is the address mailed. Returns it in
    its canonical form, the one bound to accounts. Raises InvalidParam."""
    if app_id != EMAIL_APP_ID:
        raise InvalidParam(f'app_id must be "{EMAIL_APP_ID}" for email pushers')
    address = canonical_email(pushkey)
    if address is None:
        raise InvalidParam("pushkey must be an email address for email pushers")
    return address


class EmailPusher(PusherWorker):
    def __init__(
        self,
        pusher: Pusher,
        store: PushStore,
        clock: Clock,
        digests: EmailDigests,
        mailer: Mailer,
        delay_s: float,
        threepids: ThreepidsStore,
    ) -> None:
        super().__init__(pusher, store, clock)
        self.threepids = threepids
        self.digests = digests
        self.mailer = mailer
        self.delay_ms = int(delay_s * 1000)
        # The oldest pending row and when this worker first saw it: a row's ts is its
        # event's origin_server_ts, the sender's claim, and one from the future must not
        # hold back every notification after it.
        self._oldest_seen: tuple[int, int] | None = None
        # Room -> the last row already mailed while the position could not pass it yet
        # (another room's email failed): a retry does not mail that room twice.
        self._mailed_up_to: dict[str, int] = {}

    async def process(self) -> float | None:
        user_id = self.pusher.user_id
        rows = await self.store.pending_notifications(user_id, self.position, BATCH)
        self._mailed_up_to = {r: p for r, p in self._mailed_up_to.items() if p > self.position}
        if not rows:
            self._oldest_seen = None
            return None
        now = self.clock.time_ms()
        oldest = rows[0].stream_ordering
        if self._oldest_seen is None or self._oldest_seen[0] != oldest:
            self._oldest_seen = (oldest, now)
        due = min(rows[0].ts, self._oldest_seen[1]) + self.delay_ms
        if now < due:
            return (due - now) / 1000
        if await self.threepids.get_owner(MEDIUM_EMAIL, self.pusher.pushkey) != user_id:
            # Unbinding an address deletes its pushers, but a pusher set while the address
            # was being unbound can outlive it: it goes now, unsent.
            logger.info("email pusher user=%s dropped: address not bound", user_id)
            await self.store.delete_pusher(user_id, self.pusher.app_id, self.pusher.pushkey)
            return 0  # the next round finds the pusher gone and ends this worker
        by_room: dict[str, list[PushActionRow]] = {}
        for row in rows:
            if row.stream_ordering > self._mailed_up_to.get(row.room_id, 0):
                by_room.setdefault(row.room_id, []).append(row)
        failures = 0
        for room_id, room_rows in by_room.items():
            try:
                await self._mail(room_id, room_rows, now)
            except MailerError as e:
                logger.info("email notification user=%s room=%s failed: %s", user_id, room_id, e)
                failures += 1
                continue
            self._mailed_up_to[room_id] = room_rows[-1].stream_ordering
        if failures:
            # The rooms mailed are remembered; the others are tried again after a back-off,
            # and the whole batch is skipped once mail has failed for a day.
            return await self.failed(rows[-1].stream_ordering)
        await self.delivered(rows[-1].stream_ordering)
        return 0 if len(rows) == BATCH else None

    async def _mail(self, room_id: str, rows: list[PushActionRow], now_ms: int) -> None:
        digest = await self.digests.room_digest(self.pusher.user_id, room_id, rows)
        if digest is None:  # every event purged meanwhile: nothing to tell
            return
        await self.mailer.send(
            self.digests.message(self.pusher.pushkey, self.pusher.user_id, digest, now_ms)
        )
        logger.info(
            "email notification user=%s room=%s notifications=%d",
            self.pusher.user_id,
            room_id,
            len(rows),
        )
