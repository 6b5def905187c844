"""The worker's own record of the attempts it holds, one small file per attempt on local disk.

Redis is the system of record, but it can be away (an outage) or behind (AOF loses its last
second).  So the worker keeps its own truth, as slurmd does: an attempt is written here by its
pool process before the start check and removed only once its end is recorded in Redis.  The
heartbeat lists these attempts (reconciliation), the main process watches their pool processes
(a killed pool process is noticed at once), a result that could not be recorded yet is held
here, and a restart with the same name finds what a previous life left behind."""

from __future__ import annotations

import functools
import json
import os
import re
import threading

from scheduler.transport import celery_id


@functools.lru_cache(maxsize=256)
def _safe(name: str) -> str:
    return re.sub(r"[^\w@.-]", "_", name)


def _put(path: str, flags: int, record: dict) -> None:
    """``record`` as one JSON line, in one write (no buffered file object: this is on every
    attempt's path)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | flags, 0o600)
    try:
        os.write(fd, json.dumps(record).encode() + b"\n")
    finally:
        os.close(fd)


def identity(worker: str, redis_url: str | None = None) -> str:
    """The worker's name within its cluster (its Redis server and database), so that two
    clusters on one host whose workers share a name never touch each other's attempts."""
    from urllib.parse import urlsplit

    from scheduler.settings import get_settings
    parts = urlsplit(redis_url or get_settings().redis_url)
    db = (parts.path or "/0").strip("/") or "0"
    return f"{worker}~{parts.hostname or ''}:{parts.port or 6379}:{db}"


class Registry:
    """``<run_dir>/<worker>~<redis host:port:db>/<celery id>.json`` for each attempt the worker
    holds."""

    def __init__(self, run_dir: str, worker: str):
        self.dir = os.path.join(run_dir, _safe(identity(worker)))
        os.makedirs(self.dir, mode=0o700, exist_ok=True)

    def path(self, cid: str, suffix: str = ".json") -> str:
        return os.path.join(self.dir, _safe(cid) + suffix)

    def write(self, cid: str, entry: dict) -> None:
        """Atomically (a rename), so a reader never sees half an entry.  The temporary file is
        named for the writing process and thread: each writes one entry at a time."""
        tmp = os.path.join(self.dir, f".tmp-{os.getpid()}-{threading.get_ident()}")
        _put(tmp, os.O_CREAT | os.O_TRUNC, entry)
        os.replace(tmp, self.path(cid))

    def add(self, task_id: str, token: str, pool_pid: int, pool_started: float) -> dict:
        entry = {"task_id": task_id, "token": token, "celery_id": celery_id(task_id, token),
                 "pool_pid": pool_pid, "pool_started": pool_started}
        self.write(entry["celery_id"], entry)
        return entry

    def update(self, entry: dict, **fields) -> None:
        """``fields`` appended to the entry as a line of their own (one write; a fifth of the
        cost of rewriting it).  A reader merges the lines in order and ignores a last line that
        is not whole yet, so it sees the fields either entirely or not yet."""
        entry.update(fields)
        try:
            _put(self.path(entry["celery_id"]), os.O_APPEND, fields)
        except FileNotFoundError:
            self.write(entry["celery_id"], entry)

    # --- a cancel hpcq recorded, told by the main process to the pool process ----------------
    def mark_stop(self, cid: str, force: bool) -> bool:
        """Before the main process signals the attempt's pool process for a revoke hpcq sent (so
        recorded in Redis already): the pool process then stops the command without reading
        Redis first.  False if this worker holds no such attempt."""
        if not os.path.exists(self.path(cid)):
            return False
        with open(self.path(cid, ".stop"), "w") as f:
            f.write("kill" if force else "term")
        return True

    def stop_mark(self, cid: str) -> str:
        """'kill', 'term', or '' (no mark)."""
        try:
            with open(self.path(cid, ".stop")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def clear_stale_marks(self) -> None:
        """Stop marks left without their attempt (one written as the attempt ended)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.endswith(".stop") and name[:-5] + ".json" not in names:
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass

    def remove(self, cid: str) -> None:
        for suffix in (".json", ".sh", ".stop"):
            try:
                os.unlink(self.path(cid, suffix))
            except FileNotFoundError:
                pass

    def entries(self) -> list[dict]:
        out = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return out
        for name in names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    lines = f.read().split(b"\n")
                entry = json.loads(lines[0])
                for line in lines[1:]:
                    try:
                        entry.update(json.loads(line))
                    except ValueError:
                        break     # the last line, not whole yet (or the empty end)
                out.append(entry)
            except (OSError, ValueError):
                pass          # removed meanwhile
        return out

    # --- how the worker is shutting down, for its pool processes ---------------------------
    def set_shutdown(self, how: str) -> None:
        with open(os.path.join(self.dir, ".shutdown"), "w") as f:
            f.write(how)

    def shutdown(self) -> str:
        """'' while running; 'warm' or 'cold' once the worker is shutting down."""
        try:
            with open(os.path.join(self.dir, ".shutdown")) as f:
                return f.read().strip()
        except FileNotFoundError:
            return ""

    def clear_shutdown(self) -> None:
        try:
            os.unlink(os.path.join(self.dir, ".shutdown"))
        except FileNotFoundError:
            pass
