"""Retention (issue 13): ended jobs are deleted with all their records, by ``hpcq job purge`` now
or by the leading scheduler after HPCQ_JOB_RETENTION, in chunks that never block Redis long;
Redis memory returns to its baseline once they are gone."""

from __future__ import annotations

import json
import re

import pytest
import redis

from scheduler import JobState, Scheduler
from scheduler.core.store import Store
from scheduler.retention import Retention
from tests.script_model import Rig
from tests.support import hpcq, running_cluster, wait_until


def run(url, *args, code=0, **kw):
    p = hpcq(*args, redis_url=url, **kw)
    assert p.returncode == code, (args, p.returncode, p.stdout, p.stderr)
    return p


def job_keys(r, job_id) -> list[str]:
    return sorted(r.keys(f"hpcq:job:{job_id}") + r.keys(f"hpcq:job:{job_id}:*")
                  + r.keys(f"hpcq:task:{job_id}.*") + r.keys(f"hpcq:purge:{job_id}"))


@pytest.mark.store
def test_purge_in_chunks_and_resume(redis_url):
    """A sweep of 5,000 dispatched instance records is deleted about 1,000 keys a call; a purge left
    midway is finished by the scheduler's retention pass; nothing of the job is left."""
    store = Store(redis_url)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    rig = Rig(store)
    rig.worker(slots=10_000)
    j = rig.job({"sweep": (1, 6000, 1)}, {})
    assert len(store.dispatch("w1", 5000)) == 5000      # 5,000 instance records
    store.cancel_job(j, "q", "r", "e")                  # Dispatching ones: Canceled at once
    assert store.job(j)["state"] == "Canceled"
    assert len(job_keys(r, j)) > 5000
    status, deleted = store.purge_job(j, 1000)
    assert status == "more" and 1000 <= deleted < 1010        # every key of an instance at once
    assert not r.exists(f"hpcq:job:{j}") and str(j) not in r.zrange("hpcq:jobs", 0, -1)
    assert store.purging_jobs() == [j]
    leader = Retention(store, 0)
    assert leader.step(store.time(), calls=2) == 0      # a bounded pass, to go on with at once
    finished, passes = 0, 0
    while store.purging_jobs() and passes < 10:
        finished += leader.step(store.time())
        passes += 1
    assert finished == 1 and passes == 2, (finished, passes)   # ~30,000 keys, 20 calls a pass
    assert job_keys(r, j) == [] and store.purging_jobs() == []


@pytest.mark.cluster
def test_purge_cli_refusals_and_scheduler_retention(redis_server):
    env = {"HPCQ_JOB_RETENTION": "3s"}
    with running_cluster(redis_server, workers=(("r1@hpcq-retention", 2),), env=env) as c:
        url, r = c.redis_url, c.r
        api = Scheduler.connect(url)
        running = run(url, "job", "submit", "--", "sleep 60").stdout.strip()
        p = run(url, "job", "purge", running, code=1)
        assert re.fullmatch(f"error: Only Finished, Failed or Canceled jobs can be purged; "
                            f"job {running} is (Queued|Running)\\.\n", p.stderr), p.stderr
        run(url, "job", "purge", code=2)
        run(url, "job", "purge", running, "--older-than", "1d", code=2)
        assert run(url, "job", "purge", "--older-than", "soon", code=2).stderr.startswith("error: ")
        done = run(url, "job", "submit", "--sweep", "1-3", "--", "echo *").stdout.strip()
        run(url, "job", "wait", done)
        assert run(url, "job", "purge", done).stdout == f"{done} purged\n"
        assert job_keys(r, done) == []
        run(url, "job", "view", done, code=1)
        # the scheduler: jobs ended more than 3 s ago go by themselves; a running one stays
        old = run(url, "job", "submit", "--", "true").stdout.strip()
        run(url, "job", "wait", old)
        assert api.get_job(old).state == JobState.Finished
        wait_until(lambda: not r.exists(f"hpcq:job:{old}"), 30, "retention to purge the job")
        assert job_keys(r, old) == []
        assert api.get_job(running).state in (JobState.Queued, JobState.Running)
        run(url, "job", "cancel", running, "--force")


def _memory(r) -> int:
    """Redis' memory without the event stream (history, bounded by its own length)."""
    stream = r.memory_usage("hpcq:events") or 0
    return r.info("memory")["used_memory"] - stream


@pytest.mark.cluster
def test_memory_returns_to_baseline_after_purging_a_thousand_jobs(redis_server):
    with running_cluster(redis_server, workers=(("r2@hpcq-retention", 8),)) as c:
        url, r = c.redis_url, c.r
        api = Scheduler.connect(url)
        warm = api.submit({"command": "true"})
        warm.wait(timeout=60)
        api.purge_job(warm.id)
        baseline, keys0 = _memory(r), r.dbsize()
        jobs = [api.submit({"command": "echo done"}) for _ in range(1000)]
        for job in jobs:
            assert job.wait(timeout=120) == JobState.Finished
        grown = _memory(r) - baseline
        assert grown > 500_000, grown       # ~1 KB or more per job and task record
        p = run(url, "job", "purge", "--older-than", "0s", "--json")
        assert sorted(int(j) for j in json.loads(p.stdout)["purged"]) == [j.id for j in jobs]
        left = _memory(r) - baseline
        print(f"1000 jobs: +{grown} bytes; after the purge: {left:+d} bytes; keys {keys0} -> {r.dbsize()}")
        assert r.dbsize() <= keys0
        assert left < 0.05 * grown, (grown, left)
