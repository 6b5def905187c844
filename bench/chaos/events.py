"""The ``hpcq:events`` stream, read while the run goes on: the checks compare every task's and
job's end state with its history, and the stream is trimmed, so it is read as it grows rather
than once at the end."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import redis

from scheduler.core import keys


class EventTail(threading.Thread):
    """Reads ``hpcq:events`` as it grows (the stream is trimmed at ~100,000 entries), through
    Redis restarts."""

    def __init__(self, url: str):
        super().__init__(daemon=True, name="chaos-events")
        self.url = url
        self.last = "0-0"
        self.task_events: dict[str, list[str]] = defaultdict(list)
        self.job_events: dict[str, list[str]] = defaultdict(list)
        self.worker_events: list[tuple[str, str]] = []
        self.count = 0
        self.first_id: str | None = None
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.errors = 0

    def read_once(self, client: redis.Redis, block: int | None) -> int:
        reply = client.xread({keys.EVENTS: self.last}, count=5000, block=block)
        n = 0
        with self.lock:
            for _stream, entries in reply or []:
                for eid, f in entries:
                    if self.first_id is None:
                        self.first_id = eid
                    self.last = eid
                    kind, ident, state = f.get("kind"), f.get("id"), f.get("state")
                    if kind == "task":
                        self.task_events[ident].append(state)
                    elif kind == "job":
                        self.job_events[ident].append(state)
                    else:
                        self.worker_events.append((ident, state))
                    n += 1
            self.count += n
        return n

    def run(self) -> None:
        client = None
        while not self.stopping.is_set():
            try:
                if client is None:
                    client = redis.Redis.from_url(self.url, decode_responses=True,
                                                  socket_timeout=3, socket_connect_timeout=1)
                self.read_once(client, 300)
            except redis.RedisError:
                self.errors += 1
                client = None
                time.sleep(0.2)

    def drain(self) -> None:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            while self.read_once(client, None):
                pass
        finally:
            client.close()
