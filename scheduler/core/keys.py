"""hpcq's Redis keys, as functions of their argument: generated from ``schema.KEYS`` (the one
place key shapes are declared; the Lua scripts get the same as ``K``).

Layout: see ``schema.KEYS`` (name -> shape, type, what)."""

from __future__ import annotations

from scheduler.core.schema import KEYS, PREFIX, key

(JOB_SEQ, JOBS, QUEUE, SEQ, ATTEMPT, WORKERS, DEADLINES, LEADER, WAKEUP, EVENTS, ENDED, PURGING,
 DELAYED, HELD, ADMINS, JOB_OPS, DISPATCHING, CLUSTER, CANCEL_GRACE) = (
    key(n) for n in ("JOB_SEQ", "JOBS", "QUEUE", "SEQ", "ATTEMPT", "WORKERS", "DEADLINES",
                     "LEADER", "WAKEUP", "EVENTS", "ENDED", "PURGING", "DELAYED", "HELD", "ADMINS",
                     "JOB_OPS", "DISPATCHING", "CLUSTER", "CANCEL_GRACE"))


def job(job_id) -> str:
    return key("job", job_id)


def job_waiting(job_id) -> str:
    return key("job_waiting", job_id)


def task(task_id) -> str:
    return key("task", task_id)


def sweep_active(master_id) -> str:
    return key("sweep_active", master_id)


def sweep_redo(master_id) -> str:
    return key("sweep_redo", master_id)


def sweep_ended(master_id) -> str:
    return key("sweep_ended", master_id)


def task_rdeps(task_id) -> str:
    return key("task_rdeps", task_id)


def job_children(job_id) -> str:
    return key("job_children", job_id)


def job_key(k: str) -> str:
    return key("job_key", k)


def worker(name: str) -> str:
    return key("worker", name)


def worker_tasks(name: str) -> str:
    return key("worker_tasks", name)


def worker_queue(name: str) -> str:
    """The Celery queue that only worker ``name`` consumes."""
    return f"{PREFIX}.w.{name}"


__all__ = ["KEYS", "PREFIX", "key", "job", "job_waiting", "task", "sweep_active", "sweep_redo",
           "sweep_ended", "task_rdeps", "worker", "worker_tasks", "worker_queue", "JOB_SEQ",
           "JOBS", "QUEUE", "SEQ", "ATTEMPT", "WORKERS", "DEADLINES", "LEADER", "WAKEUP", "EVENTS", "ENDED", "PURGING",
           "DELAYED", "HELD", "ADMINS", "JOB_OPS", "DISPATCHING", "job_children", "job_key"]
