"""Progress on stderr: one rewritten line on a terminal, plain lines in CI logs, nothing when quiet."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, quiet: bool = False, stream=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.prefix = ""
        self._last = 0.0

    def job(self, index: int, total: int, name: str) -> None:
        self.prefix = f"[{index}/{total}] {name}"
        self._emit(self.prefix, force=True)

    def step(self, msg: str) -> None:
        # CI logs get at most one line every 2 s: enough to see it is alive, not a log flood
        now = time.monotonic()
        if self.tty or now - self._last > 2.0:
            self._emit(f"{self.prefix}: {msg}" if self.prefix else msg)

    def done(self, name: str, verdict: str, seconds: float) -> None:
        from refit_verify.report.summary import fmt_duration

        self._emit(f"{self.prefix or name}: {verdict} ({fmt_duration(seconds)})", force=True, newline=True)

    def note(self, msg: str) -> None:
        self._emit(msg, force=True, newline=True)

    def _emit(self, text: str, force: bool = False, newline: bool = False) -> None:
        if self.quiet:
            return
        self._last = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + text[:200] + ("\n" if newline else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
