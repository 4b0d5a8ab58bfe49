"""What a push or a pull did, file by file, and its summary.

On a terminal: a bar (files and bytes, rate, time left) with only what needs a look
(failures, conflicts, skipped files) printed above it. Elsewhere: one plain line per
file, and a progress line now and then.
"""

import sys
import time
import unicodedata
from dataclasses import dataclass, field

from cli.progress import Progress


def shown(text: str) -> str:
    """A file or image name as printed: control and invisible characters escaped, so
    that no name can move the cursor, recolour the terminal or disguise itself."""
    return "".join(
        ch if ch == " " or unicodedata.category(ch)[0] not in "CZ" else f"\\u{ord(ch):04x}"
        for ch in text
    )


@dataclass
class Counts:
    done: int = 0
    already: int = 0
    conflicts: int = 0  # left alone (--on-conflict skip)
    not_images: int = 0
    failed: int = 0
    bytes_done: int = 0


@dataclass
class Report:
    """``verb``: what a transferred file was ("sent", "received")."""

    command: str
    verb: str
    progress: Progress = field(default_factory=lambda: Progress("imagestore"))
    counts: Counts = field(default_factory=Counts)
    files_total: int = 0
    bytes_total: int = 0
    began: float = field(default_factory=time.monotonic)
    _moving: int = 0

    def plan(self, files: int, size: int) -> None:
        self.files_total += files
        self.bytes_total += size
        self._show()

    def moved(self, size: int) -> None:
        """Bytes on their way (negative: an attempt's bytes lost to a retry)."""
        self._moving += size
        self._show()

    def transferred(self, label: str, size: int) -> None:
        self.counts.done += 1
        self.counts.bytes_done += size
        self._plain(f"{self.verb} {shown(label)} ({size} bytes)")

    def already_there(self, label: str, size: int) -> None:
        self.counts.already += 1
        self._not_moving(size)
        self._plain(f"already there: {shown(label)}")

    def conflict_left_alone(self, label: str, size: int, why: str) -> None:
        self.counts.conflicts += 1
        self._not_moving(size)
        self.progress.note(f"conflict, left alone: {shown(label)}: {shown(why)}")

    def failed(self, label: str, size: int, why: str) -> None:
        self.counts.failed += 1
        self._not_moving(size)
        self.progress.note(f"failed: {shown(label)}: {shown(why)}")

    def not_an_image(self, path: str) -> None:
        self.counts.not_images += 1
        self.progress.note(f"skipped, not an image: {shown(path)}")

    def note(self, line: str) -> None:
        self.progress.note(shown(line))

    def _not_moving(self, size: int) -> None:
        """A file that will not be transferred leaves the total."""
        self.bytes_total -= size
        self._show()

    def _plain(self, line: str) -> None:
        if not self.progress.on_terminal:
            self.progress.note(line)
        self._show()

    def _show(self) -> None:
        c = self.counts
        finished = c.done + c.already + c.conflicts + c.failed
        self.progress.update(
            self._moving,
            max(self.bytes_total, self._moving),
            f"{finished}/{self.files_total} files",
        )

    def finish(self, retries: int) -> int:
        """Print the summary; the exit status: 0 all went well, 1 some files failed."""
        self.progress.close()
        c = self.counts
        seconds = time.monotonic() - self.began
        rate = c.bytes_done / seconds / 1e6 if seconds > 0 else 0.0
        parts = [f"{c.done} {self.verb}", f"{c.already} already there"]
        if c.conflicts:
            parts.append(f"{c.conflicts} conflicts left alone")
        if self.command == "push":
            parts.append(f"{c.not_images} not images")
        parts.append(f"{c.failed} failed")
        left = self.files_total - (c.done + c.already + c.conflicts + c.failed)
        if left > 0:
            parts.append(f"{left} not done")
        print(
            f"{self.command}: {', '.join(parts)}; {c.bytes_done} bytes in {seconds:.1f} s "
            f"({rate:.1f} MB/s), {retries} retries",
            file=sys.stdout,
            flush=True,
        )
        return 1 if c.failed else 0
