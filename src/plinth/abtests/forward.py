"""Forwarding a request to an arm's model service: one aiohttp keep-alive pool per arm
service, so an arm that stops answering fills only its own pool (its callers then wait for a
connection inside their own timeout and fall back to control) and never holds the
connections of the others.

The per-request path is short on purpose: the URL is parsed once per service, no cookie
jar, no automatic headers or decompression, the body passed through as bytes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from yarl import URL

MAX_CONNECTIONS_PER_ARM = 256  # a slow arm holds at most this many; its callers then queue


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 504 when the arm timed out, 502 when it could not be reached
    body: bytes
    model_version: str | None  # from the arm's X-Model-Version header
    failure: str | None  # None, or why the call failed: timeout, unreachable, server_error
    latency_ms: float  # from sending to the answer or the failure


class Forwarder:
    """POSTs to arm services. ``timeout`` in seconds per call, ``arm_timeouts`` by arm name
    over it. Pools are made on first use inside the running loop; ``close`` them at exit."""

    def __init__(
        self,
        timeout: float,
        arm_timeouts: Mapping[str, float] | None = None,
        max_connections_per_arm: int = MAX_CONNECTIONS_PER_ARM,
    ) -> None:
        self._default = aiohttp.ClientTimeout(total=timeout)
        self._timeouts = {
            arm: aiohttp.ClientTimeout(total=s) for arm, s in (arm_timeouts or {}).items()
        }
        self._limit = max_connections_per_arm
        self._pools: dict[str, tuple[aiohttp.ClientSession, URL]] = {}

    def _pool(self, url: str) -> tuple[aiohttp.ClientSession, URL]:
        pool = self._pools.get(url)
        if pool is None:
            connector = aiohttp.TCPConnector(limit=self._limit, ttl_dns_cache=300)
            session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                auto_decompress=False,
                trust_env=False,
            )
            pool = self._pools[url] = (session, URL(url))
        return pool

    async def post(self, url: str, arm: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        session, target = self._pool(url)
        timeout = self._timeouts.get(arm, self._default)
        started = time.perf_counter()
        try:
            async with session.post(target, data=body, headers=headers, timeout=timeout) as r:
                content = await r.read()
                status = r.status
                version = r.headers.get("x-model-version")
        except TimeoutError:
            return Answer(504, b"", None, "timeout", _ms_since(started))
        except (aiohttp.ClientError, OSError):  # refused, reset, a protocol error
            return Answer(502, b"", None, "unreachable", _ms_since(started))
        failure = "server_error" if status >= 500 else None
        return Answer(status, content, version, failure, _ms_since(started))

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for session, _ in pools.values():
            await session.close()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
