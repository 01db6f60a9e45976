"""A small round-robin TCP load balancer for tests, in front of ``plinth server`` replicas.

Each client connection goes to the next replica in turn; a replica that refuses the
connection is skipped for the next one. Bytes are piped as they come and never kept, so a
request whose connection drops mid-flight (its replica died) is not replayed: the client
sees the drop, as behind nginx with ``proxy_next_upstream off`` for non-idempotent calls
or a layer-4 balancer, and decides itself whether to retry.

``lose_answers`` makes the ambiguous failure certain instead of likely: the answer to the
first attempt of every write (POST, PUT, DELETE: the same method, target and body seen for
the first time) is cut when it starts, after the replica did the work, as if the replica
had died just then; the same request again goes through. It reads each connection's first
request, so its clients must send one request per connection (no keep-alive).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterator

_CHUNK = 64 * 1024


class RoundRobinProxy:
    def __init__(
        self, backends: list[tuple[str, int]], host: str = "127.0.0.1", lose_answers: bool = False
    ) -> None:
        if not backends:
            raise ValueError("a proxy needs at least one backend")
        self.backends = backends
        self.host = host
        self.port = 0
        self.connections: Counter[int] = Counter()  # connections piped, per backend index
        self.refused: Counter[int] = Counter()  # connect attempts refused, per backend index
        self.unserved = 0  # client connections closed because every backend refused
        self.active: Counter[int] = Counter()  # connections open now, per backend index
        self.routes: dict[int, int] = {}  # a client connection's port -> its backend index
        self.errors: Counter[str] = Counter()  # why connecting to a backend failed
        self.lose_answers = lose_answers
        self.seen: Counter[str] = Counter()  # writes by "METHOD /path?query body-sha256"
        self.lost: Counter[str] = Counter()  # answers cut, by "METHOD /path?query"
        self._turn = itertools.cycle(range(len(backends)))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stopped: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-proxy", daemon=True)
        self._error: BaseException | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def route(self, client_port: int) -> str:
        """Which replica the client connection from ``client_port`` is piped to."""
        index = self.routes.get(client_port)
        if index is None:
            return f"no replica known for the connection from port {client_port}"
        host, port = self.backends[index]
        return f"replica {index} ({host}:{port})"

    def start(self) -> str:
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise RuntimeError(f"the proxy did not start: {self._error}") from self._error
        if not self.port:
            raise RuntimeError("the proxy did not start within 10 s")
        return self.url

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        # Every relay ends here, before the loop does: a relay the loop cancelled on its
        # way out would print its CancelledError.
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.close()
        self._open.clear()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        assert self._stopped is not None
        self._stopped.set()  # only now may _serve, and with it the loop, end

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        # accepting from here on; the loop runs until _shutdown has ended every relay (with
        # serve_forever, closing the server would end the loop under _shutdown itself)
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stopped.wait()

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        # Each connection tries every backend once from its turn on (other connections take
        # turns meanwhile: a shared cycle could give this one the same dead backend twice).
        first = next(self._turn)
        for k in range(len(self.backends)):
            index = (first + k) % len(self.backends)
            host, port = self.backends[index]
            try:
                streams = await asyncio.open_connection(host, port)
            except OSError as exc:  # refused (the replica is down): the next one
                self.refused[index] += 1
                self.errors[f"{index}: {type(exc).__name__}: {exc}"] += 1
                continue
            self.connections[index] += 1
            return (index, *streams)
        return None

    def _loses(self, request: bytes) -> str | None:
        """The write whose answer is to be cut (the first time it is seen), or None."""
        line = request.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        if method not in ("POST", "PUT", "DELETE"):
            return None
        write = f"{method} {rest.split(' ', 1)[0]}"  # with the query (an upload's file)
        digest = hashlib.sha256(request.split(b"\r\n\r\n", 1)[-1]).hexdigest()
        self.seen[f"{write} {digest}"] += 1
        return write if self.seen[f"{write} {digest}"] == 1 else None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._open.add(writer)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            pass  # the proxy stops (_shutdown): the connection just closes
        finally:
            self._handlers.discard(task)
            self._open.discard(writer)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, lose = b"", None
        if self.lose_answers:
            with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
                head = await _request(reader)
            lose = self._loses(head)
        upstream = await self._connect()
        if upstream is None:
            self.unserved += 1
            writer.close()
            return
        index, up_reader, up_writer = upstream
        self.routes[writer.get_extra_info("peername")[1]] = index
        self.active[index] += 1
        try:
            await self._pipe_both(reader, writer, up_reader, up_writer, head, lose)
        finally:
            self.active[index] -= 1

    async def _pipe_both(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        head: bytes,
        lose: str | None,
    ) -> None:
        self._open.add(up_writer)
        up_writer.write(head)
        answer = _cut(up_reader, self.lost, lose) if lose else _pipe(up_reader, writer)
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(answer),
        ]
        # Either side closing ends both: a replica that dies takes its connections with it.
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            for w in (writer, up_writer):
                self._open.discard(w)
                w.close()
        for w in (writer, up_writer):
            with contextlib.suppress(OSError):
                await w.wait_closed()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()


async def _request(reader: asyncio.StreamReader) -> bytes:
    """A request's line and headers, and its body when its length is given (a streamed
    upload's chunks are piped after)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for header in head.split(b"\r\n")[1:]:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


async def _cut(source: asyncio.StreamReader, lost: Counter[str], write: str) -> None:
    """Wait for the answer to start (the replica did the work), then drop it."""
    with contextlib.suppress(OSError):
        if await source.read(1):
            lost[write] += 1


@contextlib.contextmanager
def round_robin(
    backends: list[tuple[str, int]], lose_answers: bool = False
) -> Iterator[RoundRobinProxy]:
    proxy = RoundRobinProxy(backends, lose_answers=lose_answers)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
