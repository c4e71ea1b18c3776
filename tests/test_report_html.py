"""report.html in a real browser: headless Chromium, driven over the DevTools protocol (a pipe, no extra
package), at a laptop's and a phone's width. Every image loads, nothing runs off the page (tables scroll inside
their own box), the Markdown is rendered (italics, no literal asterisks).

Skips when Chromium is not installed, except under CI (the environment variable ``CI`` set), where it fails:
CI installs it (``apt-get install -y chromium``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.commands.cli import main

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTHS = (1400, 420)
JOB = ["--labs", "xor_mlp,mnist_relu_xavier,mnist_batchnorm", "--steps", "130", "--data", "mnist-5k",
       "--init-steps", "10", "--no-noise", "--quiet"]

CHECK = """(async () => {
  const images = [...document.images];
  await Promise.all(images.map(i => i.decode().catch(() => null)));
  const page = document.documentElement.clientWidth;
  const outside = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('.scroll') && el.tagName !== 'DIV') continue;  // inside a table's own scrolling box
    const r = el.getBoundingClientRect();
    const off = r.right > page + 0.5 || r.left < -0.5;
    if (r.width && off) outside.push(el.tagName + ': ' + el.textContent.slice(0, 50));
  }
  return {innerWidth: window.innerWidth, clientWidth: page, scrollWidth: document.documentElement.scrollWidth,
          images: images.map(i => ({natural: i.naturalWidth, shown: i.getBoundingClientRect().width,
                                    attr: +i.getAttribute('width')})),
          tables: [...document.querySelectorAll('table')].map(t => ({
              wrapped: t.parentElement.classList.contains('scroll'),
              scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth + 0.5})),
          emphasis: [...document.querySelectorAll('em')].map(e => e.textContent),
          asterisks: (document.body.innerText.match(/\\*[a-z][^*\\n]*\\*/g) || []),
          outside};
})()"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("CI is set but no Chromium is installed: the report's browser check must run in CI "
                    "(apt-get install -y chromium)")
    pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium): report.html is not checked in a "
                "browser here")


class DevTools:
    """A headless Chromium and its DevTools protocol over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out,
    messages JSON with a NUL after each)."""

    def __init__(self, browser: str, profile: Path) -> None:
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                 "--no-first-run", "--remote-debugging-pipe", f"--user-data-dir={profile}"]
        command = " ".join(shlex.quote(a) for a in (browser, *flags)) + f" 3<&{to_child} 4>&{from_child}"
        self.proc = subprocess.Popen(["bash", "-c", f"exec {command}"], pass_fds=(to_child, from_child),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child)
        os.close(from_child)
        self._reader = os.fdopen(self._from_browser, "rb")
        self._next = 0
        self.events: list[dict] = []
        self.session: str | None = None

    def send(self, method: str, **params: object) -> dict:
        """Call ``method`` (in the attached page once there is one) and wait for its result."""
        self._next += 1
        message: dict = {"id": self._next, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        """The next event ``method`` (one already received counts)."""
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read())

    def _read(self) -> dict:
        buf = bytearray()
        while (byte := self._reader.read(1)) != b"\0":
            if not byte:
                raise RuntimeError("the browser closed the DevTools pipe")
            buf += byte
        return json.loads(buf)

    def close(self) -> None:
        """End the browser (this process started it)."""
        with contextlib.suppress(OSError):
            os.close(self._to_browser)
        self._reader.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def browser_page(tmp_path: Path) -> Iterator[DevTools]:
    """A DevTools session attached to a fresh page of a headless Chromium."""
    tools = DevTools(_browser(), tmp_path / "profile")
    try:
        target = tools.send("Target.createTarget", url="about:blank")["targetId"]
        tools.session = tools.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        tools.send("Page.enable")
        yield tools
    finally:
        tools.close()


def look(tools: DevTools, url: str, width: int, screenshot: Path) -> dict:
    """Open ``url`` at ``width`` CSS pixels (a phone below 600: mobile viewport, as a phone lays pages out),
    save a full-page screenshot, and return what :data:`CHECK` measures."""
    tools.send("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
               mobile=width < 600)
    tools.send("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired")
    result = tools.send("Runtime.evaluate", expression=CHECK, awaitPromise=True, returnByValue=True)
    size = tools.send("Page.getLayoutMetrics")["cssContentSize"]
    shot = tools.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": width, "height": min(size["height"], 16000), "scale": 1})
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return result["result"]["value"]


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """A small real report (three labs, a few steps each; the batch-norm lab's wide per-epoch tables)."""
    _browser()
    out = tmp_path_factory.mktemp("html") / "report"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["report", "--out", str(out), *JOB]) == 0
    return out / "report.html"


@pytest.mark.parametrize("width", WIDTHS)
def test_report_reads_in_a_browser(report_html, tmp_path, width):
    shots = Path(os.environ.get("REPORT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with browser_page(tmp_path) as tools:
        seen = look(tools, report_html.as_uri(), width, shots / f"report-{width}.png")
    assert seen["innerWidth"] == width, "the page is not laid out at the device's width (viewport meta)"
    assert seen["scrollWidth"] <= seen["clientWidth"], f"the page scrolls sideways: {seen['outside'][:5]}"
    assert not seen["outside"], seen["outside"][:5]
    images = seen["images"]
    assert len(images) == 6  # three labs, the batch-norm epochs, the init study, the throughput
    for image in images:
        assert image["natural"] > 0, "an image did not load"
        assert image["shown"] <= seen["clientWidth"]
        assert image["natural"] > image["shown"], "the PNG has fewer pixels than it is shown with"
    assert seen["tables"] and all(t["wrapped"] for t in seen["tables"])
    if width < 600:
        assert any(t["scrolls"] for t in seen["tables"]), "no wide table here: the check of their boxes is idle"
    else:
        assert all(img["shown"] == img["attr"] for img in images), "a laptop shows the figures at full size"
    assert "raw pixels" in seen["emphasis"] and not seen["asterisks"], seen["asterisks"]


def test_the_browser_check_catches_planted_faults(tmp_path):
    """A page without the viewport meta, with a wide table outside a scrolling box and an image that does not
    load: the same measurements see each fault."""
    wide = "<table><tr>" + "".join(f"<td>column{i}</td>" for i in range(30)) + "</tr></table>"
    page = tmp_path / "bad.html"
    page.write_text(f"<!DOCTYPE html><html><body>{wide}<img src='data:image/png;base64,AAAA' alt='x'>"
                    "<p>*not rendered*</p></body></html>")
    with browser_page(tmp_path) as tools:
        seen = look(tools, page.as_uri(), 420, tmp_path / "bad.png")
    assert seen["innerWidth"] != 420  # a phone lays out a page without the viewport meta at desktop width
    assert seen["outside"] or seen["scrollWidth"] > seen["clientWidth"]
    assert [t["wrapped"] for t in seen["tables"]] == [False]
    assert seen["images"][0]["natural"] == 0
    assert seen["asterisks"] == ["*not rendered*"]
