"""Offsets are committed only up to the first event still being handled in its partition."""

from __future__ import annotations

from aiokafka import TopicPartition

from services.orchestrator.consumer import OffsetTracker

P0 = TopicPartition("cwmp.inbound", 0)
P1 = TopicPartition("cwmp.inbound", 1)


def test_commit_stops_at_the_oldest_unfinished_offset() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(P0, offset)
    tracker.started(P1, 5)
    tracker.finished(P0, 11)  # another device's later event finished first
    tracker.finished(P1, 5)
    assert tracker.committable() == {P0: 10, P1: 6}
    tracker.committed.update(tracker.committable())
    assert tracker.committable() == {}  # nothing new
    tracker.finished(P0, 10)
    tracker.finished(P0, 12)
    assert tracker.committable() == {P0: 13}
    assert tracker.in_flight() == 0


def test_revoked_partitions_are_forgotten() -> None:
    tracker = OffsetTracker()
    tracker.started(P0, 1)
    tracker.started(P1, 1)
    tracker.forget([P0])
    assert tracker.in_flight() == 1
    assert tracker.committable() == {P1: 1}
