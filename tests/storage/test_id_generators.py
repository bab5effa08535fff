"""StreamIdGenerator: `current` is the furthest committed position with nothing before it still
in flight; it never names a position whose transaction failed."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from homeserver.storage.id_generators import StreamIdGenerator


class Allocation:
    """One `allocate()` block held open, to finish later in any order."""

    def __init__(self, gen: StreamIdGenerator, n: int = 1) -> None:
        self._cm: AbstractContextManager[list[int]] = gen.allocate(n)
        self.ids = self._cm.__enter__()

    def commit(self) -> None:
        self._cm.__exit__(None, None, None)

    def fail(self) -> None:
        error = RuntimeError("rolled back")
        # The block's exception propagates out of the `with`: __exit__ does not swallow it.
        assert not self._cm.__exit__(RuntimeError, error, None)


def test_in_order() -> None:
    gen = StreamIdGenerator(10)
    with gen.allocate() as ids:
        assert ids == [11]
        assert gen.current == 10  # not before it has committed
    assert gen.current == 11
    with gen.allocate(3) as ids:
        assert ids == [12, 13, 14]
    assert gen.current == 14
    with gen.allocate(0) as ids:
        assert ids == []
    assert gen.current == 14


def test_out_of_order_completion_waits_for_the_lower_position() -> None:
    gen = StreamIdGenerator(0)
    a, b, c = Allocation(gen), Allocation(gen, 2), Allocation(gen)
    assert (a.ids, b.ids, c.ids) == ([1], [2, 3], [4])
    c.commit()
    assert gen.current == 0
    b.commit()
    assert gen.current == 0
    a.commit()
    assert gen.current == 4


def test_a_failed_position_is_never_current() -> None:
    gen = StreamIdGenerator(0)
    with pytest.raises(RuntimeError):
        with gen.allocate(2):
            raise RuntimeError("rolled back")
    assert gen.current == 0
    # Positions are not handed out again in this process: the gap stays a gap.
    with gen.allocate() as ids:
        assert ids == [3]
    assert gen.current == 3


def test_a_later_success_moves_past_a_failed_gap() -> None:
    gen = StreamIdGenerator(0)
    a, b = Allocation(gen), Allocation(gen)
    a.fail()
    assert gen.current == 0
    b.commit()
    assert gen.current == 2


def test_failure_at_the_top_stops_at_the_last_commit() -> None:
    gen = StreamIdGenerator(0)
    a, b, c = Allocation(gen), Allocation(gen), Allocation(gen)
    c.fail()
    b.fail()
    assert gen.current == 0
    a.commit()
    assert gen.current == 1  # not 3: 2 and 3 never committed
    d = Allocation(gen)
    assert d.ids == [4]
    d.commit()
    assert gen.current == 4


def test_failure_below_an_in_flight_position() -> None:
    gen = StreamIdGenerator(0)
    a, b, c = Allocation(gen), Allocation(gen), Allocation(gen)
    b.fail()
    c.commit()
    assert gen.current == 0  # 1 still in flight
    a.fail()
    assert gen.current == 3


def test_restart_after_a_failure_at_the_top_reuses_no_position_a_token_named() -> None:
    """After a restart the generator is seeded from MAX(stream_ordering), which only counts
    committed positions. Whatever the old process advertised as `current` must not be above
    that, or an event stored at a reused position would sort below a token a client holds."""
    gen = StreamIdGenerator(0)
    committed = Allocation(gen)
    failed = Allocation(gen)
    committed.commit()
    failed.fail()
    advertised = gen.current
    restarted = StreamIdGenerator(max(committed.ids))  # MAX(stream_ordering) in the database
    with restarted.allocate() as ids:
        assert ids == failed.ids  # the failed position is handed out again ...
    assert ids[0] > advertised  # ... and lies above every token the old process gave out


def test_backfill_stream_grows_downwards() -> None:
    gen = StreamIdGenerator(-5, step=-1)
    a, b = Allocation(gen, 2), Allocation(gen)
    assert (a.ids, b.ids) == ([-6, -7], [-8])
    b.commit()
    assert gen.current == -5
    a.commit()
    assert gen.current == -8
    c, d = Allocation(gen), Allocation(gen)
    d.fail()
    c.commit()
    assert gen.current == -9
    e = Allocation(gen)
    assert e.ids == [-11]
    e.commit()
    assert gen.current == -11


def test_backfill_stream_never_names_a_failed_position() -> None:
    gen = StreamIdGenerator(0, step=-1)
    a, b = Allocation(gen), Allocation(gen)
    a.commit()
    b.fail()
    assert gen.current == -1


@pytest.mark.parametrize(("current", "step"), [(-1, 1), (1, -1), (0, 2)])
def test_rejects_a_seed_on_the_wrong_side(current: int, step: int) -> None:
    with pytest.raises(ValueError):
        StreamIdGenerator(current, step=step)
