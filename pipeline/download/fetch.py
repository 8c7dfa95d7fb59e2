"""The HTTP layer of `clipdata download`: fetch a shard's image URLs with one pooled client.

    from clipdata.pipeline.download.fetch import fetch_many, FetchConfig

    for result in fetch_many(urls, FetchConfig(timeout=20)):   # as they complete
        if result.error is None:
            resize(result.body)
        else:
            counts[result.error_kind] += 1

Plain Python: `fetch_many` runs an asyncio event loop (aiohttp) in a background thread of its own
and hands results to the calling thread as they complete, so a Beam DoFn can call it once per
shard, resize while the rest downloads, and leave no thread or socket behind.

What it gets right that img2dataset users ask for:
- a total deadline per attempt (connect + headers + body, redirects included), so a server that
  drips one byte a second is cut at the deadline rather than kept alive by a per-read timeout;
- a body size cap, checked against Content-Length before reading and while reading;
- retries with exponential backoff and jitter, only for failures that can heal (connection errors,
  timeouts, truncated bodies, 429, 500, 502, 503, 504), honouring Retry-After on 429/503 up to a
  cap — a longer Retry-After fails the row at once instead of parking it for an hour;
- a per-host concurrency limit, and a global one that also bounds the bodies held in memory;
- X-Robots-Tag opt-outs (noai, noimageai, noindex, noimageindex);
- no requests to private addresses (loopback, RFC 1918, link-local such as the cloud metadata
  service at 169.254.169.254, ...): literal IPs are checked before connecting, host names at DNS
  resolution inside the connector, so the address actually connected to is checked, on every
  redirect hop and on every (re)resolution — a redirect or a DNS rebinding to one is refused too.

Every row ends in a FetchResult whose `error` is None or a short description, and whose
`error_kind` is its countable kind ("http-404", "deadline", "too-large", ...), set where it failed.
"""
from __future__ import annotations

import asyncio
import email.utils
import errno
import ipaddress
import queue
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable, Iterator

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from clipdata.pipeline.foundation import failures


@dataclass
class FetchConfig:
    timeout: float = 20.0  # seconds: total deadline of one attempt, connect + headers + body, all hops
    connect_timeout: float = 10.0  # seconds for the TCP (and TLS) connect of one hop
    max_body_bytes: int = 32 * 1024 * 1024
    retries: int = 2  # extra attempts after the first, for retryable failures only
    backoff: float = 1.0  # seconds; attempt n waits backoff * 2**(n-1), jittered down to half
    max_retry_after: float = 60.0  # a longer Retry-After fails the row instead of sleeping
    concurrency: int = 64  # requests in flight, and results (bodies) not yet taken by the caller
    per_host_concurrency: int = 16  # requests in flight to one host name
    user_agent: str = "clipdata/0.1 (+https://github.com/clipdata/clipdata)"
    max_redirects: int = 5
    respect_opt_outs: bool = True  # X-Robots-Tag noai/noimageai/noindex/noimageindex
    allow_private_addresses: bool = False  # True for tests and intranet crawls only


@dataclass
class FetchResult:
    index: int  # position in the input list
    url: str
    body: bytes | None  # None unless error is None
    error: str | None  # None on success, else what went wrong, in words
    http_status: int | None  # status of the last response received, if any
    final_url: str | None  # the URL after redirects (of the last hop tried on error)
    content_type: str | None
    attempts: int
    seconds: float  # from the first request of the row to its result, retry waits included
    error_kind: str | None = None  # None on success, else its countable kind: "http-404", "deadline",
                                   # "too-large", ... (one of ERROR_KINDS or http-<status>), set
                                   # where the failure happens, never read back from `error`


# -- errors ---------------------------------------------------------------------------------------

# The countable kinds a failed FetchResult has (`error_kind`), besides "http-<status>". Each is set
# where the failure happens; nothing reads a kind back from the message text.
ERROR_KINDS = ("deadline", "connect-timeout", "too-large", "opt-out", "private-address", "redirect-loop",
               "too-many-redirects", "retry-after", "connection", "truncated", "invalid-url", "dns", "tls",
               "bad-response", "internal")


RETRY_STATUSES = {429, 500, 502, 503, 504}
RETRY_AFTER_STATUSES = {429, 503}
REDIRECT_STATUSES = {301, 302, 303, 307, 308}
# Error bodies up to this size are read (and dropped) so the connection can be reused.
DRAIN_LIMIT = 64 * 1024


# -- X-Robots-Tag opt-outs --------------------------------------------------------------------------

OPT_OUT_DIRECTIVES = {"noai", "noimageai", "noindex", "noimageindex"}
# Directives written "name: value"; any other "name:" in front of directives names a user agent.
_VALUED_DIRECTIVES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}


def opt_out_directive(header_values: Iterable[str], user_agent: str) -> str | None:
    """The first opt-out directive in X-Robots-Tag header values that applies to us, or None.

    A directive applies when it is unprefixed (`noai`) or its user-agent prefix names our product
    token, the user agent up to its first "/" (`clipdata: noai`). One naming another agent
    (`googlebot: noindex`) does not apply: the site opted out of that crawler, not of us. As in
    Google's syntax a prefix scopes the directives after it in the same header value.
    """
    ours = user_agent.split("/", 1)[0].strip().lower()
    for value in header_values:
        agent = None  # the header value starts unprefixed
        for item in value.split(","):
            item = item.strip().lower()
            name, colon, rest = item.partition(":")
            if colon and name.strip() not in _VALUED_DIRECTIVES:
                agent, item = name.strip(), rest.strip()
            if item in OPT_OUT_DIRECTIVES and agent in (None, ours):
                return item
    return None


# -- private addresses ----------------------------------------------------------------------------

def is_private_address(address: str) -> bool:
    """True for addresses a web crawler must not reach: loopback, private (RFC 1918, fc00::/7),
    link-local (169.254/16 with the cloud metadata service, fe80::/10), unspecified, multicast,
    reserved, shared (100.64/10) and documentation ranges — anything not globally routable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in NAT64_LOCAL:
            return True   # RFC 8215's local-use translation prefix: a site's own network
        embedded = embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded  # an IPv6 form of an IPv4 address reaches that address: judge it
    return ip.is_multicast or not ip.is_global


# IPv6 forms that carry an IPv4 address and reach it (through a translator, a tunnel or the
# host's own stack): each judged as the IPv4 address it carries, so 64:ff9b::7f00:1 is 127.0.0.1.
NAT64 = ipaddress.ip_network("64:ff9b::/96")             # RFC 6052 well-known prefix
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")     # RFC 8215 local use
SIIT = ipaddress.ip_network("::ffff:0:0:0/96")           # RFC 2765 IPv4-translated (::ffff:0:a.b.c.d)
COMPATIBLE = ipaddress.ip_network("::/96")               # deprecated IPv4-compatible (::a.b.c.d)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, or None: IPv4-mapped (::ffff:a.b.c.d),
    IPv4-translated, IPv4-compatible, NAT64 (64:ff9b::a.b.c.d) and 6to4 (2002:AABB:CCDD::)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64 or ip in SIIT:
        return low
    if ip in COMPATIBLE and int(ip) > 1:   # :: and ::1 are themselves (unspecified, loopback)
        return low
    return None


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]").split("%", 1)[0]))
    except ValueError:
        return None


class PrivateAddressError(OSError):
    """Every address a host name resolved to is private. An OSError, so the connector reports it
    as a failed resolution, which this module turns back into "private address ... refused"."""

    def __init__(self, host: str, address: str):
        super().__init__(f"{host} resolves to private address {address}")
        self.address = address


class PublicOnlyResolver(AbstractResolver):
    """getaddrinfo (in the loop's executor) with the private addresses taken out. The connector
    connects only to what its resolver returns, so this checks the address actually connected to,
    for every host name the connector resolves, redirect targets and rebinding names included."""

    def __init__(self):
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        addresses = await self._inner.resolve(host, port, family)
        public = [a for a in addresses if not is_private_address(a["host"])]
        if addresses and not public:
            raise PrivateAddressError(host, addresses[0]["host"])
        return public

    async def close(self) -> None:
        await self._inner.close()


# -- one batch ------------------------------------------------------------------------------------

@dataclass
class _Outcome:
    """What one attempt (a request and its redirects) ended with."""
    final_url: str
    body: bytes | None = None
    error: str | None = None
    kind: str | None = None  # the error's countable kind (FetchResult.error_kind), set with it
    http_status: int | None = None
    content_type: str | None = None
    retryable: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait, on 429/503
    location: str | None = None  # set on a redirect response
    started: float | None = None  # monotonic time the attempt's first request got its slots


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP-date (never negative); None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _parse_url(url) -> URL | None:
    """The URL if it is an absolute http(s) URL with a host, else None."""
    if not isinstance(url, (str, URL)):
        return None
    try:
        parsed = URL(url)
    except (TypeError, ValueError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return parsed


class _Batch:
    """One fetch_many call: the aiohttp session, the limits and the rows, all living in the
    background thread's event loop. The calling thread only touches `body_slots` and `stop`,
    through loop.call_soon_threadsafe."""

    def __init__(self, urls: list, config: FetchConfig, deliver):
        self.urls, self.config, self.deliver = urls, config, deliver
        # Taken by a request before it starts, given back when it ends without a body, or — for
        # a body — when the caller takes the result: bodies held at once <= concurrency.
        # (asyncio primitives bind to the loop at first use, so they may be made here.)
        self.body_slots = asyncio.Semaphore(config.concurrency)
        self.host_slots: dict[str, asyncio.Semaphore] = {}
        self.stop = asyncio.Event()  # set by the caller when it has every result or gave up
        self.headers = {
            "User-Agent": config.user_agent,
            "Accept": "image/*,*/*;q=0.8",
            # Images are compressed already; identity keeps Content-Length the body's length.
            "Accept-Encoding": "identity",
        }

    async def run(self) -> None:
        config = self.config
        connector = aiohttp.TCPConnector(
            # The batch's own semaphores keep below these; they are a hard cap on sockets.
            limit=config.concurrency,
            limit_per_host=config.per_host_concurrency,
            resolver=None if config.allow_private_addresses else PublicOnlyResolver(),
        )
        session = aiohttp.ClientSession(
            connector=connector,
            # The per-attempt deadline is asyncio.timeout in _attempt; here only the connect.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),  # no state carried from one URL to another
            trust_env=False,  # a proxy from the environment would bypass the address check
        )
        async with session:
            self.session = session
            # One task per URL (a shard is <= ~10k URLs, ~2 KB each): a task waiting for a busy
            # host does not hold up URLs of other hosts.
            tasks = [asyncio.create_task(self._row(i, url)) for i, url in enumerate(self.urls)]
            await self.stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # let the closed transports finish closing before the loop ends

    async def _row(self, index: int, raw_url) -> None:
        """Fetch one URL with its retries and deliver exactly one FetchResult."""
        config = self.config
        started = None  # the row's clock starts at its first request, not while it queues
        attempts = 0
        try:
            url = _parse_url(raw_url)
            if url is None:
                outcome = _Outcome(final_url=str(raw_url), kind="invalid-url", error=f"invalid url {str(raw_url)[:200]!r}")
            else:
                while True:
                    attempts += 1
                    outcome = await self._attempt(url)
                    started = started or outcome.started
                    if outcome.error is None or not outcome.retryable or attempts > config.retries:
                        break
                    if outcome.retry_after is not None:
                        if outcome.retry_after > config.max_retry_after:
                            outcome.error = (f"retry-after {outcome.retry_after:g} s over the "
                                             f"{config.max_retry_after:g} s cap ({outcome.error})")
                            outcome.kind = "retry-after"
                            break
                        delay = outcome.retry_after
                    else:
                        full = config.backoff * 2 ** (attempts - 1)
                        delay = full / 2 + random.uniform(0, full / 2)
                    await asyncio.sleep(delay)
                if outcome.error is not None and attempts > 1 and outcome.retryable:
                    outcome.error += f" after {attempts} attempts"
        except Exception as exc:  # a bug here must cost one row, never hang the caller
            outcome = _Outcome(final_url=str(raw_url), kind="internal", error=f"internal error {failures.describe(exc)}")
        self.deliver(FetchResult(
            # every message in words without run-varying text (an exception's text may quote an
            # object by its address: aiohttp's errors can name an SSL context)
            index=index, url=raw_url, body=outcome.body, error_kind=outcome.kind,
            error=None if outcome.error is None else failures.plain(outcome.error),
            http_status=outcome.http_status, final_url=outcome.final_url,
            content_type=outcome.content_type, attempts=attempts,
            seconds=time.monotonic() - started if started is not None else 0.0,
        ))

    async def _attempt(self, url: URL) -> _Outcome:
        """One attempt: request `url`, follow redirects hop by hop (each hop's address checked),
        all within one deadline that starts when the first hop gets its slots."""
        config = self.config
        loop = asyncio.get_running_loop()
        visited = {str(url)}
        started = deadline = None
        for _hop in range(config.max_redirects + 1):
            refusal = self._refusal(url)
            if refusal is not None:
                return _Outcome(final_url=str(url), kind="private-address", error=refusal, started=started)
            # Host slot first, then a body slot: a request waiting for a busy host holds no body
            # slot that requests to other hosts could use. Both are let go between hops, so a
            # redirect never waits for a slot while holding one (no deadlock across hosts).
            async with self.host_slots.setdefault(url.host, asyncio.Semaphore(config.per_host_concurrency)):
                await self.body_slots.acquire()
                outcome = None
                try:
                    if deadline is None:
                        started, deadline = time.monotonic(), loop.time() + config.timeout
                    async with asyncio.timeout_at(deadline):
                        outcome = await self._request(url)
                except aiohttp.ServerTimeoutError:  # the connect timeout (a TimeoutError too)
                    outcome = _Outcome(final_url=str(url), kind="connect-timeout", error=f"connect timeout ({config.connect_timeout:g} s)",
                                       retryable=True)
                except TimeoutError:
                    outcome = _Outcome(final_url=str(url), kind="deadline", error=f"deadline exceeded ({config.timeout:g} s)",
                                       retryable=True)
                except aiohttp.ClientError as exc:
                    outcome = _client_error(url, exc)
                finally:
                    if outcome is None or outcome.body is None:
                        self.body_slots.release()  # else the caller releases it with the result
            outcome.started = started
            if outcome.location is None:
                return outcome
            try:
                target = _parse_url(url.join(URL(outcome.location)))  # a relative one resolved
            except ValueError:
                target = None
            if target is None:
                return _Outcome(final_url=str(url), http_status=outcome.http_status, started=started,
                                kind="invalid-url", error=f"invalid url in redirect {outcome.location[:200]!r}")
            if str(target) in visited:
                return _Outcome(final_url=str(target), http_status=outcome.http_status, started=started,
                                kind="redirect-loop", error="redirect loop")
            visited.add(str(target))
            url = target
        return _Outcome(final_url=str(url), started=started, kind="too-many-redirects", error=f"too many redirects ({config.max_redirects})")

    def _refusal(self, url: URL) -> str | None:
        """Literal IP hosts skip the resolver, so they are checked here, before connecting."""
        if self.config.allow_private_addresses:
            return None
        address = _literal_ip(url.host)
        if address is not None and is_private_address(address):
            return f"private address {address} refused"
        return None

    async def _request(self, url: URL) -> _Outcome:
        """One HTTP request without following redirects."""
        config = self.config
        async with self.session.get(url, headers=self.headers, allow_redirects=False) as response:
            status = response.status
            if status in REDIRECT_STATUSES or not 200 <= status < 300:
                await _drain(response)
            if status in REDIRECT_STATUSES:
                location = response.headers.get("Location")
                if not location:
                    return _Outcome(final_url=str(url), http_status=status, kind=f"http-{status}", error=f"http {status} without location")
                return _Outcome(final_url=str(url), http_status=status, location=location)
            if not 200 <= status < 300:
                retry_after = None
                if status in RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return _Outcome(final_url=str(url), http_status=status, kind=f"http-{status}", error=f"http {status}",
                                retryable=status in RETRY_STATUSES, retry_after=retry_after)

            done = dict(final_url=str(url), http_status=status, content_type=response.headers.get("Content-Type"))
            if config.respect_opt_outs:
                directive = opt_out_directive(response.headers.getall("X-Robots-Tag", []), config.user_agent)
                if directive is not None:
                    return _Outcome(**done, kind="opt-out", error=f"opted out: X-Robots-Tag {directive}")
            announced = response.content_length
            if announced is not None and announced > config.max_body_bytes:
                return _Outcome(**done, kind="too-large", error=f"body over {config.max_body_bytes} bytes (Content-Length {announced})")
            chunks, size = [], 0
            try:
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > config.max_body_bytes:
                        return _Outcome(**done, kind="too-large", error=f"body over {config.max_body_bytes} bytes")
                    chunks.append(chunk)
            except aiohttp.ClientPayloadError as exc:
                # aiohttp says "payload not completed" both for a close and for a reset; only its
                # message tells them apart.
                if "ConnectionResetError" in str(exc):
                    return _Outcome(**done, kind="connection", error=f"connection reset (after {size} bytes)", retryable=True)
                of = f"of {announced} bytes" if announced is not None else "bytes, chunked"
                return _Outcome(**done, kind="truncated", error=f"truncated body (got {size} {of})", retryable=True)
            return _Outcome(**done, body=b"".join(chunks))


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read a small error or redirect body so the connection goes back to the pool; a large or
    unannounced one is left unread and the connection is closed instead."""
    length = response.content_length
    if length is not None and length <= DRAIN_LIMIT:
        try:
            await response.read()
        except aiohttp.ClientError:
            pass  # the status is what the row reports; the connection is dropped


def _client_error(url: URL, exc: aiohttp.ClientError) -> _Outcome:
    """An aiohttp exception as an outcome with a stable error prefix, retryable or not."""
    where = str(url)
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, PrivateAddressError):
            return _Outcome(final_url=where, kind="private-address", error=f"private address {os_error.address} refused")
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            # Not retried: a name that does not resolve now will not a second later.
            return _Outcome(final_url=where, kind="dns", error=f"dns failure {url.host}: {os_error}")
        if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
            return _Outcome(final_url=where, kind="tls", error=f"tls error {exc}")
        if isinstance(os_error, ConnectionRefusedError):
            return _Outcome(final_url=where, kind="connection", error=f"connection refused {url.host}:{url.port}", retryable=True)
        return _Outcome(final_url=where, kind="connection", error=f"connection error {os_error}", retryable=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return _Outcome(final_url=where, kind="invalid-url", error=f"invalid url {exc}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return _Outcome(final_url=where, kind="connection", error="connection closed before the response", retryable=True)
    if isinstance(exc, aiohttp.ClientConnectionResetError) or (
            isinstance(exc, aiohttp.ClientOSError) and exc.errno == errno.ECONNRESET):
        return _Outcome(final_url=where, kind="connection", error="connection reset", retryable=True)
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or headers
        return _Outcome(final_url=where, kind="bad-response", error=f"bad response {exc.message}")
    return _Outcome(final_url=where, kind="connection", error=f"connection error {failures.describe(exc)}", retryable=True)


# -- the synchronous API --------------------------------------------------------------------------

def fetch_many(urls: Iterable[str], config: FetchConfig | None = None) -> Iterator[FetchResult]:
    """Fetch every URL; yield one FetchResult per input URL, in completion order.

    The event loop runs in a background thread started on the first next() and joined when the
    generator ends (exhausted, closed or garbage-collected), so each call starts and stops its own
    loop, session and connections. At most `config.concurrency` results holding a body exist that
    the caller has not moved past: a result's slot is given back when the caller asks for the next.
    """
    config = config or FetchConfig()
    urls = list(urls)
    if not urls:
        return
    results: queue.SimpleQueue = queue.SimpleQueue()
    loop = asyncio.new_event_loop()
    batch = _Batch(urls, config, results.put)
    thread = threading.Thread(target=_run_loop, args=(loop, batch, results.put), name="clipdata-fetch", daemon=True)
    thread.start()
    try:
        for _ in range(len(urls)):
            result = results.get()
            if isinstance(result, BaseException):
                raise RuntimeError("the fetch event loop failed") from result
            yield result
            if result.body is not None:
                _call_in_loop(loop, batch.body_slots.release)
    finally:
        _call_in_loop(loop, batch.stop.set)
        thread.join()


def fetch_all(urls: Iterable[str], config: FetchConfig | None = None) -> list[FetchResult]:
    """fetch_many, collected into a list in input order (every body in memory at once)."""
    urls = list(urls)
    ordered: list[FetchResult | None] = [None] * len(urls)
    for result in fetch_many(urls, config):
        ordered[result.index] = result
    return ordered  # type: ignore[return-value]


def _run_loop(loop: asyncio.AbstractEventLoop, batch: _Batch, deliver) -> None:
    """The background thread: run the batch, then shut the loop down completely (the resolver's
    executor threads included) so nothing outlives the call."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(batch.run())
    except BaseException as exc:  # the caller is blocked on the queue: hand it the failure
        deliver(exc)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _call_in_loop(loop: asyncio.AbstractEventLoop, callback) -> None:
    try:
        loop.call_soon_threadsafe(callback)
    except RuntimeError:
        pass  # the loop already ended (it failed); nothing is left to release or stop
