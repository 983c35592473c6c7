"""A real HTTP server on 127.0.0.1 (stdlib, one thread) serving one file, for the download tests.

It records the headers of every request and can misbehave on purpose: cut the body short, ignore Range
requests, answer with an error status, drip the body a few bytes at a time, stall after the headers, or
stream without end (no Content-Length).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        server = self.server
        server.requests.append(dict(self.headers))
        if server.status != 200:
            self.send_error(server.status)
            return
        payload, start = server.payload, 0
        range_header = self.headers.get("Range")
        if range_header and server.honour_range:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            if start >= len(payload):
                self.send_error(416)
                return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        if not server.endless:
            self.send_header("Content-Length", str(len(payload) - start))
        self.end_headers()
        self.wfile.flush()
        body = payload[start:]
        if len(server.requests) <= server.truncate_first:  # send half, then close the connection
            body = body[: len(body) // 2]
        time.sleep(server.stall_s)
        try:
            for _ in range(1000 if server.endless else 1):  # endless: the payload again and again (at most 1000x)
                for offset in range(0, len(body), server.drip_bytes or len(body) or 1):
                    self.wfile.write(body[offset: offset + (server.drip_bytes or len(body))])
                    self.wfile.flush()
                    time.sleep(server.drip_s)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up: what the tests expect
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, payload: bytes, honour_range: bool, truncate_first: int, status: int, drip_bytes: int,
                 drip_s: float, stall_s: float, endless: bool):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payload, self.honour_range = payload, honour_range
        self.truncate_first, self.status = truncate_first, status
        self.drip_bytes, self.drip_s, self.stall_s, self.endless = drip_bytes, drip_s, stall_s, endless
        self.requests: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/models/weights.pth"


@contextmanager
def serve(payload: bytes, *, honour_range: bool = True, truncate_first: int = 0, status: int = 200,
          drip_bytes: int = 0, drip_s: float = 0.0, stall_s: float = 0.0, endless: bool = False):
    """Serve ``payload``; the first ``truncate_first`` answers stop halfway through the body. ``drip_bytes``:
    send that many bytes per write, ``drip_s`` apart; ``stall_s``: wait after the headers; ``endless``: no
    Content-Length, the payload repeated."""
    server = _Server(payload, honour_range, truncate_first, status, drip_bytes, drip_s, stall_s, endless)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
