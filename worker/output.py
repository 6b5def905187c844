"""A task's output: the spool file each attempt writes what it does not send to a file of its
own, and the excerpt of it kept in Redis.

The whole output stays in the spool on the worker's host (``HPCQ_SPOOL_DIR``, one file per
attempt, the previous attempt's file of the same task removed when a new one starts), so that
``hpcq task output`` can print all of it and follow it live; Redis keeps only the first and the
last ``HPCQ_OUTPUT_LIMIT / 2`` bytes with a visible marker between them, so a task printing
gigabytes costs Redis no more than one printing a line."""

from __future__ import annotations

import os

#: Spool file of one attempt: ``<spool dir>/<job>/<task id>/<token>.out``.  A directory per
#: task, so that removing the earlier attempts' files lists that task's files only: with one
#: directory per job, a sweep's attempts each listed the whole job (measured: 1,500 attempts of
#: a sweep walked 2.3 million directory entries, a tenth of the pool processes' CPU).
SPOOL_NAME = "{token}.out"


def human_size(n: int) -> str:
    """Bytes as people read them in a marker: ``812 bytes``, ``12.9 MB`` (powers of 1000)."""
    if n < 1000:
        return f"{n} byte{'s' if n != 1 else ''}"
    for unit in ("kB", "MB", "GB", "TB"):
        n /= 1000
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}"
    return str(n)


def marker(cut: int) -> str:
    return f"[... {human_size(cut)} cut ...]"


def spool_path(spool_dir: str, task_id: str, token: str) -> str:
    job = task_id.split(".", 1)[0]
    return os.path.join(spool_dir, job, task_id, SPOOL_NAME.format(token=token))


def open_spool(spool_dir: str, task_id: str, token: str):
    """A new spool file for this attempt (binary, read-write); earlier attempts' files of the
    same task on this host are removed (the last attempt's output is the task's output)."""
    path = spool_path(spool_dir, task_id, token)
    folder, mine = os.path.split(path)
    try:
        os.mkdir(folder, mode=0o700)
        fresh = True                  # the task's first attempt here: nothing to remove
    except FileNotFoundError:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fresh = False
    except FileExistsError:
        fresh = False
    if not fresh:
        with os.scandir(folder) as entries:
            for old in entries:
                if old.name != mine and old.name.endswith(".out"):
                    try:
                        os.unlink(old.path)
                    except OSError:
                        pass
    return open(path, "w+b")


def excerpt(f, limit: int) -> str:
    """What Redis keeps of the file ``f``: all of it up to ``limit`` bytes, else its first and
    last ``limit // 2`` bytes with a marker saying how much was cut between them."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    if size <= limit:
        return f.read(size).decode("utf-8", "replace")
    half = max(limit // 2, 0)
    head = f.read(half)
    f.seek(size - half)
    tail = f.read(half)
    head_text = head.decode("utf-8", "replace")
    tail_text = tail.decode("utf-8", "replace")
    sep_before = "" if head_text.endswith("\n") or not head_text else "\n"
    return f"{head_text}{sep_before}{marker(size - len(head) - len(tail))}\n{tail_text}"
