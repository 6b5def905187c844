"""A real Flower process on a test cluster, driven through its HTTP API (``FLOWER_UNAUTHENTICATED_API``:
the tests' Flower listens on the loopback only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.ports import free_port
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parent.parent.parent


class Flower:
    def __init__(self, cl):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(cl.env, FLOWER_UNAUTHENTICATED_API="true")
        self.log = open(os.path.join(cl.logdir, "flower.log"), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "-b", cl.redis_url, "flower",
             f"--port={self.port}", "--address=127.0.0.1"],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def request(self, method: str, path: str):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read().decode()
                return resp.status, body
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, OSError):
            return None, ""

    def state(self, celery_id: str):
        status, body = self.request("GET", f"/api/task/info/{celery_id}")
        return json.loads(body).get("state") if status == 200 else None

    def wait_state(self, celery_id: str, want: str, timeout: float = 30):
        wait_until(lambda: self.state(celery_id) == want, timeout,
                   f"Flower to show {celery_id} as {want} (shows {self.state(celery_id)})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
