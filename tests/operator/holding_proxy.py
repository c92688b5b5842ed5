"""A TCP proxy in front of the test's Redis that forwards a client's first N bytes and drops the rest.

It cuts an operator's publish at an exact, chosen byte: Redis gets whatever commands fit whole in
the first N bytes, as if the operator had died right there, and the operator waits for replies
that never come until the test kills it. New connections after `unlimit()` pass everything.
Replies from Redis always pass. Threads with blocking sockets: the tests around it are sync.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

from tests.harness import net


@dataclass
class HoldingProxy:
    target_port: int
    budget: int | None = None  # bytes from clients forwarded in all; None = no limit
    port: int = 0
    exhausted: threading.Event = field(default_factory=threading.Event)
    _listener: socket.socket | None = None
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"redis://{net.LOOPBACK}:{self.port}/0"

    def start(self) -> HoldingProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((net.LOOPBACK, 0))
        listener.listen()
        self._listener, self.port = listener, listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()
        return self

    def unlimit(self) -> None:
        with self._lock:
            self.budget = None

    def stop(self) -> None:
        for sock in [self._listener, *self._sockets]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # stopped
            server = socket.create_connection((net.LOOPBACK, self.target_port))
            self._sockets += [client, server]
            threading.Thread(target=self._upstream, args=(client, server), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client), daemon=True).start()

    def _take(self, wanted: int) -> int:
        """How many of `wanted` bytes may pass; spends them from the budget."""
        with self._lock:
            if self.budget is None:
                return wanted
            allowed = min(wanted, self.budget)
            self.budget -= allowed
            if allowed < wanted:
                self.exhausted.set()
            return allowed

    def _upstream(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                allowed = self._take(len(data))
                if allowed:
                    server.sendall(data[:allowed])
                # The rest is dropped: Redis never sees it, and waits for a command's end in vain.
        except OSError:
            pass
        finally:
            _close(server, client)

    def _downstream(self, server: socket.socket, client: socket.socket) -> None:
        try:
            while data := server.recv(65536):
                client.sendall(data)
        except OSError:
            pass
        finally:
            _close(server, client)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
