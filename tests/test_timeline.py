"""A piece's own timeline: a real garbage collection, recorded with what its time was
spent on when the thread's counters are there."""

from __future__ import annotations

import gc

import pytest

from mqprobe.cpu import ThreadCounters
from mqprobe.timeline import EventKind, Recorder


def test_a_collection_over_1_ms_is_recorded_with_its_parts():
    if not ThreadCounters().available:
        pytest.skip(ThreadCounters().reason)
    recorder = Recorder("n1")
    recorder.watch_gc(anatomy=True)
    garbage = [[i, str(i)] for i in range(300_000)]  # enough to scan for well over 1 ms
    try:
        gc.collect()
    finally:
        recorder.unwatch_gc()
        del garbage
    (collection,) = [e for e in recorder.events if e.kind == EventKind.GC][-1:]
    detail = collection.detail
    assert detail["generation"] == 2
    parts = detail["on_cpu_ms"] + detail["waiting_ms"] + detail["throttled_ms"] + detail["off_cpu_ms"]
    assert parts == pytest.approx(collection.duration_ns / 1e6, abs=0.01)
    assert detail["on_cpu_ms"] > 0.5
