"""Headless Chromium driven over the DevTools protocol on a pipe: load a page as a reader's browser
does, see what failed, take a screenshot. No Python browser package and no websocket: Chromium's
`--remote-debugging-pipe` reads commands from fd 3 and writes answers and events to fd 4, each a
JSON message ended by a NUL byte.

    with Browser() as browser:                       # skip the test where no Chromium is installed
        page = browser.load("/abs/path/index.html", width=1280)
        page.images        # every <img>: alt text, loaded or not, natural size
        page.errors        # console errors, uncaught exceptions, failed resource loads
        page.overflow_px   # how far the content is wider than the window (0: no sideways scroll)
        browser.screenshot("out.png", width=1280, height=1600)

    python tests/browser.py demo_output/index.html pipeline/demo/demo_report.png   # README screenshot

Chromium is Debian's `chromium` (`make system-deps` installs it); `chromium_path()` finds it or
returns None.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


@dataclass
class Page:
    url: str
    images: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    overflow_px: int = 0
    title: str = ""
    text: str = ""


# The page's state a test checks, read in the page after its load event.
_STATE_JS = """JSON.stringify({
  title: document.title,
  text: document.body ? document.body.innerText : "",
  overflow: Math.max(0, document.documentElement.scrollWidth - window.innerWidth),
  images: Array.from(document.images).map(i => ({alt: i.alt, loaded: i.complete && i.naturalWidth > 0,
                                                   width: i.naturalWidth, height: i.naturalHeight,
                                                   shown_width: i.width}))
})"""


class Browser:
    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or chromium_path()
        if not self.executable:
            raise BrowserError("no Chromium found: install Debian's chromium (make system-deps)")
        self.timeout = timeout
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self._events: list[dict] = []
        self._cond = threading.Condition()
        self._session = None

    # -- the process and the pipe

    def __enter__(self) -> "Browser":
        self._profile = tempfile.mkdtemp(prefix="clipdata-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds_3_and_4():  # runs in the child before exec: the protocol's fixed descriptors
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        args = [self.executable, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
                "--disable-dev-shm-usage", "--disable-extensions", f"--user-data-dir={self._profile}", "about:blank"]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, preexec_fn=fds_3_and_4, pass_fds=(3, 4))
        os.close(to_child_r)
        os.close(from_child_w)
        threading.Thread(target=self._read, daemon=True).start()
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self._call(f"{domain}.enable", session=True)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._events.append({"method": "_closed"})
                    self._cond.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self._events.append(message)
                self._cond.notify_all()

    def _call(self, method: str, session: bool = False, timeout: float | None = None, **params) -> dict:
        self._next_id += 1
        call_id = self._next_id
        message = {"id": call_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while call_id not in self._answers:
                if any(e["method"] == "_closed" for e in self._events):
                    raise BrowserError(f"Chromium exited during {method}")
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise BrowserError(f"no answer to {method} in {timeout or self.timeout:.0f} s")
            answer = self._answers.pop(call_id)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def _wait_event(self, method: str, since: int) -> dict:
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                for event in self._events[since:]:
                    if event["method"] == method:
                        return event
                if not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise BrowserError(f"no {method} in {self.timeout:.0f} s")

    # -- what a test uses

    def load(self, path_or_url: str, width: int = 1280, height: int = 800) -> Page:
        """Open the page in a window of width x height CSS pixels and wait for its load event."""
        url = path_or_url if "://" in path_or_url else "file://" + os.path.abspath(path_or_url)
        self._call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                   deviceScaleFactor=1, mobile=False)
        with self._cond:
            since = len(self._events)
        answer = self._call("Page.navigate", session=True, url=url)
        if answer.get("errorText"):
            raise BrowserError(f"could not open {url}: {answer['errorText']}")
        self._wait_event("Page.loadEventFired", since)
        state = json.loads(self._call("Runtime.evaluate", session=True, expression=_STATE_JS,
                                      returnByValue=True)["result"]["value"])
        with self._cond:
            events = self._events[since:]
        return Page(url=url, images=state["images"], errors=_errors(events), overflow_px=state["overflow"],
                    title=state["title"], text=state["text"])

    def screenshot(self, path: str, width: int = 1280, height: int | None = None) -> None:
        """A PNG of the loaded page, width CSS pixels wide, from the top down to height (the whole
        page when None)."""
        metrics = self._call("Page.getLayoutMetrics", session=True)
        full = int(metrics["cssContentSize"]["height"])
        clip = {"x": 0, "y": 0, "width": width, "height": min(full, height or full), "scale": 1}
        data = self._call("Page.captureScreenshot", session=True, format="png", clip=clip,
                          captureBeyondViewport=True)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def _errors(events: list[dict]) -> list[str]:
    """Console errors, uncaught exceptions and the browser's own error log (failed loads), as text."""
    found = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.append("exception: " + (details.get("exception", {}).get("description") or details.get("text", "")))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            found.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tests/browser.py PAGE.html SCREENSHOT.png", file=sys.stderr)
        return 2
    with Browser() as browser:
        page = browser.load(argv[0])
        broken = [i["alt"] for i in page.images if not i["loaded"]]
        if page.errors or broken:
            print(f"{argv[0]}: {len(page.errors)} errors, images not loaded: {broken}", file=sys.stderr)
            for error in page.errors:
                print("  " + error, file=sys.stderr)
            return 1
        browser.screenshot(argv[1], width=1280, height=1500)
    print(f"wrote {argv[1]} from {argv[0]} ({len(page.images)} images, all loaded, no errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
