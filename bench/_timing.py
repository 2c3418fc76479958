"""Timing helper shared by the benchmarks (imported as ``from _timing import best_ms``: bench/ is on
``sys.path`` when a benchmark runs as ``python bench/<name>.py``)."""
from __future__ import annotations

import time
from typing import Callable


def best_ms(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after a warm-up, in ms: other processes only add time."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)
