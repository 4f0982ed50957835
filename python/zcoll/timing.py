"""Timing helpers shared by the demo and the benchmarks: medians, never lone samples (2 shared
cores are noisy)."""
from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def median_seconds(fn: Callable[[], object], repeat: int, warmup: int = 0) -> float:
    """Median wall time of `repeat` calls of fn, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
