"""The synthetic web served on 127.0.0.1 by a real HTTP server, applying each path's behaviour from
`routes.json` (content type, headers, rate limits)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from clipdata.pipeline.demo.synthetic_web.drawing import CONTENT_TYPES

# ---------------------------------------------------------------------------------------------
# The server


class _Handler(BaseHTTPRequestHandler):
    """Files under `root`, with the per-path behaviour of `routes`; HTTP/1.1 keep-alive."""
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries a Content-Length
    timeout = 30  # idle keep-alive connections let their thread go eventually
    root: str = ""
    routes: dict = {}
    seen: set = set()  # paths already answered, for first_status
    lock = threading.Lock()

    def do_GET(self):
        self._respond(body=True)

    def do_HEAD(self):
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        route = self.routes.get(path, {})
        if "first_status" in route and body:
            with self.lock:
                first = path not in self.seen
                self.seen.add(path)
            if first:
                return self._send(route["first_status"], b"try again later\n", "text/plain",
                                  route.get("headers_first", {}), body)
        file = self._file(path)
        if file is None:
            return self._send(404, b"not found\n", "text/plain", {}, body)
        with open(file, "rb") as f:
            data = f.read()
        content_type = route.get("content_type") or CONTENT_TYPES.get(
            os.path.splitext(file)[1].lower(), "application/octet-stream")
        self._send(200, data, content_type, route.get("headers", {}), body)

    def _file(self, path: str) -> str | None:
        try:
            full = os.path.realpath(os.path.join(self.root, path.lstrip("/")))
        except ValueError:  # a NUL byte in the path
            return None
        if not full.startswith(self.root + os.sep) or not os.path.isfile(full):
            return None  # missing, a folder, or outside the root ("/../")
        return full

    def _send(self, status, data: bytes, content_type: str, headers: dict, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format, *args):  # quiet: the demo prints its own progress
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: 64+ clients connect at once

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End idle keep-alive connections, so no handler thread outlives the server."""
        with self.connections_lock:
            open_now = list(self.connections)
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address):
        # A client that hangs up mid-response (a downloader's deadline) is normal here.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serve(folder: str) -> Iterator[str]:
    """Serve `folder` on 127.0.0.1 at a free port from a background thread; yields the base
    URL ("http://127.0.0.1:PORT") and stops the server, and its connections, on exit."""
    root = os.path.realpath(folder)
    routes_file = os.path.join(root, "routes.json")
    routes = {}
    if os.path.exists(routes_file):
        with open(routes_file) as f:
            routes = json.load(f)
    handler = type("Handler", (_Handler,), {"root": root, "routes": routes, "seen": set(),
                                             "lock": threading.Lock()})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="synthetic-web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.close_connections()
        server.server_close()
        thread.join()
