"""Starting a task's command: its environment (hpcq's secrets taken out, markers put in), its
files, and a start error that says exactly what is wrong on this host."""

from __future__ import annotations

import functools
import json
import os
import signal
from contextlib import ExitStack
from urllib.parse import urlsplit

from scheduler.core import resources, sweep

from .output import open_spool
from .registry import identity
from .markers import ATTEMPT_VAR, WORKER_VAR

#: hpcq's own variables that may carry the Redis URL or password: never in a task's environment.
SECRET_VARS = frozenset({"HPCQ_REDIS_URL", "HPCQ_REDIS_PASSWORD_FILE", "HPCQ_REDIS_PASSWORD",
                         "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"})
#: Longer commands run from a script file: one argv string is capped at 128 KiB by the kernel.
MAX_INLINE_COMMAND = 64 * 1024


class StartError(Exception):
    """The command could not be started; the text says why (recorded as the task's error)."""


def task_environment(base: dict, redis_url: str, spec_env: dict, markers: dict) -> dict:
    """The worker's environment without anything that reveals Redis, the task's own variables,
    hpcq's per-task variables and the markers."""
    password = urlsplit(redis_url).password if redis_url else None
    env = {k: v for k, v in base.items()
           if k not in SECRET_VARS and not (redis_url and redis_url in v)
           and not (password and password in v)}
    env.update(spec_env)
    env.update(markers)
    return env


@functools.lru_cache(maxsize=4)
def _worker_environment(redis_url: str) -> tuple[tuple[str, str], ...]:
    """The pool process's environment without hpcq's secrets, computed once per process (it
    does not change after the worker started; filtering it cost ~0.8 ms of CPU per attempt)."""
    return tuple(task_environment(dict(os.environ), redis_url, {}, {}).items())


def allocation_vars(spec: dict, worker: str, base: dict) -> dict:
    """What the attempt was given, as the task's process sees it: CCP_NUMCPUS (its cores),
    CCP_NODES (HPC Pack's "count name cores" list: this worker), and on a worker that offers
    GPUs, CUDA_VISIBLE_DEVICES set to the ids it got ('' when it asked for none, so that it
    cannot take another task's GPU)."""
    cores = spec.get("_cores") or "1"
    out = {"CCP_NUMCPUS": cores, "CCP_NODES": f"1 {worker} {cores}"}
    if spec.get("_gpus") or _worker_gpus(base):
        out["CUDA_VISIBLE_DEVICES"] = spec.get("_gpus", "")
    return out


def _worker_gpus(base: dict) -> bool:
    try:
        return bool(resources.parse_gpus(base.get("HPCQ_WORKER_GPUS")))
    except Exception:   # a malformed value: the worker refused to start with it anyway
        return False


def spawn(spec: dict, task_id: str, value: str, worker: str, celery_id: str, redis_url: str,
          script_path: str, files: ExitStack, spool: tuple[str, str]):
    """Start the command in a session of its own; returns (its pid, spool file or None, its
    path or None).  ``spool`` is (spool dir, attempt token): what the command does not write
    to files of its own goes to this attempt's spool file (``output.py``)."""
    v = int(value) if value else None

    def sub(field):
        raw = spec.get(field)
        return sweep.substitute(raw, v) if raw is not None and v is not None else raw

    j, t, *i = task_id.split(".")
    env = task_environment(dict(_worker_environment(redis_url)), "", {
        **json.loads(spec.get("_job_env") or "{}"), **json.loads(spec.get("env") or "{}")},
        {**allocation_vars(spec, worker, os.environ),
         "HPCQ_JOB_ID": j, "HPCQ_TASK_ID": task_id, "HPCQ_TASK_NUMBER": t,
         "HPCQ_INSTANCE": i[0] if i else "", "HPCQ_SWEEP_VALUE": value or "",
         # HPC Pack's names for the same (CCP_TASKINSTANCEID is 0 for a task that is no instance)
         "CCP_JOBID": j, "CCP_TASKID": t, "CCP_TASKINSTANCEID": i[0] if i else "0",
         "CCP_JOBNAME": spec.get("_job_name", ""), "CCP_TASKNAME": sub("name") or "",
         ATTEMPT_VAR: celery_id, WORKER_VAR: identity(worker, redis_url)})
    wd = spec.get("work_dir") or None
    if wd:
        check_dir(wd)
    command = sub("command")
    argv = ["/bin/sh", "-c", command]
    if len(command.encode()) > MAX_INLINE_COMMAND:
        with open(script_path, "w") as f:
            f.write(command)
        argv = ["/bin/sh", script_path]
    stdin = open_file(files, "stdin", sub("stdin"), wd, "rb") if spec.get("stdin") else None
    out = None
    if not spec.get("stdout") or not spec.get("stderr"):
        try:
            out = files.enter_context(open_spool(*spool[:1], task_id, spool[1]))
        except OSError as exc:
            raise StartError(f"The task could not start: its output spool in {spool[0]}: "
                             f"{exc.strerror or exc}") from None
    stdout = open_file(files, "stdout", sub("stdout"), wd, "wb") if spec.get("stdout") else out
    stderr = open_file(files, "stderr", sub("stderr"), wd, "wb") if spec.get("stderr") else (
        None if stdout is out else out)
    try:
        pid = start(argv, wd, env, stdin, stdout, stderr)
    except OSError as exc:
        raise StartError(f"The task could not start: {exc.strerror or exc}") from None
    except (ValueError, TypeError) as exc:
        raise StartError(f"The task could not start: {exc}") from None
    # keep the spool file open past the ExitStack
    if out is None:
        return pid, None, None
    return pid, os.fdopen(os.dup(out.fileno()), "rb"), out.name


#: Reset to their defaults in the command (exec keeps an ignored signal ignored: Python ignores
#: SIGPIPE and SIGXFSZ, Celery's pool processes others).
DEFAULT_SIGNALS = tuple(getattr(signal, n) for n in (
    "SIGPIPE", "SIGXFSZ", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTERM", "SIGUSR1", "SIGUSR2",
    "SIGCHLD", "SIGTTIN", "SIGTTOU", "SIGTSTP"))


def start(argv: list[str], wd: str | None, env: dict, stdin, stdout, stderr) -> int:
    """``argv`` in a session of its own, in ``wd``, with ``env``; stdin from the file ``stdin``
    (/dev/null if None), stdout to ``stdout``, stderr to ``stderr`` (with stdout if None).
    Returns its pid.

    posix_spawn rather than Popen (a third of the CPU, measured: 37 against 110 us a start).
    No preexec_fn and no parent-death signal either: a Python preexec_fn forces a full fork of
    the pool process, and util-linux's setpriv, which used to set the signal, cost an exec per
    attempt, a tenth of the CPU of a short task.  A pool process that dies leaves the command
    to the worker's main process, a subreaper that kills it by its marker
    (presence.check_pools); a whole worker that dies leaves it to its next life (prepare).
    posix_spawn closes no descriptor: every one a pool process holds is close-on-exec (Python
    makes them so, and the pool process marks what it inherited: ``close_on_exec``).  It has
    no working directory either (Python 3.11's lacks glibc's addchdir): the pool process, which
    runs one attempt at a time on one thread, is in ``wd`` while it spawns."""
    actions = [
        (os.POSIX_SPAWN_DUP2, stdin.fileno(), 0) if stdin is not None
        else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, stdout.fileno(), 1),
        (os.POSIX_SPAWN_DUP2, stderr.fileno() if stderr is not None else 1, 2),
    ]
    here = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if wd else None
    try:
        if wd:
            os.chdir(wd)
        return os.posix_spawn(argv[0], argv, env, file_actions=actions, setsid=True,
                              setsigmask=(), setsigdef=DEFAULT_SIGNALS)
    finally:
        if here is not None:
            os.fchdir(here)
            os.close(here)


def close_on_exec() -> None:
    """Mark every descriptor above stderr close-on-exec (for ``start``: what a pool process
    inherited from the worker's main process is not a command's business)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            try:
                os.set_inheritable(fd, False)
            except OSError:
                pass


def check_dir(wd: str) -> None:
    if not os.path.exists(wd):
        raise StartError(f"The task could not start: its working directory {wd} does not exist.")
    if not os.path.isdir(wd):
        raise StartError(f"The task could not start: its working directory {wd} is not a directory.")
    if not os.access(wd, os.X_OK):
        raise StartError(f"The task could not start: its working directory {wd} is not accessible (permission denied).")


def open_file(files: ExitStack, what: str, path: str, wd: str | None, mode: str):
    full = os.path.join(wd, path) if wd and not os.path.isabs(path) else path
    try:
        return files.enter_context(open(full, mode))
    except FileNotFoundError:
        parent = os.path.dirname(full) or "."
        gone = full if "r" in mode or os.path.isdir(parent) else parent
        raise StartError(f"The task could not start: its {what} {'file' if gone == full else 'directory'} "
                         f"{gone} does not exist.") from None
    except IsADirectoryError:
        raise StartError(f"The task could not start: its {what} {full} is a directory.") from None
    except NotADirectoryError:
        raise StartError(f"The task could not start: a part of its {what} path {full} is not a directory.") from None
    except PermissionError:
        raise StartError(f"The task could not start: permission denied for its {what} {full}.") from None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise StartError(f"The task could not start: its {what} {full}: {why}") from None
