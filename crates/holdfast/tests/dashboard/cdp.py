#!/usr/bin/env python3
"""A minimal driver of headless Chromium over the DevTools protocol, for the dashboard
test (crates/holdfast/tests/dashboard.rs), with nothing but the standard library.

Chromium speaks the protocol on a pipe (--remote-debugging-pipe: it reads
NUL-terminated JSON messages on fd 3 and writes them on fd 4), so no WebSocket client
is needed. The test sends one JSON command per line on stdin and reads one JSON answer
per line on stdout:

  {"navigate": URL}            -> {"ok": true}
  {"eval": JS}                 -> {"ok": true, "value": ...}  (promises are awaited)
  {"screenshot": PATH}         -> {"ok": true}
  {"quit": true}               -> {"ok": true}, then exits

Errors are answered as {"ok": false, "error": "..."}.

Usage: cdp.py CHROMIUM WIDTH HEIGHT
"""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile


class Browser:
    def __init__(self, chromium, width, height):
        self.profile = tempfile.mkdtemp(prefix="holdfast-chromium-")
        # fd 3: what chromium reads; fd 4: what it writes.
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        args = [
            chromium,
            "--headless=new",
            "--remote-debugging-pipe",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-extensions",
            "--hide-scrollbars",
            "--user-data-dir=" + self.profile,
            "--window-size=%d,%d" % (width, height),
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")
        self.proc = subprocess.Popen(
            args,
            preexec_fn=fds,
            # Python's other fds are not inheritable: exec closes them. (With
            # close_fds, fds 3 and 4 would be closed after preexec_fn made them.)
            close_fds=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.profile, "chromium.log"), "wb"),
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self.buffer = b""
        self.next_id = 0
        self.session = None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call(
            "Target.attachToTarget", targetId=page["targetId"], flatten=True
        )["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def send(self, method, params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.to_child, json.dumps(message).encode() + b"\0")
        return self.next_id

    def receive(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method, **params):
        wanted = self.send(method, params)
        while True:
            message = self.receive()
            if message.get("id") != wanted:
                continue  # an event, or the answer to nothing we wait for
            if "error" in message:
                raise RuntimeError("%s: %s" % (method, message["error"]))
            return message.get("result", {})

    def wait_event(self, method):
        while True:
            message = self.receive()
            if message.get("method") == method:
                return message.get("params", {})

    def navigate(self, url):
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression):
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise RuntimeError("page script failed: %s" % text)
        return result.get("result", {}).get("value")

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data["data"]))

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def main():
    chromium, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    browser = Browser(chromium, width, height)
    answer = lambda value: print(json.dumps(value), flush=True)
    answer({"ok": True, "ready": True})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if "navigate" in command:
                    browser.navigate(command["navigate"])
                    answer({"ok": True})
                elif "eval" in command:
                    answer({"ok": True, "value": browser.evaluate(command["eval"])})
                elif "screenshot" in command:
                    browser.screenshot(command["screenshot"])
                    answer({"ok": True})
                elif "quit" in command:
                    answer({"ok": True})
                    break
                else:
                    answer({"ok": False, "error": "unknown command %r" % command})
            except Exception as e:  # answered, the test decides
                answer({"ok": False, "error": str(e)})
    finally:
        browser.close()


if __name__ == "__main__":
    main()
