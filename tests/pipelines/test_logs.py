"""Step logs: each step's prints and logging records, captured while it runs."""

from __future__ import annotations

import io
import logging
import subprocess
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


def test_code_needing_a_real_stream_gets_the_consoles(capfd: pytest.CaptureFixture[str]) -> None:
    console = sys.stdout
    with logs.capture(logging.getLogger("p")) as log:
        assert sys.stdout is not console
        assert sys.stdout.fileno() == console.fileno()
        assert (sys.stdout.encoding, sys.stdout.errors) == (console.encoding, console.errors)
        assert sys.stdout.isatty() == console.isatty()
        subprocess.run(
            [sys.executable, "-c", "print('from a tool')"], stdout=sys.stdout, check=True
        )
        sys.stdout.buffer.write(b"raw bytes\n")
        sys.stdout.flush()
        print("printed")
    out = capfd.readouterr().out
    assert "from a tool\n" in out and "raw bytes\n" in out and "printed\n" in out
    assert log.text() == "printed\n"  # what goes around the text stream reaches the console only


def test_without_echo_the_log_alone_gets_it(capsys: pytest.CaptureFixture[str]) -> None:
    own = io.StringIO()  # a handler the process configured (a worker's, to its console)
    handler = logging.StreamHandler(own)
    root = logging.getLogger()
    root.addHandler(handler)
    logger = logging.getLogger("plinth.pipeline.p.quiet")
    try:
        with logs.capture(logger, echo=False) as log:
            print("printed")
            print("to stderr", file=sys.stderr)
            logger.info("logged")
        logger.warning("after")
    finally:
        root.removeHandler(handler)
    assert "printed\n" in log.text() and "to stderr\n" in log.text() and "logged" in log.text()
    assert capsys.readouterr() == ("", "")
    assert own.getvalue() == "after\n"  # the handler is the process's own again
    assert handler.filters == []
