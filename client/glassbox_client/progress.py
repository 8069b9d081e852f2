"""Progress bars on stderr: redrawn in place on a terminal, one line per
tenth otherwise (CI logs stay short)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


class ProgressBar:
    def __init__(self, label: str, *, stream: TextIO | None = None, enabled: bool = True):
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_tenth = -1
        self._drawn = False

    def _bar(self, fraction: float) -> str:
        filled = int(round(WIDTH * fraction))
        return "[" + "#" * filled + "." * (WIDTH - filled) + "]"

    def _show(self, fraction: float, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        fraction = min(max(fraction, 0.0), 1.0)
        line = f"{self.label} {self._bar(fraction)} {int(fraction * 100):3d}%  {text}".rstrip()
        if self.interactive:
            now = time.monotonic()
            if force or now - self._last_draw >= 0.1 or fraction >= 1.0:
                self.stream.write("\r\x1b[K" + line)
                self.stream.flush()
                self._last_draw = now
                self._drawn = True
            return
        tenth = int(fraction * 10)
        if tenth > self._last_tenth or force:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_tenth = tenth

    def bytes(self, sent: int, total: int) -> None:
        """A multipart body's progress(sent, total)."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = human_bytes(sent / elapsed) + "/s"
        self._show(sent / total if total else 1.0, f"{human_bytes(sent)} / {human_bytes(total)}  {rate}")

    def percent(self, value: float, text: str = "", *, force: bool = False) -> None:
        self._show(value / 100.0, text, force=force)

    def close(self) -> None:
        if self.interactive and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
