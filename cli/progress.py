"""Progress on a terminal: a bar (tqdm) when stderr is one, else a plain line now and
then, so that logs and CI output stay readable."""

import sys
import time
from typing import NoReturn, TextIO

from tqdm import tqdm


class Progress:
    """Bytes done of a total, with a count of items; ``update`` as work goes."""

    def __init__(self, what: str, out: TextIO = sys.stderr, every_seconds: float = 5.0) -> None:
        self._out = out
        self._what = what
        self._every = every_seconds
        self._last_line = 0.0
        self._bar: tqdm[NoReturn] | None = None
        if out.isatty():
            self._bar = tqdm(
                total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=what, file=out
            )

    @property
    def on_terminal(self) -> bool:
        return self._bar is not None

    def update(self, done_bytes: int, total_bytes: int, items: str) -> None:
        if self._bar is not None:
            self._bar.total = total_bytes
            self._bar.n = done_bytes
            self._bar.set_postfix_str(items, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= self._every:
            self._last_line = now
            share = f"{100 * done_bytes / total_bytes:.0f}%" if total_bytes else "-"
            print(
                f"{self._what}: {items}, {done_bytes} of {total_bytes} bytes ({share})",
                file=self._out,
                flush=True,
            )

    def note(self, line: str) -> None:
        """A line of its own (above the bar on a terminal)."""
        if self._bar is not None:
            self._bar.write(line, file=self._out)
        else:
            print(line, file=self._out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
