#!/usr/bin/env python3
"""Drives headless Chromium through pivotd's debug page, for tests/ui.rs.

Speaks the Chrome DevTools Protocol over --remote-debugging-pipe (the browser reads commands
on fd 3 and writes answers and events on fd 4, each a JSON message ended by NUL), with the
standard library only. Opens BASE/ui, types the API key into the login form and presses
Enter, follows the first call's link, saves a screenshot to SCREENSHOT and prints one JSON
object: the list page's text, the call page's URL, title, timeline rows and text, and any
JavaScript dialog that opened (a script that ran). Exits non-zero with the reason on stderr
when something fails or DEADLINE seconds pass.

usage: browse.py BASE_URL API_KEY SCREENSHOT [DEADLINE_S]
"""

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time


class Browser:
    def __init__(self, deadline):
        self.deadline = deadline
        self.profile = tempfile.mkdtemp(prefix="pivotd-ui-chromium-")
        cmd_r, self.cmd_w = os.pipe()  # we write commands, the browser reads fd 3
        self.evt_r, evt_w = os.pipe()  # the browser writes fd 4, we read
        # A file, not a pipe nobody reads: a chatty browser must not block on it.
        self.stderr = tempfile.TemporaryFile()

        def fds():
            os.dup2(cmd_r, 3)
            os.dup2(evt_w, 4)
            # Its own process group: killed whole (renderers, GPU helper) at the end.
            os.setpgrp()

        self.proc = subprocess.Popen(
            [
                "chromium",
                "--headless=new",
                "--no-sandbox",  # the tests run as root
                "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                "--window-size=1280,1000",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            preexec_fn=fds,
            pass_fds=(3, 4),
        )
        os.close(cmd_r)
        os.close(evt_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def left(self):
        t = self.deadline - time.monotonic()
        if t <= 0:
            raise TimeoutError("the browser did not finish in time")
        return t

    def _read_message(self):
        while b"\0" not in self.buf:
            ready, _, _ = select.select([self.evt_r], [], [], self.left())
            if not ready:
                raise TimeoutError("no message from the browser in time")
            chunk = os.read(self.evt_r, 1 << 20)
            if not chunk:
                self.stderr.seek(0)
                err = self.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"the browser closed its pipe; stderr:\n{err}")
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            n = os.write(self.cmd_w, data)
            data = data[n:]
        while True:
            m = self._read_message()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method):
        """The next event `method` of our page (a kept one first)."""
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message())

    def dialogs(self):
        return [
            e["params"].get("message", "")
            for e in self.events
            if e.get("method") == "Page.javascriptDialogOpening"
        ]

    def load(self, action):
        """Runs `action` (which starts a navigation) and waits for the page's load event."""
        self.events = [e for e in self.events if e.get("method") != "Page.loadEventFired"]
        action()
        self.wait_event("Page.loadEventFired")

    def eval(self, expr):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    base, key, shot = sys.argv[1], sys.argv[2], sys.argv[3]
    limit = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
    if shutil.which("chromium") is None:
        sys.exit("chromium is not installed (Debian's chromium package)")
    b = Browser(time.monotonic() + limit)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"}, session=False)
        att = b.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        b.session = att["sessionId"]
        b.send("Page.enable")
        b.send("Runtime.enable")
        b.load(lambda: b.send("Page.navigate", {"url": f"{base}/ui"}))
        login_title = b.eval("document.title")
        # Type the key as a user would, and press Enter in the field.
        doc = b.send("DOM.getDocument")
        field = b.send(
            "DOM.querySelector", {"nodeId": doc["root"]["nodeId"], "selector": "#api_key"}
        )
        if not field.get("nodeId"):
            raise RuntimeError(f"no login form on {base}/ui ({login_title})")
        b.send("DOM.focus", {"nodeId": field["nodeId"]})
        b.send("Input.insertText", {"text": key})

        def enter():
            for kind in ("keyDown", "keyUp"):
                b.send(
                    "Input.dispatchKeyEvent",
                    {
                        "type": kind,
                        "key": "Enter",
                        "code": "Enter",
                        "windowsVirtualKeyCode": 13,
                        "text": "\r" if kind == "keyDown" else "",
                    },
                )

        b.load(enter)
        list_text = b.eval("document.body.innerText")
        link = b.eval("(document.querySelector('a.call') || {}).href || ''")
        if not link:
            html = b.eval("location.href + '\\n' + document.documentElement.outerHTML")
            raise RuntimeError(f"no call listed after logging in:\n{html}")
        b.load(lambda: b.send("Page.navigate", {"url": link}))
        page = b.eval(
            """({
              url: location.href,
              title: document.title,
              timeline: [...document.querySelectorAll('#timeline tr')].map(r => r.innerText),
              text: document.body.innerText,
              cookie_visible: document.cookie,
            })"""
        )
        shot_png = b.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
        with open(shot, "wb") as f:
            f.write(base64.b64decode(shot_png["data"]))
        page.update(
            login_title=login_title,
            list_text=list_text,
            screenshot=os.path.abspath(shot),
            dialogs=b.dialogs(),
        )
        print(json.dumps(page))
    finally:
        b.close()


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the reason, for the Rust test's panic message
        sys.exit(f"browse.py: {type(e).__name__}: {e}")
