"""Events from another server: forks and their resolution, rejection, soft failure, outliers."""

from __future__ import annotations

from typing import Any

import pytest
from signedjson.key import generate_signing_key

from homeserver.core import Core
from homeserver.errors import InvalidEvent
from homeserver.events.builder import EventBuilder
from homeserver.events.event import CREATE, MEMBER, POWER_LEVELS, Event
from homeserver.events.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.handlers.room import RoomCreationRequest
from tests.handlers.test_local_events import table_counts

ALICE = "@alice:test.local"
BOB = "@bob:remote.test"
CAROL = "@carol:remote.test"
REMOTE_KEY = generate_signing_key("a_rmte")


class RemoteServer:
    """Builds events as remote.test would, on top of what the local server holds."""

    def __init__(self, core: Core, room_id: str, rv: RoomVersion) -> None:
        self.core, self.room_id, self.rv = core, room_id, rv

    async def build(
        self,
        event_type: str,
        sender: str,
        content: dict[str, Any],
        *,
        prev: list[str],
        auth_types: list[tuple[str, str]],
        state_key: str | None = None,
        state_at: str | None = None,
        depth: int | None = None,
    ) -> Event:
        """`state_at` (default: the first prev event) is the event whose state the new one
        builds on; `depth` is needed when the prev events are not stored."""
        state = dict(await self.core.state.get_state_after(state_at or prev[0]))
        if self.rv.room_id_from_create_event:
            auth_types = [k for k in auth_types if k[0] != CREATE]
        if depth is None:
            metas = await self.core.storage.events.get_event_metas(prev)
            depth = max(m.depth for m in metas.values()) + 1
        return EventBuilder(
            self.rv, event_type, sender, content, room_id=self.room_id, state_key=state_key
        ).build(
            prev_events=prev,
            auth_events=[state[k] for k in auth_types if k in state],
            depth=depth,
            origin_server_ts=1_700_000_000_000 + depth,
            server_name="remote.test",
            signing_key=REMOTE_KEY,
        )


async def public_room_with_bob(core: Core, version: str) -> tuple[str, RemoteServer, Event]:
    rv = KNOWN_ROOM_VERSIONS[version]
    room_id = await core.rooms.create_room(
        RoomCreationRequest(ALICE, preset="public_chat", room_version=rv)
    )
    remote = RemoteServer(core, room_id, rv)
    head = await core.storage.events.get_forward_extremities(room_id)
    join = await remote.build(
        MEMBER,
        BOB,
        {"membership": "join"},
        prev=head,
        state_key=BOB,
        auth_types=[(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB), ("m.room.join_rules", "")],
    )
    persisted = await core.remote_events.persist_event(join)
    assert persisted.stream_ordering > 0
    return room_id, remote, join


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_a_fork_is_resolved_and_merged_by_the_next_local_event(
    core: Core, version: str
) -> None:
    room_id, remote, join = await public_room_with_bob(core, version)
    assert await core.storage.rooms.get_membership(room_id, BOB) == "join"
    topic = await core.events.send_event(
        room_id, "m.room.topic", ALICE, {"topic": "ours"}, state_key=""
    )
    # Bob has not seen the topic yet: his message forks from his join.
    message = await remote.build(
        "m.room.message",
        BOB,
        {"body": "hi"},
        prev=[join.event_id],
        auth_types=[(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB)],
    )
    await core.remote_events.persist_event(message)
    store = core.storage
    assert sorted(await store.events.get_forward_extremities(room_id)) == sorted(
        [topic.event.event_id, message.event_id]
    )
    current = await store.rooms.get_current_state_ids(room_id)
    assert current[("m.room.topic", "")] == topic.event.event_id
    merged = await core.events.send_event(room_id, "m.room.message", ALICE, {"body": "merge"})
    assert sorted(merged.event.prev_event_ids) == sorted([topic.event.event_id, message.event_id])
    assert dict(await core.state.get_state_before(merged.event.event_id)) == current
    assert await store.events.get_forward_extremities(room_id) == [merged.event.event_id]


@pytest.mark.parametrize("version", ["10", "12"])
async def test_unauthorised_remote_events_are_rejected(core: Core, version: str) -> None:
    room_id, remote, join = await public_room_with_bob(core, version)
    state_before = await core.storage.rooms.get_current_state_ids(room_id)
    # Carol never joined; Bob (power 0) may not change the power levels.
    intruder = await remote.build(
        "m.room.message",
        CAROL,
        {"body": "spam"},
        prev=[join.event_id],
        auth_types=[(CREATE, ""), (POWER_LEVELS, "")],
    )
    coup = await remote.build(
        POWER_LEVELS,
        BOB,
        {"users": {BOB: 100}},
        prev=[join.event_id],
        state_key="",
        auth_types=[(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB)],
    )
    for event in (intruder, coup):
        await core.remote_events.persist_event(event)
    metas = await core.storage.events.get_event_metas([intruder.event_id, coup.event_id])
    assert metas[intruder.event_id].rejected_reason and metas[coup.event_id].rejected_reason
    assert await core.storage.events.get_rejected_event_ids(
        [intruder.event_id, coup.event_id, join.event_id]
    ) == {intruder.event_id, coup.event_id}
    assert await core.storage.events.get_forward_extremities(room_id) == [join.event_id]
    assert await core.storage.rooms.get_current_state_ids(room_id) == state_before


async def test_events_passing_their_state_but_not_current_state_are_soft_failed(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "12")
    await core.events.send_event(room_id, MEMBER, ALICE, {"membership": "ban"}, state_key=BOB)
    late = await remote.build(
        "m.room.message",
        BOB,
        {"body": "from before the ban"},
        prev=[join.event_id],
        auth_types=[(POWER_LEVELS, ""), (MEMBER, BOB)],
    )
    await core.remote_events.persist_event(late)
    meta = (await core.storage.events.get_event_metas([late.event_id]))[late.event_id]
    assert meta.soft_failed and meta.rejected_reason is None
    assert late.event_id not in await core.storage.events.get_forward_extremities(room_id)
    assert await core.storage.rooms.get_membership(room_id, BOB) == "ban"


async def test_a_tampered_event_is_processed_redacted(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "11")
    message = await remote.build(
        "m.room.message",
        BOB,
        {"body": "original"},
        prev=[join.event_id],
        auth_types=[(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB)],
    )
    message.pdu["content"]["body"] = "tampered"  # breaks the content hash, not the event ID
    await core.remote_events.persist_event(message)
    stored = await core.storage.events.get_event(message.event_id)
    assert stored is not None and stored.content == {}


async def test_outliers_take_negative_positions_and_leave_the_timeline_alone(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "10")
    extremities = await core.storage.events.get_forward_extremities(room_id)
    profile = await remote.build(
        MEMBER,
        BOB,
        {"membership": "join", "displayname": "Bob"},
        prev=[join.event_id],
        state_key=BOB,
        auth_types=[(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB)],
    )
    bogus = await remote.build(
        MEMBER,
        CAROL,
        {"membership": "join"},
        prev=[join.event_id],
        state_key=CAROL,
        auth_types=[(CREATE, ""), (POWER_LEVELS, "")],
    )  # no join rules cited
    persisted = await core.remote_events.persist_outliers(room_id, [profile, bogus])
    assert all(p.stream_ordering < 0 for p in persisted)
    assert await core.storage.events.get_forward_extremities(room_id) == extremities
    assert await core.storage.events.get_rejected_event_ids([profile.event_id, bogus.event_id]) == {
        bogus.event_id
    }
    meta = (await core.storage.events.get_event_metas([profile.event_id]))[profile.event_id]
    assert meta.outlier and meta.state_group_before is None


async def test_an_event_arriving_after_its_child_is_not_an_extremity(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "10")
    auth = [(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB)]
    parent = await remote.build(
        "m.room.message", BOB, {"body": "1"}, prev=[join.event_id], auth_types=auth
    )
    # The child arrives first, with the state before it, as /state_ids would give.
    child = await remote.build(
        "m.room.message",
        BOB,
        {"body": "2"},
        prev=[parent.event_id],
        state_at=join.event_id,
        depth=parent.depth + 1,
        auth_types=auth,
    )
    state = dict(await core.state.get_state_after(join.event_id))
    await core.remote_events.persist_event(child, state_before=state)
    # The join stays an extremity: nothing stored points at it yet.
    assert sorted(await core.storage.events.get_forward_extremities(room_id)) == sorted(
        [join.event_id, child.event_id]
    )
    await core.remote_events.persist_event(parent)
    # The parent arrived late: the child still is the only extremity and state is intact.
    assert await core.storage.events.get_forward_extremities(room_id) == [child.event_id]
    assert await core.storage.rooms.get_current_state_ids(room_id) == state


async def test_an_outlier_child_does_not_hide_a_live_extremity(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "11")
    auth = [(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB)]
    live = await remote.build(
        "m.room.message", BOB, {"body": "live"}, prev=[join.event_id], auth_types=auth
    )
    outlier = await remote.build(
        "m.room.message",
        BOB,
        {"body": "o"},
        prev=[live.event_id],
        state_at=join.event_id,
        depth=live.depth + 1,
        auth_types=auth,
    )
    await core.remote_events.persist_outliers(room_id, [outlier])
    state = await core.storage.rooms.get_current_state_ids(room_id)
    await core.remote_events.persist_event(live)
    assert await core.storage.events.get_forward_extremities(room_id) == [live.event_id]
    assert await core.storage.rooms.get_current_state_ids(room_id) == state


async def test_events_already_stored_are_not_stored_again(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "12")
    again = await core.remote_events.persist_event(join)
    assert again.event.event_id == join.event_id and again.stream_ordering > 0
    before = await table_counts(core)
    assert await core.remote_events.persist_outliers(room_id, [join]) == []
    assert await table_counts(core) == before


async def test_soft_failed_events_reach_no_client(core: Core) -> None:
    room_id, remote, join = await public_room_with_bob(core, "12")
    ban = await core.events.send_event(room_id, MEMBER, ALICE, {"membership": "ban"}, state_key=BOB)
    with core.notifier.listen(ALICE, [room_id]) as listener:
        late = await remote.build(
            "m.room.message",
            BOB,
            {"body": "hidden"},
            prev=[join.event_id],
            auth_types=[(POWER_LEVELS, ""), (MEMBER, BOB)],
        )
        await core.remote_events.persist_event(late)
        assert not await listener.wait(0.2)
    stream = await core.storage.events.get_stream_events(
        room_id, ban.stream_ordering - 1, core.storage.stream_ids.current, 50
    )
    assert [e.event_id for e in stream] == [ban.event.event_id]
    rows = await core.storage.db.fetch(
        "SELECT event_id FROM room_memberships WHERE user_id = $1", BOB
    )
    assert late.event_id not in {r[0] for r in rows}


async def test_prev_events_in_another_room_are_refused(core: Core) -> None:
    room_a, remote_a, join_a = await public_room_with_bob(core, "10")
    room_b = await core.rooms.create_room(
        RoomCreationRequest(
            ALICE, preset="public_chat", name="secret", room_version=KNOWN_ROOM_VERSIONS["10"]
        )
    )
    other = (await core.storage.events.get_forward_extremities(room_b))[0]
    # A malicious server cites room B's event so that ours would take room B's state.
    crafted = await remote_a.build(
        "m.room.message",
        BOB,
        {"body": "x"},
        prev=[other],
        state_at=join_a.event_id,
        auth_types=[(CREATE, ""), (POWER_LEVELS, ""), (MEMBER, BOB)],
    )
    before = await table_counts(core)
    with pytest.raises(InvalidEvent, match="another room"):
        await core.remote_events.persist_event(crafted)
    assert await table_counts(core) == before
