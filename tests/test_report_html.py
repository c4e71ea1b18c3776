"""report.html in a real browser: headless Chromium, driven over the DevTools protocol (a pipe, no extra
package), at a desktop's (1440x900) and a phone's (390x844) size. Every image loads and links to its file at
full resolution, nothing runs off the page (tables scroll inside their own box), a table scrolls only where
its box already takes the page's whole width, no name is broken inside a word (names wrap after an underscore
if at all), the Markdown is rendered (italics, no literal asterisks).

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
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from harness.commands.cli import main
from harness.report.doc import png_size

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
SIZES = {1440: 900, 390: 844}  # a desktop, a phone (CSS pixels)
JOB = ["--labs", "xor_mlp,mnist_relu_xavier,mnist_batchnorm", "--steps", "130", "--data", "mnist-5k",
       "--init-steps", "10", "--no-noise", "--quiet"]

CHECK = """(async () => {
  function brokenWords() {  // a line break between two letters or digits of a cell's or a code span's text
    const found = [], range = document.createRange(), alnum = /[A-Za-z0-9]/;
    for (const root of document.querySelectorAll('td, th, code')) {
      if (root.tagName === 'CODE' && root.closest('td, th')) continue;  // its cell covers it
      const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
      let prev = null;
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (let i = 0; i < node.length; i++) {
          range.setStart(node, i); range.setEnd(node, i + 1);
          const r = range.getClientRects()[0];
          if (!r) continue;
          const ch = node.data[i];
          if (prev && alnum.test(prev.ch) && alnum.test(ch) && r.top > prev.top + prev.height / 2)
            found.push(root.textContent.slice(0, 60));
          prev = {ch, top: r.top, height: r.height};
        }
      }
    }
    return found;
  }
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
                                    attr: +i.getAttribute('width'), href: i.closest('a') && i.closest('a').href})),
          tables: [...document.querySelectorAll('table')].map(t => ({
              wrapped: t.parentElement.classList.contains('scroll'),
              box: t.parentElement.getBoundingClientRect().width,
              scrolls: t.parentElement.scrollWidth > t.parentElement.clientWidth + 0.5})),
          content: (() => { const s = getComputedStyle(document.body);  // the room the viewport gives the page
                            return page - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight); })(),
          broken: brokenWords(),
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


def look(tools: DevTools, url: str, width: int, screenshot: Path, height: int = 900) -> dict:
    """Open ``url`` at ``width`` x ``height`` CSS pixels (a phone below 600: mobile viewport, as a phone lays
    pages out), save a full-page screenshot, and return what :data:`CHECK` measures."""
    tools.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
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


def opened(tools: DevTools, url: str) -> int:
    """The pixel width of the image the browser shows at ``url`` (an image file opens as a page of one image)."""
    tools.send("Page.navigate", url=url)
    tools.wait_for("Page.loadEventFired")
    shown = tools.send("Runtime.evaluate", expression="document.images.length ? document.images[0].naturalWidth : 0",
                       returnByValue=True)
    return shown["result"]["value"]


@pytest.mark.parametrize("width", SIZES)
def test_report_reads_in_a_browser(report_html, tmp_path, width):
    shots = Path(os.environ.get("REPORT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with browser_page(tmp_path) as tools:
        seen = look(tools, report_html.as_uri(), width, shots / f"report-{width}.png", SIZES[width])
        full = {image["href"]: opened(tools, image["href"]) for image in seen["images"] if image["href"]}
    assert seen["innerWidth"] == width, "the page is not laid out at the device's width (viewport meta)"
    assert seen["scrollWidth"] <= seen["clientWidth"], f"the page scrolls sideways: {seen['outside'][:5]}"
    assert not seen["outside"], seen["outside"][:5]
    images = seen["images"]
    assert len(images) == 7  # three labs, the batch-norm epochs, the init study, the precision section, the throughput
    for image in images:
        assert image["natural"] > 0, "an image did not load"
        assert image["shown"] <= seen["clientWidth"]
        assert image["natural"] > image["shown"], "the PNG has fewer pixels than it is shown with"
        assert image["href"], "an image is not a link to its full-size file"
        path = Path(url2pathname(urlparse(image["href"]).path))
        assert path.parent.parent == report_html.parent and png_size(path.read_bytes())[0] == image["natural"]
        assert full[image["href"]] == image["natural"], "the image does not open at full resolution"
    assert not seen["broken"], f"names broken inside a word: {seen['broken'][:5]}"
    assert seen["tables"] and all(t["wrapped"] for t in seen["tables"])
    cut = [t for t in seen["tables"] if t["scrolls"] and t["box"] < seen["content"] - 1]
    assert not cut, f"a table scrolls in a box narrower than the page ({seen['content']} px): {cut[:3]}"
    if width < 600:
        assert any(t["scrolls"] for t in seen["tables"]), "no wide table here: the check of their boxes is idle"
    else:
        assert all(img["shown"] == img["attr"] for img in images), "a laptop shows the figures at full size"
    assert "raw pixels" in seen["emphasis"] and not seen["asterisks"], seen["asterisks"]


def test_the_browser_check_catches_planted_faults(tmp_path):
    """A page without the viewport meta, with a wide table outside a scrolling box and an image that does not
    load: the same measurements see each fault."""
    wide = "<table><tr>" + "".join(f"<td>column{i}</td>" for i in range(30)) + "</tr></table>"
    boxed = "<div class='scroll' style='width: 200px; overflow-x: auto'>" + wide + "</div>"
    name = "<table style='width: 60px'><tr><td style='overflow-wrap: anywhere'>mnist_deep_xavier</td></tr></table>"
    page = tmp_path / "bad.html"
    page.write_text(f"<!DOCTYPE html><html><body>{wide}{boxed}{name}<img src='data:image/png;base64,AAAA' alt='x'>"
                    "<p>*not rendered*</p></body></html>")
    with browser_page(tmp_path) as tools:
        seen = look(tools, page.as_uri(), 420, tmp_path / "bad.png")
    assert seen["innerWidth"] != 420  # a phone lays out a page without the viewport meta at desktop width
    assert seen["outside"] or seen["scrollWidth"] > seen["clientWidth"]
    assert [t["wrapped"] for t in seen["tables"]] == [False, True, False]
    boxed = seen["tables"][1]
    assert boxed["scrolls"] and boxed["box"] < seen["content"] - 1  # cut while the page has room
    assert set(seen["broken"]) == {"mnist_deep_xavier"}  # broken inside the name (twice, at 60 px)
    assert seen["images"][0]["natural"] == 0 and seen["images"][0]["href"] is None
    assert seen["asterisks"] == ["*not rendered*"]
