"""Progress of endpoint requests with an ETA: a tqdm bar on a terminal, plain lines in a log file."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from dentvlm.progress import clock, is_terminal


class RequestProgress:
    """Counts answered requests out of `total`; `cached` ones are counted apart (they cost nothing)."""

    def __init__(self, total: int, label: str, lines: int = 20):
        self.total, self.label = total, label
        self.done = self.cached = 0
        self.start = time.monotonic()
        self.terminal = is_terminal(sys.stderr)
        self.bar = tqdm(total=total, desc=label, unit="req", dynamic_ncols=True) if self.terminal else None
        self.every = max(1, total // lines)

    def update(self, cached: bool) -> None:
        self.done += 1
        self.cached += cached
        if self.bar is not None:
            self.bar.set_postfix(cached=self.cached, refresh=False)
            self.bar.update()
        elif self.done % self.every == 0 or self.done == self.total:
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"{self.label}: {self.done}/{self.total} requests ({self.cached} cached), {rate:.2f} req/s, "
                f"elapsed {clock(elapsed)}, ETA {clock(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
