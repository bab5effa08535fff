"""StreamChangeCache and the notifier's answers about what changed after a position."""

from __future__ import annotations

from homeserver.notifier.changes import StreamChangeCache
from homeserver.notifier.local import LocalNotifier


def test_changes_after_a_position_are_known_and_older_questions_say_changed() -> None:
    cache = StreamChangeCache(10)
    cache.record("!a", 12)
    cache.record("!b", 15)
    cache.record("!a", 11)  # an older position never hides a newer one
    assert cache.changed_since("!a", 11) and not cache.changed_since("!a", 12)
    assert cache.changed_since("!b", 14) and not cache.changed_since("!b", 15)
    assert not cache.changed_since("!never", 10)
    # Before the cache started it knows nothing, so everything may have changed.
    assert cache.changed_since("!never", 9)
    assert cache.changed_entities(["!a", "!b", "!c"], 12) == {"!b"}
    assert cache.changed_entities(["!a", "!b", "!c"], 10) == {"!a", "!b"}
    assert cache.changed_entities(["!a", "!c"], 9) == {"!a", "!c"}


def test_forgetting_old_entries_raises_what_counts_as_unknown() -> None:
    cache = StreamChangeCache(0, max_entries=4)
    for position, room in enumerate(["!a", "!b", "!c", "!d", "!e"], start=1):
        cache.record(room, position)
    assert cache.earliest >= 2
    # Whatever was forgotten is reported as changed, never as unchanged.
    for position in range(0, 6):
        for room, changed_at in [("!a", 1), ("!b", 2), ("!c", 3), ("!d", 4), ("!e", 5)]:
            if changed_at > position:
                assert cache.changed_since(room, position), (room, position)
    assert not cache.changed_since("!e", 5)


def test_the_notifier_answers_only_up_to_what_it_was_told() -> None:
    notifier = LocalNotifier(position=5)
    notifier.on_new_event("!a", 7, users=["@carol:x"])
    assert notifier.rooms_changed(["!a", "!b"], 5, 7) == {"!a"}
    assert notifier.rooms_changed(["!a", "!b"], 7, 7) == set()
    # Position 8 has not been announced: no answer rather than a wrong one.
    assert notifier.rooms_changed(["!a", "!b"], 7, 8) is None
    assert notifier.membership_changed("@bob:x", 7, 8)
    notifier.advance(8)
    assert notifier.rooms_changed(["!a", "!b"], 7, 8) == set()
    assert not notifier.membership_changed("@bob:x", 5, 8)
    assert notifier.membership_changed("@carol:x", 6, 8)
    assert not notifier.membership_changed("@carol:x", 7, 8)
    # Before the notifier started (a token from an earlier run of the server).
    assert notifier.rooms_changed(["!b"], 4, 8) == {"!b"}
    assert notifier.membership_changed("@bob:x", 4, 8)


def test_state_changes_say_which_rooms_changed_state_and_whether_members_did() -> None:
    notifier = LocalNotifier(position=0)
    notifier.on_new_event("!msg", 1)
    notifier.on_new_event("!topic", 2, state_changed=True)
    notifier.on_new_event("!join", 3, users=["@bob:x"], state_changed=True)
    rooms = ["!msg", "!topic", "!join", "!quiet"]
    assert notifier.state_changes(rooms, 0, 3) == {"!topic": False, "!join": True}
    assert notifier.state_changes(rooms, 2, 3) == {"!join": True}
    assert notifier.state_changes(rooms, 3, 3) == {}
    assert notifier.state_changes(rooms, 3, 4) is None
