"""A step's log: the records of every logger and what it prints, while it runs.

Both still reach the console: printed text goes to the real stdout/stderr too, and when
the process has configured no logging, records at INFO and above are shown on stderr.
Capture is process-wide (``sys.stdout`` and the root logger are): one step runs at a time
in a runner's process, and output of other threads meanwhile lands in that step's log.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

#: a log beyond this is cut (its end kept out): a runaway step must not fill memory
MAX_LOG_BYTES = 16 * 1024 * 1024
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StepLog:
    """The text captured so far (thread-safe; capped at ``MAX_LOG_BYTES``)."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0
        self._cut = False
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._size >= MAX_LOG_BYTES:
                self._cut = True
                return
            self._parts.append(text)
            self._size += len(text)

    def text(self) -> str:
        with self._lock:
            body = "".join(self._parts)
        return body + ("\n[log cut at 16 MiB]\n" if self._cut else "")


class _Tee(io.TextIOBase):
    def __init__(self, console: TextIO, log: StepLog) -> None:
        self._console = console
        self._log = log

    def write(self, text: str) -> int:
        self._log.write(text)
        with contextlib.suppress(OSError, ValueError):  # a closed console must not fail the step
            self._console.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._console.flush()

    def isatty(self) -> bool:
        return False


class _Capture(logging.Handler):
    def __init__(self, log: StepLog) -> None:
        super().__init__(logging.NOTSET)
        self._log = log
        formatter = logging.Formatter(_FORMAT)
        formatter.converter = time.gmtime
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._log.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def capture(logger: logging.Logger) -> Iterator[StepLog]:
    """Capture logging records and printed text into a ``StepLog`` while the block runs;
    ``logger`` (the step's ``context.log``) logs at INFO and above."""
    log = StepLog()
    root = logging.getLogger()
    handler = _Capture(log)
    console: logging.Handler | None = None
    if not root.handlers:  # nothing configured: show what the step logs, as print would
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(console)
    root.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
    try:
        yield log
    finally:
        sys.stdout, sys.stderr = out, err
        logger.setLevel(level)
        root.removeHandler(handler)
        if console is not None:
            root.removeHandler(console)
