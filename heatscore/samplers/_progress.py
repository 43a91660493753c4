"""A minimal progress bar on stderr (no dependency): shown only when stderr is a terminal."""

import sys
import time

#: Width of the bar in characters.
BAR_WIDTH = 30


class ProgressBar:
    """``bar.update()`` once per step; ``bar.close()`` ends the line. Silent unless ``enabled`` and
    the stream is a tty (so logs and pipes get nothing), and until ``delay`` seconds have passed
    (short jobs draw nothing)."""

    def __init__(self, total, enabled, label="", stream=None, delay=0.0):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(enabled) and callable(isatty) and bool(isatty())
        self.total = max(1, int(total))
        self.label = label
        self.done = 0
        self.delay = delay
        self.drawn = False
        self.start = time.perf_counter()

    def update(self):
        self.done += 1
        if not self.enabled:
            return
        if not self.drawn and time.perf_counter() - self.start < self.delay:
            return
        self.drawn = True
        filled = BAR_WIDTH * self.done // self.total
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                          f"{self.done}/{self.total} {100 * self.done // self.total:3d}% {elapsed:.1f}s")
        self.stream.flush()

    def close(self):
        if self.enabled and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
