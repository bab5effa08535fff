"""matrix-nio reading relationships and threads (GET /relations, GET /threads) from the real
server."""

from __future__ import annotations

from nio import AsyncClient, RegisterResponse, RoomCreateResponse, RoomSendResponse
from nio.api import RelationshipType, ThreadInclusion


async def test_nio_reads_relations_and_threads(server_url: str) -> None:
    alice = AsyncClient(server_url, "alice")
    try:
        assert isinstance(await alice.register("alice", "correct horse"), RegisterResponse)
        created = await alice.room_create()
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id

        async def send(content: dict[str, object], event_type: str = "m.room.message") -> str:
            sent = await alice.room_send(room_id, event_type, content)
            assert isinstance(sent, RoomSendResponse), sent
            return sent.event_id

        root = await send({"msgtype": "m.text", "body": "root"})
        replies = [
            await send(
                {
                    "msgtype": "m.text",
                    "body": f"reply {i}",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": root},
                }
            )
            for i in range(3)
        ]
        reaction = await send(
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}},
            "m.reaction",
        )

        # nio follows next_batch itself: a page size of 2 makes it paginate.
        in_thread = [
            e.event_id
            async for e in alice.room_get_event_relations(
                room_id, root, RelationshipType.thread, limit=2
            )
        ]
        assert in_thread == replies[::-1]
        everything = [
            e.event_id async for e in alice.room_get_event_relations(room_id, root, limit=2)
        ]
        assert everything == [reaction, *replies[::-1]]
        roots = [
            e.event_id async for e in alice.room_get_threads(room_id, ThreadInclusion.participated)
        ]
        assert roots == [root]
    finally:
        await alice.close()
