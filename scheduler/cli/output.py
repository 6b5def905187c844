"""``hpcq task output J.T[.I] [--follow]``: a task's whole stdout and stderr.

Redis keeps only an excerpt (``HPCQ_OUTPUT_LIMIT``); the whole output is in the files the task
names (``--stdout``/``--stderr``) or in its attempt's spool file on the worker's host
(``worker/output.py``), whichever holds each stream.  This reads them where they are, so it
works where those paths are visible (the worker's host, or a shared file system); elsewhere it
says where the output is and prints the excerpt Redis kept."""

from __future__ import annotations

import os
import sys
import time

import click

from scheduler.api.client import Task
from scheduler.core.states import TASK_END, TASK_PENDING
from scheduler.errors import InvalidInput, InvalidState

POLL = 0.2
CHUNK = 1 << 16


def sources(task: Task) -> list[tuple[str, str]]:
    """(stream, path) for each stream of ``task``: a file it names, or its spool, which holds
    whatever it does not send to a file (both streams, combined, when it names none)."""
    def absolute(path):
        return path if not path or os.path.isabs(path) else os.path.join(task.work_dir or "", path)
    out, err, spool = absolute(task.stdout), absolute(task.stderr), task.spool
    found = [("stdout", out or spool)]
    if err:
        found.append(("stderr", err))
    elif out:
        found.append(("stderr", spool))
    return [(stream, path) for stream, path in found if path]


def _write(stream: str, data: bytes) -> None:
    target = sys.stdout if stream == "stdout" else sys.stderr
    target.flush()
    target.buffer.write(data)
    target.buffer.flush()


def _copy(stream: str, path: str, pos: int) -> int:
    """Write what ``path`` holds past ``pos`` to ``stream``; returns the new position."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < pos:
            pos = 0       # truncated: a rerun writes the file again from its start
        f.seek(pos)
        while data := f.read(CHUNK):
            _write(stream, data)
            pos += len(data)
    return pos


def _unreadable(task: Task, path: str, exc: OSError) -> None:
    """Say where the output is, and print what Redis kept of it."""
    where = f" on node {task.node}" if task.node else ""
    click.echo(f"note: task {task.id}'s output is in {path}{where}, which cannot be read here "
               f"({exc.strerror or exc}); showing the part kept in Redis", err=True)
    if task.output:
        _write("stdout", task.output.encode("utf-8", "replace"))


def _started(task: Task) -> bool:
    return bool(task.spool) or task.start_time is not None or task.state not in TASK_PENDING


def print_output(task: Task, follow: bool = False) -> None:
    if task.is_sweep:
        raise InvalidInput(f"{task.id} is a sweep: each instance has its own output, "
                           f"e.g. hpcq task output {task.id}.1")
    if not follow:
        if not _started(task):
            raise InvalidState(f"task {task.id} has not started yet ({task.state.value}): "
                               f"no output (--follow waits for it)")
        _print_once(task)
        return
    _follow(task)


def _print_once(task: Task) -> None:
    for stream, path in sources(task):
        try:
            _copy(stream, path, 0)
        except BrokenPipeError:
            raise                      # our reader is gone, not the file
        except OSError as exc:
            if path == task.spool:
                _unreadable(task, path, exc)
            else:
                raise InvalidState(f"cannot read task {task.id}'s {stream} file {path}: "
                                   f"{exc.strerror or exc}") from None


def _follow(task: Task) -> None:
    """Print the output as it is written until the task ends; a task not started yet is
    waited for, and a rerun's new spool (a new path) is followed from its start."""
    positions: dict[str, int] = {}
    while True:
        task.refresh()
        ended = task.state in TASK_END
        for stream, path in sources(task):
            try:
                positions[path] = _copy(stream, path, positions.get(path, 0))
            except BrokenPipeError:
                raise
            except FileNotFoundError:
                if ended and path == task.spool:
                    _unreadable(task, path, FileNotFoundError(2, "no such file"))
                    return
            except OSError as exc:
                if path == task.spool:
                    _unreadable(task, path, exc)
                    return
                raise InvalidState(f"cannot read task {task.id}'s {stream} file {path}: "
                                   f"{exc.strerror or exc}") from None
        if ended:
            return
        time.sleep(POLL)
