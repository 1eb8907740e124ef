"""A tiny TCP proxy on loopback that can cut a connection after the hub has answered, before
the answer reaches the site: the hub stored the data, the site never learned it did."""

from __future__ import annotations

import contextlib
import socket
import threading

from pair.db.throwaway import free_port


class CutProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.cut_next = 0  # how many hub answers to swallow (closing both sides instead)
        self.cuts = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cut_next > 0:
                self.cut_next -= 1
                self.cuts += 1
                return True
            return False

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:  # the hub is down: the site sees a dropped connection
            _shut(client)
            return
        upstream.settimeout(None)

        def forward() -> None:
            try:
                while chunk := client.recv(65536):
                    upstream.sendall(chunk)
            except OSError:
                pass
            finally:
                _shut(upstream)

        threading.Thread(target=forward, daemon=True).start()
        try:
            while chunk := upstream.recv(65536):
                if self._take_cut():
                    break
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            _shut(client)
            _shut(upstream)

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def _shut(sock: socket.socket) -> None:
    """Shut down before closing: a plain close() leaves a recv() blocked in another thread
    (and the peer) waiting."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
