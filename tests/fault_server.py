"""A real HTTP server on 127.0.0.1 that misbehaves on purpose: for the fetch tests, the download
tests and benchmarks.

    with FaultServer() as server:              # random free port, a background thread
        url = server.url("/status/404")
        ...
        server.hits("/status/404")             # how many requests that path received

    python tests/fault_server.py --port 8000   # the same server in its own process (benchmarks)

It speaks HTTP/1.1 with keep-alive, so a pooled client reuses connections (`connections` counts
the TCP connections accepted, `requests` the requests), and it counts requests in flight at once
(`max_in_flight`) so a test can check a concurrency limit. A query string is ignored by the routes
and by the log, except where a route reads it; add one (`?n=3`) to make URLs distinct.

Routes (a path not listed answers 404):
    /image.jpg /image.png               a small valid image (64x48), made with PIL at import
    /image/<W>x<H>.jpg|png              a valid image of that size (noisy, so JPEG sizes are real)
    /status/<code>                      always that status, a short text body
    /flaky/<code>/<failures>/<key>      <code> for the first <failures> requests, then the JPEG
    /retry-after/<code>/<seconds>/<failures>/<key>
                                        the same with `Retry-After: <seconds>` on the failures
    /slow/<seconds>                     waits, then the JPEG (for concurrency limits)
    /drip/<interval>/<bytes>            announces <bytes>, sends one byte every <interval> seconds
    /reset/<bytes>                      announces 100000 bytes, sends <bytes>, then a TCP reset
    /truncated/<sent>/<announced>       announces <announced> bytes, sends <sent>, then closes
    /html-as-image.jpg                  an HTML page (text/html) at an image URL
    /corrupt.jpg                        image/jpeg, random bytes
    /huge.png                           a valid 20000x20000 one-colour PNG (~50 KB; the pixel cap)
    /bytes/<n>                          n bytes with a Content-Length
    /stream/<n>                         n bytes, chunked (no Content-Length)
    /redirect/<n>                       n redirects (absolute and relative, every redirect status)
                                        then the JPEG
    /redirect-loop/a, /redirect-loop/b  a -> b -> a -> ...
    /redirect-to?url=<url>[&status=302] one redirect to any URL (loopback, 169.254.169.254, ...)
    /x-robots-tag?value=<v>[&value=..]  the JPEG with one `X-Robots-Tag: <v>` header per value
"""
from __future__ import annotations

import argparse
import collections
import io
import random
import re
import socket
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from PIL import Image


def make_image(width: int, height: int, fmt: str, seed: int = 0) -> bytes:
    """A colour gradient with noise on it: decodes everywhere, and JPEG-encodes to a realistic
    size (a flat image would compress to almost nothing)."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    image.putdata([((x * 255) // max(1, width - 1), (y * 255) // max(1, height - 1), rng.randrange(256))
                   for y in range(height) for x in range(width)])
    out = io.BytesIO()
    image.save(out, format="JPEG" if fmt == "jpg" else "PNG", quality=90)
    return out.getvalue()


def make_huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid one-colour PNG of width x height written by hand: 1-bit greyscale rows of zeros
    compress ~1000:1, so 400 M pixels cost ~50 KB and a fraction of a second, where PIL would
    first allocate the 400 MB image."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte "none", then the packed pixels
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


JPEG = make_image(64, 48, "jpg")
PNG = make_image(64, 48, "png")
CORRUPT = random.Random(1).randbytes(4096)
HTML = b"<!doctype html><html><head><title>Not an image</title></head><body>hello</body></html>"

_cache: dict[str, bytes] = {}
_cache_lock = threading.Lock()


def cached(name: str, make) -> bytes:
    with _cache_lock:
        if name not in _cache:
            _cache[name] = make()
        return _cache[name]


REDIRECT_STATUSES = [301, 302, 303, 307, 308]
RESET_ANNOUNCED = 100_000


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms per response) and a benchmark would measure that instead of the client.
    disable_nagle_algorithm = True
    server: "_HTTPServer"

    def setup(self):
        super().setup()
        self.server.fault._connection_opened()

    def log_message(self, format, *args):  # quiet: tests read the request log instead
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that drops a keep-alive connection, or aborts a body, is normal here

    def do_GET(self):
        path, _, query = self.path.partition("?")
        fault = self.server.fault
        hit = fault._request_started(path)
        try:
            self._route(path, parse_qs(query), hit)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-response, as clients may
        finally:
            fault._request_finished()

    # -- responses ------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str = "application/octet-stream",
              headers: list[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _announce(self, length: int, content_type: str = "image/jpeg") -> None:
        """Status line and headers promising `length` bytes; the caller sends (some of) them."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _redirect(self, location: str, status: int = 302) -> None:
        self._send(status, b"", "text/plain", [("Location", location)])

    def _route(self, path: str, query: dict[str, list[str]], hit: int) -> None:
        m = re.fullmatch
        if path in ("/image.jpg", "/image.png"):
            self._send(200, JPEG if path.endswith("jpg") else PNG, f"image/{'jpeg' if path.endswith('jpg') else 'png'}")
        elif match := m(r"/image/(\d+)x(\d+)\.(jpg|png)", path):
            w, h, fmt = int(match[1]), int(match[2]), match[3]
            body = cached(path, lambda: make_image(w, h, fmt))
            self._send(200, body, "image/jpeg" if fmt == "jpg" else "image/png")
        elif match := m(r"/status/(\d{3})", path):
            self._send(int(match[1]), f"status {match[1]}\n".encode(), "text/plain")
        elif match := m(r"/flaky/(\d{3})/(\d+)/[^/]+", path):
            if hit <= int(match[2]):
                self._send(int(match[1]), b"try again\n", "text/plain")
            else:
                self._send(200, JPEG, "image/jpeg")
        elif match := m(r"/retry-after/(\d{3})/(\d+)/(\d+)/[^/]+", path):
            if hit <= int(match[3]):
                self._send(int(match[1]), b"try again later\n", "text/plain", [("Retry-After", match[2])])
            else:
                self._send(200, JPEG, "image/jpeg")
        elif match := m(r"/slow/([\d.]+)", path):
            time.sleep(float(match[1]))
            self._send(200, JPEG, "image/jpeg")
        elif match := m(r"/drip/([\d.]+)/(\d+)", path):
            interval, length = float(match[1]), int(match[2])
            self._announce(length)
            for _ in range(length):
                self.wfile.write(b"\xff")
                time.sleep(interval)
        elif match := m(r"/reset/(\d+)", path):
            self._announce(RESET_ANNOUNCED)
            self.wfile.write(JPEG[: int(match[1])])
            time.sleep(0.1)  # let the client read the first bytes, so the reset comes mid-body
            # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif match := m(r"/truncated/(\d+)/(\d+)", path):
            self._announce(int(match[2]))
            self.wfile.write(b"\xff" * int(match[1]))
            self.close_connection = True  # a clean close (FIN) short of the announced length
        elif path == "/html-as-image.jpg":
            self._send(200, HTML, "text/html; charset=utf-8")
        elif path == "/corrupt.jpg":
            self._send(200, CORRUPT, "image/jpeg")
        elif path == "/huge.png":
            self._send(200, cached(path, make_huge_png), "image/png")
        elif match := m(r"/bytes/(\d+)", path):
            self._send(200, b"\0" * int(match[1]))
        elif match := m(r"/stream/(\d+)", path):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            left, piece = int(match[1]), b"\0" * 65536
            while left > 0:
                data = piece[:left]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                left -= len(data)
            self.wfile.write(b"0\r\n\r\n")
        elif match := m(r"/redirect/(\d+)", path):
            n = int(match[1])
            if n == 0:
                self._send(200, JPEG, "image/jpeg")
            else:
                # Odd hops absolute, even hops relative ("3" next to "/redirect/4"), so both
                # kinds of Location are resolved; every redirect status in turn.
                target = self.server.fault.url(f"/redirect/{n - 1}") if n % 2 else str(n - 1)
                self._redirect(target, REDIRECT_STATUSES[n % len(REDIRECT_STATUSES)])
        elif path == "/redirect-loop/a":
            self._redirect("/redirect-loop/b")
        elif path == "/redirect-loop/b":
            self._redirect("/redirect-loop/a")
        elif path == "/redirect-to" and "url" in query:
            self._redirect(query["url"][0], int(query.get("status", ["302"])[0]))
        elif path == "/x-robots-tag":
            self._send(200, JPEG, "image/jpeg", [("X-Robots-Tag", v) for v in query.get("value", [])])
        else:
            self._send(404, b"no such route\n", "text/plain")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a dripping response must not keep the interpreter alive
    request_queue_size = 256  # listen backlog: the default 5 drops bursts of 64 connects
    fault: "FaultServer"


class FaultServer:
    """The server and its request log. Start and stop with `with`, or start()/stop()."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.fault = self
        self.host, self.port = self._httpd.server_address[:2]
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.reset()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def start(self) -> "FaultServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fault-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- request log ----------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._hits: collections.Counter[str] = collections.Counter()
            self.requests = 0
            self.connections = 0
            self.in_flight = 0
            self.max_in_flight = 0

    def hits(self, path: str) -> int:
        """Requests received for `path` (without its query string)."""
        with self._lock:
            return self._hits[path]

    def _connection_opened(self) -> None:
        with self._lock:
            self.connections += 1

    def _request_started(self, path: str) -> int:
        with self._lock:
            self._hits[path] += 1
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return self._hits[path]

    def _request_finished(self) -> None:
        with self._lock:
            self.in_flight -= 1


def main() -> None:
    parser = argparse.ArgumentParser(description="serve the fault-injecting test routes until killed")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port, 0 for any free one (default: %(default)s)")
    args = parser.parse_args()
    server = FaultServer(args.host, args.port)
    print(f"serving on {server.url('/')}", flush=True)
    server._httpd.serve_forever()


if __name__ == "__main__":
    main()
