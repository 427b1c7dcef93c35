"""Progress of long CLI work (an upload, a batch job): a bar redrawn in place on a terminal, and plain lines,
one per change, when the output goes to a file or a CI log, where a redrawn line would pile up as noise."""

from __future__ import annotations

from typing import TextIO

BAR_WIDTH = 30


def bar(done: float, total: float) -> str:
    """`[#########                     ]  30%`: the share of `total` that is `done`."""
    share = min(1.0, done / total) if total else 1.0
    return f"[{'#' * int(share * BAR_WIDTH):<{BAR_WIDTH}}] {share:4.0%}"


class LiveLine:
    """One line of a stream that a terminal redraws in place; elsewhere each distinct text is printed once."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._last: str | None = None
        self._open = False  # a redrawn line without its newline yet

    def show(self, text: str) -> None:
        """The current state: redrawn on a terminal; elsewhere printed when it differs from the last."""
        if self.tty:
            self.stream.write(f"\r{text}\x1b[K")  # erase what a longer earlier text left
            self.stream.flush()
            self._open = True
        elif text != self._last:
            print(text, file=self.stream, flush=True)
        self._last = text

    def close(self, text: str | None = None) -> None:
        """The end: the redrawn line kept, then `text` on a line of its own (unless it was just printed)."""
        if self._open:
            self.stream.write("\n")
            self._open = False
        if text is not None and (self.tty or text != self._last):
            print(text, file=self.stream, flush=True)
            self._last = text
