"""Fake dependencies that stop answering: a black hole and a proxy that can freeze."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class Blackhole:
    """A loopback TCP server that accepts every connection and never answers, until
    ``close()``."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._changed:
                self._held.append(conn)
                self._changed.notify_all()

    def wait_for_connections(self, count: int, timeout: float = 60) -> None:
        """Until ``count`` connections are held (the callers wait on them)."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._held) >= count, timeout):
                raise AssertionError(f"{len(self._held)} of {count} connections came")

    def close(self) -> None:
        """The server goes away: held connections close, new ones are refused."""
        _stop_listening(self._listener)
        with self._changed:
            for conn in self._held:
                conn.close()
            self._held.clear()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FreezableProxy:
    """Forwards loopback connections to ``target`` until ``freeze()``; from then on it
    passes nothing on in either direction and holds the connections open."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.frozen = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        peers = {client: server, server: client}
        with contextlib.suppress(OSError, ValueError):
            while not self.frozen.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.05)
                for sock in readable:
                    if self.frozen.is_set():
                        break
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)

    def freeze(self) -> None:
        self.frozen.set()

    def close(self) -> None:
        _stop_listening(self._listener)
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> FreezableProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stop_listening(listener: socket.socket) -> None:
    # close() alone leaves the socket listening while a thread waits in accept()
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    listener.close()
