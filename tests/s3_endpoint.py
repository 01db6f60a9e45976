"""An S3-compatible endpoint for tests: $PLINTH_TEST_S3_ENDPOINT if set, else a moto server.

Use the fixtures `s3_endpoint` (session: the endpoint URL, with credentials and
PLINTH_S3_ENDPOINT_URL in the environment) and `s3_bucket` (a fresh bucket, as `s3://name`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import IO, Any

import pytest

STARTUP_TIMEOUT = 30.0
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# loopback must never go through a proxy configured for the outside world
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(url, timeout=1):
            return True
    except urllib.error.HTTPError as e:
        e.close()
        return True  # any HTTP answer (a real S3 says 403 to anonymous calls) means it is up
    except OSError:
        return False


def wait_until_answers(
    url: str, timeout: float = STARTUP_TIMEOUT, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not answers(url):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"S3 endpoint for {url} exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"S3 endpoint {url} did not answer within {timeout:.0f} s")
        time.sleep(0.05)  # the interval between polls, not a guess at start-up time


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(log: IO[bytes]) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-2000:]


@contextlib.contextmanager
def moto_server(host: str = "127.0.0.1") -> Iterator[str]:
    with tempfile.TemporaryFile() as log:
        for attempt in range(3):  # the free port may be taken before moto binds it
            url = f"http://{host}:{_free_port(host)}"
            cmd = [sys.executable, "-m", "moto.server", "-H", host, "-p", url.rsplit(":", 1)[1]]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_until_answers(url, proc=proc)
                if proc.poll() is None:
                    break
                raise RuntimeError(f"another server answers on {url}")
            except RuntimeError as e:
                exited = proc.poll() is not None
                _stop(proc)
                if not exited or attempt == 2:
                    raise RuntimeError(f"{e}; moto server output:\n{_tail(log)}") from e
        try:
            yield url
        finally:
            _stop(proc)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    external = os.environ.get("PLINTH_TEST_S3_ENDPOINT", "").rstrip("/")
    with pytest.MonkeyPatch.context() as env:
        for name, value in TEST_CREDENTIALS.items():
            if not external or name not in os.environ:  # a real endpoint keeps its own keys
                env.setenv(name, value)
        with contextlib.ExitStack() as stack:
            if external:
                try:
                    wait_until_answers(external)
                except RuntimeError as e:
                    raise RuntimeError(f"{e} (it comes from PLINTH_TEST_S3_ENDPOINT)") from e
                url = external
            else:
                url = stack.enter_context(moto_server())
            env.setenv("PLINTH_S3_ENDPOINT_URL", url)
            yield url


def _s3_client(endpoint: str) -> Any:
    import boto3  # only tests that ask for a bucket need it

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[str]:
    s3 = _s3_client(s3_endpoint)
    bucket = f"plinth-test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=bucket)
    yield f"s3://{bucket}"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=bucket)
