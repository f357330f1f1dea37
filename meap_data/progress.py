"""Progress of long jobs on stderr: a tqdm bar on a terminal, plain log lines otherwise.

Lines say done/total, the rate and an ETA, at most one per ``every_s`` seconds (and one
at the end), so piped or CI logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import Callable


def format_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(n)`` as work finishes; ``close()`` at the end. ``sink``: where log lines
    go (default stderr); None silences them. ``bar``: use tqdm (default: when stderr
    is a terminal and no sink is given)."""

    def __init__(self, total: int, desc: str, *, sink: Callable[[str], None] | None | str = "stderr",
                 every_s: float = 10.0, bar: bool | None = None):
        self.total, self.desc, self.every_s = total, desc, every_s
        self.done = 0
        self.started = self._last = time.monotonic()
        self._sink = (lambda line: print(line, file=sys.stderr, flush=True)) if sink == "stderr" else sink
        use_bar = (sink == "stderr" and sys.stderr.isatty()) if bar is None else bar
        self._bar = None
        if use_bar and self._sink is not None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="item", dynamic_ncols=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return (f"{self.desc}: {self.done}/{self.total} ({rate:.1f}/s, elapsed {format_eta(elapsed)}, "
                f"eta {format_eta(eta)})")

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        if self._sink is not None and now - self._last >= self.every_s:
            self._last = now
            self._sink(self.line() + (f"; {note}" if note else ""))

    def close(self, note: str = "") -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._sink is not None:
            self._sink(self.line() + (f"; {note}" if note else ""))
