"""The timer every benchmark shares (imported as ``from _timing import median_time``: the scripts
run from this folder)."""

import statistics
import time


def median_time(fn, repeats=3):
    """(median wall seconds over ``repeats`` calls of ``fn()``, the last call's result)."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out
