"""`contagion view --serve` answers only requests addressed to itself: a page elsewhere that points its own
host name at 127.0.0.1 (DNS rebinding) gets HTTP 421, not the run's transcripts."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from contagion.viewer import ViewerServer


@pytest.fixture
def server(sim_run_dir: Path) -> Iterator[ViewerServer]:
    srv = ViewerServer(sim_run_dir, 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _get(server: ViewerServer, host: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        conn.putrequest("GET", "/", skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_requests_for_this_server_are_answered(server: ViewerServer) -> None:
    port = server.server_address[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        status, body = _get(server, host)
        assert status == 200, host
        assert b"contagion transcripts" in body


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.1:1", "127.0.0.1.evil.example:{port}",
                                  "localhost.:{port}", "", None])
def test_any_other_host_is_refused(server: ViewerServer, host: str | None) -> None:
    status, body = _get(server, None if host is None else host.format(port=server.server_address[1]))
    assert status == 421
    assert b"contagion" not in body
