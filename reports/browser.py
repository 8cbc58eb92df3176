"""Open a report page in headless Chromium: check it renders cleanly, take a screenshot.

Two signals, both read without a DevTools client:

* the DOM after load (``--dump-dom`` with a virtual-time budget, so the page's load handlers
  have run): the report's inline scripts write ``data-broken-images`` (images whose
  ``naturalWidth`` is 0) on ``<body>`` and ``data-console-errors`` (script errors,
  ``console.error`` calls, failed resource loads) on ``<html>``;
* Chromium's own log (``--enable-logging=stderr --v=0``), where every console message of the
  page appears as an ``INFO:CONSOLE`` line -- this also catches errors raised before the
  page's counter script ran. The report logs nothing, so any such line is a problem.

``--remote-debugging-pipe`` would give the same through the DevTools protocol, but needs a
hand-written CDP client over file descriptors 3/4; the two signals above need none.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trainers.errors import WenError

__all__ = ["BrowserError", "PageCheck", "chromium_path", "inspect_html", "screenshot_html"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
)
_CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)\]\s*(.*)")


class BrowserError(WenError, RuntimeError):
    """Chromium is missing or failed; the message says how to install or what went wrong."""


@dataclass
class PageCheck:
    """What headless Chromium saw on a page."""

    checked: bool  # the page's load handler ran
    images: int
    broken_images: int
    console_errors: int  # counted by the page's own script
    console_messages: list[str] = field(default_factory=list)  # from Chromium's log

    @property
    def ok(self) -> bool:
        """Loaded, every image decoded, no error and no console message."""
        return (
            self.checked
            and self.broken_images == 0
            and self.console_errors == 0
            and not self.console_messages
        )


def chromium_path() -> str:
    """The Chromium executable: ``$WEN_CHROMIUM``, else ``chromium`` (or a known alias) on PATH."""
    override = os.environ.get("WEN_CHROMIUM")
    if override:
        return override
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError(
        "chromium is not installed: run `bash scripts/install-system-deps.sh` (Debian/Ubuntu), "
        "or set WEN_CHROMIUM to a Chromium/Chrome executable"
    )


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="wen-chromium-") as profile:
        cmd = [chromium_path(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(
                f"chromium did not finish within {timeout:g} s: {' '.join(cmd)}"
            ) from None


def _attr(dom: str, tag: str, name: str) -> str | None:
    match = re.search(rf"<{tag}\b[^>]*\b{name}=\"([^\"]*)\"", dom)
    return match.group(1) if match else None


def inspect_html(path: str | Path, timeout: float = 120.0, budget_ms: int = 10000) -> PageCheck:
    """Load ``path`` in headless Chromium and report broken images and console errors."""
    page = Path(path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"page {page} does not exist")
    proc = _run([f"--virtual-time-budget={budget_ms}", "--dump-dom", page.as_uri()], timeout)
    dom = proc.stdout
    if proc.returncode != 0 or "<html" not in dom:
        raise BrowserError(
            f"chromium could not render {page} (exit {proc.returncode}): {proc.stderr[-800:]}"
        )
    messages = [m.group(1) for m in map(_CONSOLE.search, proc.stderr.splitlines()) if m]
    return PageCheck(
        checked=_attr(dom, "body", "data-checked") == "1",
        images=int(_attr(dom, "body", "data-images") or 0),
        broken_images=int(_attr(dom, "body", "data-broken-images") or 0),
        console_errors=int(_attr(dom, "html", "data-console-errors") or 0),
        console_messages=messages,
    )


def screenshot_html(
    path: str | Path, png: str | Path, width: int = 1280, height: int = 1600, timeout: float = 120.0
) -> Path:
    """Render ``path`` headless at ``width`` x ``height`` px and save the view as ``png``."""
    page = Path(path).resolve()
    out = Path(png).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    proc = _run(
        [
            f"--window-size={width},{height}",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        timeout,
    )
    if proc.returncode != 0 or not out.is_file():
        raise BrowserError(
            f"chromium wrote no screenshot of {page} (exit {proc.returncode}): {proc.stderr[-800:]}"
        )
    return out
