"""The benchmark's fork scenario (bench/state_res_bench_data.py) resolves to what the rules say.

ADMIN's power levels change sorts first (greater power) and MOD's passes after it, so MOD's is
the resolved power levels. MOD's fork then sorts last in mainline ordering (it cites the
resolved power levels, ADMIN's fork an earlier mainline position), and its bans, power events,
stop the banned users' displayname changes in ADMIN's fork: MOD's fork wins every key. In v1,
MOD's fork is deeper and wins too.
"""
from __future__ import annotations

import pytest

from bench.state_res_bench_data import build_fork_scenario
from homeserver.state import InMemoryStateResolutionStore, resolve_state


@pytest.mark.parametrize("version,changes", [
    ("1", 100), ("2", 100), ("10", 100), ("11", 1000), ("12", 1000)])
async def test_fork_scenario_resolves_to_the_moderators_fork(version: str, changes: int) -> None:
    room_version, state_sets, events = build_fork_scenario(
        version, members=changes // 2, changes_per_fork=changes)
    conflicted = {k for k, v in state_sets[0].items() if state_sets[1].get(k) != v}
    assert len(conflicted) == changes + 1  # the changed keys and the power levels

    resolved = await resolve_state(
        events[0].room_id, room_version, state_sets, InMemoryStateResolutionStore(events))
    assert resolved == state_sets[1]


def test_fork_scenario_is_deterministic() -> None:
    first = build_fork_scenario("12", members=10, changes_per_fork=20)
    second = build_fork_scenario("12", members=10, changes_per_fork=20)
    assert first[1] == second[1]
    assert [e.event_id for e in first[2]] == [e.event_id for e in second[2]]
