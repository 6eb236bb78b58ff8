"""Peak memory of a block of work: resident set size sampled by a thread, and CUDA's own counter.

``ru_maxrss`` only ever grows over a process's life, so it cannot give one stage's peak; the
resident set is read from ``/proc/self/statm`` every ``interval`` seconds instead (on systems
without it, the process-wide ``ru_maxrss`` so far is reported).
"""

from __future__ import annotations

import os
import resource
import threading
from types import TracebackType

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float | None:
    """The resident set size now, in MiB (None where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE / 2**20
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.rss_mb`` (CPU) and ``m.gpu_mb`` (CUDA or None)."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.05):
        self.device = torch.device(device)
        self.interval = interval
        self.rss_mb = 0.0
        self.gpu_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while True:
            now = rss_mb()
            if now is not None:
                self.rss_mb = max(self.rss_mb, now)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._thread = threading.Thread(target=self._sample, name="headgen-peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        now = rss_mb()
        if now is None:  # no /proc: the process-wide peak so far (kB on Linux, bytes on macOS)
            scale = 2**20 if os.uname().sysname == "Darwin" else 2**10
            self.rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
        else:
            self.rss_mb = max(self.rss_mb, now)
        if self.device.type == "cuda":
            self.gpu_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
