"""The restart point never passes an unfinished request, stored or still being written."""

from __future__ import annotations

from scheduler.runtime.restart_point import RestartPoint


def test_the_point_is_the_lowest_open_offset() -> None:
    point = RestartPoint()
    for offset in (0, 1, 2):
        point.track(offset)
    assert point.point() == 0
    point.close(1)
    assert point.point() == 0
    point.close(0)
    assert point.point() == 2
    point.close(2)
    assert point.point() == 3  # nothing open: the known end


def test_a_write_in_flight_holds_the_point_at_its_floor() -> None:
    point = RestartPoint()
    point.track(0)
    point.close(0)
    floor = point.open_floor()  # a submit is being written: it lands at >= 1
    point.stored(4)  # other records (done marks) land meanwhile
    assert point.point() == 1
    point.close_floor(floor, 5)  # it landed at 5
    assert point.point() == 5
    failed = point.open_floor()
    point.close_floor(failed, None)  # a failed write opens nothing
    assert point.point() == 5
    point.close(5)
    assert point.point() == 6
