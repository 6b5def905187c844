"""Who may change a job: its owner (the user name ``getpass.getuser()`` gave when it was created)
or an administrator, one of the names in ``HPCQ_ADMINS`` as the scheduler publishes it in Redis
(``ADMINS``), so that a client's own environment cannot make it an administrator; nobody else,
root included.

This stops mistakes (canceling a colleague's job by a typo), not a hostile user: anyone holding
the Redis password can run the scripts, or write the records, directly.  Real separation needs
each user's own Redis credentials (Redis ACLs) in front of a service that checks the caller, or
clients that never reach Redis (see the README's Owners section)."""

from __future__ import annotations

import getpass

from scheduler.core import keys
from scheduler.core.schema import Msg
from scheduler.errors import NotFound, PermissionDenied

#: The operations checked, as the refusal names them.
CHECKED = ("cancel", "requeue", "modify", "finish")


def current_user() -> str:
    return getpass.getuser()


def publish_admins(store, names: str) -> None:
    """The scheduler's part: HPCQ_ADMINS as it was started with, for every client to read."""
    canonical = ",".join(sorted({n.strip() for n in (names or "").split(",") if n.strip()}))
    store._do(store.redis.set, keys.ADMINS, canonical)


def check(store, job_id: int, action: str, what: str, user: str) -> None:
    """Refuse (PermissionDenied) unless ``user`` owns job ``job_id`` or is an administrator.
    ``what`` is how the refusal names the object ("job 7", "task 7.2").  One round trip.  (A
    task cancel checks the same in its own step: lib.lua ``check_permitted``.)"""
    pipe = store.redis.pipeline(transaction=False)
    pipe.hmget(keys.job(job_id), "owner", "state")
    pipe.get(keys.ADMINS)
    (owner, state), raw = store._do(pipe.execute)
    if state is None:
        raise NotFound(f"job {job_id} does not exist")
    if user == owner or user in {n.strip() for n in (raw or "").split(",")}:
        return
    raise PermissionDenied(Msg.not_permitted.format(action, what, owner or "nobody", user))
