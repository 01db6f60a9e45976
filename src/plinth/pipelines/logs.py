"""A step's log: the records of every logger and what it prints, while it runs.

Both still reach the console (unless captured with ``echo=False``): printed text goes to
the real stdout/stderr too, and when the process has configured no logging, records at
INFO and above are shown on stderr. Code that goes around the text stream (a subprocess
given ``sys.stdout``, bytes written to ``sys.stdout.buffer``) writes to the console
itself: the stand-in hands out the console's file, buffer and encoding.

Capture is process-wide (``sys.stdout`` and the root logger are), installed while at
least one step runs. What a thread running a step writes goes to that step's log; what
other threads write (a step's own worker threads, say) goes to the log of every step
running then, which is exactly that step's when one runs at a time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

#: a log beyond this is cut (its end left out): a runaway step must not fill memory
MAX_LOG_BYTES = 16 * 1024 * 1024
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StepLog:
    """The text captured so far (thread-safe; capped at ``MAX_LOG_BYTES``). ``echo``:
    whether it is shown on the console too."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self._parts: list[str] = []
        self._size = 0
        self._cut = False
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._cut or self._size + len(text) > MAX_LOG_BYTES:
                self._cut = True
                return
            self._parts.append(text)
            self._size += len(text)

    def text(self) -> str:
        with self._lock:
            body = "".join(self._parts)
            cut = self._cut
        return body + (f"\n[log cut at {MAX_LOG_BYTES} characters]\n" if cut else "")


class _Logs:
    """The step logs being captured now, by the thread running each step (innermost
    last: a step may run a pipeline of its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[int, list[StepLog]] = {}

    def targets(self) -> list[StepLog]:
        with self.lock:
            mine = self.by_thread.get(threading.get_ident())
            return [mine[-1]] if mine else [logs[-1] for logs in self.by_thread.values()]

    def write(self, text: str) -> bool:
        """Into the logs it belongs to; whether it is also shown on the console."""
        targets = self.targets()
        for log in targets:
            log.write(text)
        return not targets or any(log.echo for log in targets)

    def echoing(self) -> bool:
        targets = self.targets()
        return not targets or any(log.echo for log in targets)


class _Tee(io.TextIOBase):
    """sys.stdout/sys.stderr while steps run: text into the step's log (and the console);
    anything else a stream has (its file, buffer, encoding) is the console's."""

    def __init__(self, console: TextIO, logs: _Logs) -> None:
        self.console = console
        self._logs = logs

    def write(self, text: str) -> int:
        if self._logs.write(text):
            with contextlib.suppress(OSError, ValueError):  # a closed console: not a failure
                self.console.write(text)
        return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.console.flush()

    def fileno(self) -> int:
        return self.console.fileno()

    def isatty(self) -> bool:
        try:
            return self.console.isatty()
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.console, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.console, "errors", None)

    @property
    def newlines(self) -> str | tuple[str, ...] | None:  # type: ignore[override]
        return getattr(self.console, "newlines", None)

    @property
    def buffer(self) -> Any:
        return self.console.buffer

    def __getattr__(self, name: str) -> Any:  # line_buffering, name, mode, reconfigure...
        if name == "console":  # not set yet
            raise AttributeError(name)
        return getattr(self.console, name)


class _Capture(logging.Handler):
    def __init__(self, logs: _Logs) -> None:
        super().__init__(logging.NOTSET)
        self._logs = logs
        formatter = logging.Formatter(_FORMAT)
        formatter.converter = time.gmtime
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._logs.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


_logs = _Logs()
_install_lock = threading.Lock()
_installed: list[logging.Handler] = []  # the handlers added to the root logger while capturing
_filtered: list[logging.Handler] = []  # the process's own root handlers, told not to echo
_streams: list[TextIO] = []  # the consoles: stdout, stderr as they were


class _Echoing(logging.Filter):
    """On a console handler: a step captured with ``echo=False`` is not shown there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _logs.echoing()


_echoing = _Echoing()


def _install() -> None:
    root = logging.getLogger()
    _filtered[:] = list(root.handlers)
    handlers: list[logging.Handler] = [_Capture(_logs)]
    if not root.handlers:  # nothing configured: show what steps log, as print would
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(_FORMAT))
        handlers.append(console)
        _filtered.append(console)
    for handler in _filtered:
        handler.addFilter(_echoing)
    for handler in handlers:
        root.addHandler(handler)
    _installed[:] = handlers
    _streams[:] = [sys.stdout, sys.stderr]
    sys.stdout, sys.stderr = _Tee(sys.stdout, _logs), _Tee(sys.stderr, _logs)


def _uninstall() -> None:
    root = logging.getLogger()
    for handler in _installed:
        root.removeHandler(handler)
    _installed.clear()
    for handler in _filtered:
        handler.removeFilter(_echoing)
    _filtered.clear()
    # put back the consoles unless someone replaced our tees meanwhile (then leave theirs)
    if isinstance(sys.stdout, _Tee):
        sys.stdout = _streams[0]
    if isinstance(sys.stderr, _Tee):
        sys.stderr = _streams[1]
    _streams.clear()


@contextlib.contextmanager
def capture(logger: logging.Logger, *, echo: bool = True) -> Iterator[StepLog]:
    """Capture logging records and printed text into a ``StepLog`` while the block runs;
    ``logger`` (the step's ``context.log``) logs at INFO and above meanwhile. ``echo``:
    show them on the console too (False: in the log only)."""
    log = StepLog(echo)
    me = threading.get_ident()
    with _install_lock:
        if not _logs.by_thread:
            _install()
        with _logs.lock:
            _logs.by_thread.setdefault(me, []).append(log)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield log
    finally:
        logger.setLevel(level)
        with _install_lock:
            with _logs.lock:
                stack = _logs.by_thread[me]
                stack.remove(log)
                if not stack:
                    del _logs.by_thread[me]
                last = not _logs.by_thread
            if last:
                _uninstall()
