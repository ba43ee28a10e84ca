"""Progress reporting for long work: a tqdm bar on a terminal, periodic log lines otherwise.

tqdm draws nothing useful into a log file or CI output (carriage returns), so when stderr is not a
terminal :class:`Progress` logs ``desc: done/total (pct) rate unit/s, ETA`` at most every
``interval_s`` seconds, plus a final line. Cross-cutting like :mod:`crosslocate.errors`, so any
layer may import it.
"""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType
from typing import Any, Self, TypeVar

_T = TypeVar("_T")
_log = logging.getLogger("crosslocate.progress")


def _fmt_eta(seconds: float) -> str:
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Counts work done towards ``total`` and reports it (tqdm on a tty, log lines otherwise).

    Parameters
    ----------
    total : int
        Units of work expected (views, photos, batches).
    desc : str
        Label of the work.
    unit : str
        Name of one unit.
    interval_s : float
        Minimum seconds between two log lines (non-tty mode).
    logger : logging.Logger or None
        Where the lines go (default ``crosslocate.progress``).
    tty : bool or None
        Force the mode; None = ``sys.stderr.isatty()``.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        *,
        interval_s: float = 15.0,
        logger: logging.Logger | None = None,
        tty: bool | None = None,
    ) -> None:
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.interval_s = float(interval_s)
        self.n = 0
        self._log = logger or _log
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._bar: Any = None
        if sys.stderr.isatty() if tty is None else tty:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit, smoothing=0.1)

    def rate(self) -> float:
        """Units per second since the start."""
        return self.n / max(time.perf_counter() - self._t0, 1e-9)

    def line(self) -> str:
        """``desc: n/total (pct%) rate unit/s, ETA m:ss``."""
        rate = self.rate()
        pct = 100.0 * self.n / self.total if self.total else 100.0
        eta = (self.total - self.n) / rate if rate > 0 else float("inf")
        eta_s = _fmt_eta(eta) if eta != float("inf") else "?"
        return f"{self.desc}: {self.n}/{self.total} ({pct:.0f}%) {rate:.2f} {self.unit}/s, ETA {eta_s}"

    def update(self, k: int = 1) -> None:
        """Record ``k`` more units done."""
        self.n += int(k)
        if self._bar is not None:
            self._bar.update(k)
            return
        now = time.perf_counter()
        if now - self._last >= self.interval_s and self.n < self.total:
            self._last = now
            self._log.info("%s", self.line())

    def close(self) -> None:
        """Final report (log line with the elapsed time, or close the bar)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.n:
            elapsed = time.perf_counter() - self._t0
            self._log.info(
                "%s: %d %s in %.1f s (%.2f %s/s)", self.desc, self.n, self.unit, elapsed, self.rate(), self.unit
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


__all__ = ["Progress"]
