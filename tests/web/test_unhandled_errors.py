"""An unhandled exception is answered as a 500 JSON and keeps the keep-alive connection
(issue 11): a real uvicorn server, one HTTP connection, two requests."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from pair.core.node import Node
from pair.db.throwaway import free_port
from pair.web.app import create_app


@pytest.fixture
def server(sqlite_node: Node) -> Iterator[int]:
    app = create_app(sqlite_node)

    @app.get("/test-only/boom")  # exists only in this test's app instance
    def boom() -> None:
        raise RuntimeError("a bug that no handler expected")

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    yield port
    srv.should_exit = True
    thread.join(10)


@pytest.mark.integration
def test_unhandled_error_is_a_clean_500_on_a_kept_connection(server: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    conn.request("GET", "/healthz")
    first = conn.getresponse()
    assert first.status == 200
    first.read()
    sock = conn.sock

    conn.request("GET", "/test-only/boom")
    failed = conn.getresponse()
    assert failed.status == 500
    assert failed.getheader("content-type") == "application/json"
    assert (failed.getheader("connection") or "").lower() != "close"
    body = json.loads(failed.read())
    assert body["error"] == "internal"
    assert "RuntimeError" not in json.dumps(body)  # no internals in the answer

    # the same socket carries the next request: the server did not drop the connection
    conn.request("GET", "/healthz")
    after = conn.getresponse()
    assert after.status == 200
    assert json.loads(after.read())["status"] == "ok"
    assert conn.sock is sock
    conn.close()
