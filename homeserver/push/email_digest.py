"""EmailDigests: the email an email pusher sends for one room's unread notifications: who
wrote what, the room's name and a link to it, as plain text and as HTML. Everything taken
from events (names, bodies) is untrusted: it is escaped in the HTML part and kept to one
line in headers."""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from urllib.parse import quote

from homeserver.config import EmailConfig
from homeserver.events.event import MEMBER, Event
from homeserver.push.mailer import new_message
from homeserver.storage.stores.events import EventsStore
from homeserver.storage.stores.push import PushActionRow
from homeserver.storage.stores.rooms import RoomsStore
from homeserver.storage.stores.sync_reads import SyncReadsStore

NAME = "m.room.name"
CANONICAL_ALIAS = "m.room.canonical_alias"
ENCRYPTED = "m.room.encrypted"
# Long messages are cut: the email invites to open the room, it does not replace it.
MAX_TEXT_CHARS = 500
MAX_NAME_CHARS = 80
# An unnamed room is called after a few of its members, as clients do (sync.yaml m.heroes).
MAX_HEROES = 3
ROOM_ID = "{room_id}"
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset(
    "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


@dataclass(frozen=True)
class DigestLine:
    sender: str  # display name, else user ID
    text: str


@dataclass(frozen=True)
class RoomDigest:
    room_id: str
    room_name: str
    link: str
    lines: list[DigestLine]


class EmailDigests:
    def __init__(
        self,
        config: EmailConfig,
        events: EventsStore,
        rooms: RoomsStore,
        reads: SyncReadsStore,
    ) -> None:
        self.config = config
        self.events = events
        self.rooms = rooms
        self.reads = reads

    async def room_digest(
        self, user_id: str, room_id: str, rows: Sequence[PushActionRow]
    ) -> RoomDigest | None:
        """What to tell `user_id` about these notification rows of one room; None when none
        of their events is left (purged)."""
        found = await self.events.get_events([r.event_id for r in rows])
        events = [found[r.event_id] for r in rows if r.event_id in found]
        if not events:
            return None
        naming = await self.rooms.get_current_state_ids(room_id, (NAME, CANONICAL_ALIAS))
        named = await self.events.get_events(naming.values())
        room_name = _state_text(named.get(naming.get((NAME, ""), "")), "name") or _state_text(
            named.get(naming.get((CANONICAL_ALIAS, ""), "")), "alias"
        )
        heroes: list[str] = []
        if room_name is None:
            first = await self.reads.get_first_members(
                [room_id], ("join", "invite"), user_id, MAX_HEROES
            )
            heroes = first.get(room_id, [])
        names = await self._display_names(room_id, {e.sender for e in events} | set(heroes))
        if room_name is None:
            room_name = _join_names([names[h] for h in heroes]) if heroes else room_id
        lines = [DigestLine(names[e.sender], _describe(e, user_id)) for e in events]
        return RoomDigest(room_id, _one_line(room_name), self.room_link(room_id), lines)

    async def _display_names(self, room_id: str, user_ids: Collection[str]) -> dict[str, str]:
        """user ID -> the display name of their current membership in the room, else the ID."""
        keys = {(MEMBER, u) for u in user_ids}
        state = await self.rooms.get_current_state_for_keys(room_id, keys)
        members = await self.events.get_events(state.values())
        names = {}
        for user_id in user_ids:
            name = _state_text(members.get(state.get((MEMBER, user_id), "")), "displayname")
            names[user_id] = _one_line(name) if name else user_id
        return names

    def room_link(self, room_id: str) -> str:
        quoted = quote(room_id, safe="!:")
        template = self.config.client_base_url
        if ROOM_ID in template:
            return template.replace(ROOM_ID, quoted)
        # A bare client URL: Element's route to a room.
        return f"{template.rstrip('/')}/#/room/{quoted}"

    def message(self, to: str, user_id: str, digest: RoomDigest, now_ms: int) -> EmailMessage:
        app = _one_line(self.config.app_name)
        count = len(digest.lines)
        what = "an unread message" if count == 1 else f"{count} unread messages"
        subject = f"[{app}] {what[0].upper()}{what[1:]} in {digest.room_name}"
        message = new_message(self.config, to, subject, now_ms)
        footer = (
            f"You get these emails because email notifications are on for {user_id} on {app}."
            " Turn them off in your Matrix client's notification settings."
        )
        text = [f"You have {what} in {digest.room_name}:", ""]
        for line in digest.lines:
            body = line.text.replace("\n", "\n    ")
            text.append(f"{line.sender}: {body}")
        text += ["", f"Open the room: {digest.link}", "", "-- ", footer, ""]
        message.set_content("\n".join(text))
        message.add_alternative(_html(subject, what, digest, footer), subtype="html")
        return message


def _html(subject: str, what: str, digest: RoomDigest, footer: str) -> str:
    e = html.escape
    link = e(digest.link)
    items = "\n".join(
        f"<li><b>{e(line.sender)}</b>: {e(line.text).replace(chr(10), '<br>')}</li>"
        for line in digest.lines
    )
    return (
        '<!DOCTYPE html>\n<html>\n<head><meta charset="utf-8">'
        f"<title>{e(subject)}</title></head>\n<body>\n"
        f'<p>You have {e(what)} in <a href="{link}">{e(digest.room_name)}</a>:</p>\n'
        f"<ul>\n{items}\n</ul>\n"
        f'<p><a href="{link}">Open the room</a></p>\n'
        f'<p style="color:#777;font-size:small">{e(footer)}</p>\n</body>\n</html>\n'
    )


def _describe(event: Event, user_id: str) -> str:
    if event.type == ENCRYPTED:
        # The server never sees the plaintext of an encrypted room.
        return "encrypted message"
    if event.type == MEMBER and event.state_key == user_id and event.membership == "invite":
        return "invited you to the room"
    body = event.content.get("body")
    if isinstance(body, str) and body.strip():
        return _clean(body, MAX_TEXT_CHARS, keep_newlines=True)
    return f"sent an event of type {_clean(event.type, MAX_NAME_CHARS)}"


def _state_text(event: Event | None, key: str) -> str | None:
    value = event.content.get(key) if event is not None else None
    return value if isinstance(value, str) and value.strip() else None


def _join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _clean(text: str, limit: int, keep_newlines: bool = False) -> str:
    """Control characters, line separators and bidi controls (which can make a name read
    backwards) become spaces; cut to `limit` characters."""

    def kept(c: str) -> bool:
        if c == "\n":
            return keep_newlines
        return unicodedata.category(c) not in _UNSAFE_CATEGORIES and c not in _BIDI_CONTROLS

    cleaned = "".join(c if kept(c) else " " for c in text)
    if not keep_newlines:
        cleaned = " ".join(cleaned.split())
    cleaned = cleaned.strip()
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1].rstrip() + "…"


def _one_line(text: str) -> str:
    return _clean(text, MAX_NAME_CHARS)
