"""A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol: open a page, run a
script in it, take a screenshot."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import httpx
import websocket


class Browser:
    """One Chromium process with one page; a context manager that stops it and removes its profile."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.profile = Path(tempfile.mkdtemp(prefix="rtserve-chromium-"))
        self.proc: subprocess.Popen[str] | None = None
        self.page: websocket.WebSocket | None = None
        self._id = 0

    def __enter__(self) -> Self:
        binary = shutil.which("chromium") or "chromium"
        self.proc = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1280,900",
             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={self.profile}", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        active = self.profile / "DevToolsActivePort"  # its first line: the port chromium picked
        deadline = time.monotonic() + 30
        while not (active.exists() and active.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start listening for DevTools")
            time.sleep(0.05)
        port = active.read_text().split()[0]
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list").json()
        page = next(t for t in targets if t["type"] == "page")
        self.page = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.page is not None:
            self.page.close()
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.page is not None
        self._id += 1
        self.page.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.page.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, script: str) -> Any:
        """The value of `script` (an expression, awaited if it is a promise)."""
        result = self.call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"].get("exception", {}).get("description", result["exceptionDetails"]))
        return result["result"].get("value")

    def wait_for(self, script: str, timeout_s: float = 15) -> Any:
        """Poll `script` until it is truthy."""
        deadline = time.monotonic() + timeout_s
        while not (value := self.evaluate(script)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"not true within {timeout_s} s: {script}")
            time.sleep(0.1)
        return value

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
