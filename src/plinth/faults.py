"""Crash points for fault tests: ``PLINTH_CRASH_AT=<name>`` makes a process kill itself
(SIGKILL, no clean-up of any kind) when it reaches the named point, so a test can check
what a real kill there leaves behind. Unset, a crash point costs one dictionary lookup."""

from __future__ import annotations

import os
import signal

CRASH_ENV = "PLINTH_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
