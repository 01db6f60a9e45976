"""Step logs: each step's prints and logging records, captured while it runs."""

from __future__ import annotations

import logging
import sys
import threading

import pytest

from plinth.pipelines import logs


def test_prints_and_records_are_captured_then_released(capsys: pytest.CaptureFixture[str]) -> None:
    console = sys.stdout
    logger = logging.getLogger("plinth.pipeline.p.a")
    with logs.capture(logger) as log:
        print("printed")
        logger.info("logged")
        print("to stderr", file=sys.stderr)
    print("after")
    logger.info("after")
    text = log.text()
    assert "printed\n" in text and "to stderr\n" in text
    assert "INFO plinth.pipeline.p.a: logged" in text
    assert "after" not in text
    assert sys.stdout is console
    assert logger.level == logging.NOTSET
    assert capsys.readouterr().out == "printed\nafter\n"


def test_concurrent_steps_keep_their_own_logs() -> None:
    console = sys.stdout
    both_capturing = threading.Barrier(2)
    found: dict[str, str] = {}

    def run(name: str) -> None:
        with logs.capture(logging.getLogger(f"plinth.pipeline.p.{name}")) as log:
            both_capturing.wait(timeout=10)
            print(f"from {name}")
            both_capturing.wait(timeout=10)  # neither has stopped capturing yet
        found[name] = log.text()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert found == {"a": "from a\n", "b": "from b\n"}
    assert sys.stdout is console


def test_a_thread_the_step_started_lands_in_its_log() -> None:
    with logs.capture(logging.getLogger("plinth.pipeline.p.a")) as log:
        helper = threading.Thread(target=lambda: print("from a helper"))
        helper.start()
        helper.join(timeout=10)
    assert log.text() == "from a helper\n"


def test_a_nested_capture_takes_over_until_it_ends() -> None:
    with logs.capture(logging.getLogger("outer")) as outer:
        print("one")
        with logs.capture(logging.getLogger("inner")) as inner:
            print("two")
        print("three")
    assert (outer.text(), inner.text()) == ("one\nthree\n", "two\n")


def test_a_log_is_cut_at_its_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_LOG_BYTES", 10)
    with logs.capture(logging.getLogger("p")) as log:
        print("12345")
        print("67890")
    assert log.text() == "12345\n\n[log cut at 10 characters]\n"  # nothing after the cut
