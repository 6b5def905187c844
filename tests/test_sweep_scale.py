"""Parametric sweeps: a million instances cost what ten do in Redis (no workers: measured in a
database of its own and canceled, never run), and `*` substitution end to end on a real cluster."""

from __future__ import annotations

import os
import time

import pytest
import redis

from tests.support import running_cluster, with_db
from scheduler import InvalidInput, JobState, NotFound, Scheduler, TaskState

SCALE_DB = 15


def footprint(r: redis.Redis) -> tuple[list[str], int]:
    """Keys of the database and the sum of their MEMORY USAGE (every element counted)."""
    names = sorted(r.scan_iter(count=1000))
    return names, sum(r.memory_usage(k, samples=0) or 0 for k in names)


def submit_sweep(s: Scheduler, r: redis.Redis, n: int):
    r.flushdb()
    before = r.info("memory")["used_memory"]
    t0 = time.perf_counter()
    job = s.create_job(name=f"sweep-{n}")
    job.add_task(command="render frame_**** > out_*.txt", name="frame-*", sweep=(1, n, 1),
                 stdout="log_*.txt")
    s.submit_job(job)
    elapsed = time.perf_counter() - t0
    grew = r.info("memory")["used_memory"] - before
    names, mem = footprint(r)
    return job, elapsed, names, mem, grew


@pytest.mark.store
def test_million_instance_sweep_footprint_does_not_depend_on_size(redis_server):
    url = with_db(redis_server, SCALE_DB)
    r = redis.Redis.from_url(url, decode_responses=True)
    s = Scheduler.connect(url)
    try:
        submit_sweep(s, r, 3)  # warm-up: loads the Lua scripts into the server once
        small, t_small, keys_small, mem_small, grew_small = submit_sweep(s, r, 10)
        big, t_big, keys_big, mem_big, grew_big = submit_sweep(s, r, 1_000_000)
        report = (f"10: {t_small:.3f}s {len(keys_small)} keys {mem_small} B (used_memory +{grew_small}); "
                  f"1,000,000: {t_big:.3f}s {len(keys_big)} keys {mem_big} B (used_memory +{grew_big})")
        print(report)
        assert keys_big == keys_small, report
        assert abs(mem_big - mem_small) <= max(512, mem_small // 10), report
        assert grew_big - grew_small < 256 * 1024, report      # a byte per instance would be ~1 MB
        assert t_big < 3.0, report

        # The big sweep is one record, yet every instance is addressable and Queued.
        big.refresh()
        assert big.state == JobState.Queued
        master = big.get_task(f"{big.id}.1")
        assert master.is_sweep and master.instances == 1_000_000
        assert master.instance_counts == {"Queued": 1_000_000}
        assert big.counts == {"Queued": 1}
        last = s.get_task(f"{big.id}.1.1000000")
        assert last.state == TaskState.Queued
        assert last.name == "frame-1000000"
        assert last.command == "render frame_1000000 > out_1000000.txt"
        assert last.stdout == os.path.join(os.getcwd(), "log_1000000.txt")  # resolved at add
        assert s.get_task(f"{big.id}.1.42").command == "render frame_0042 > out_42.txt"
        with pytest.raises(NotFound):
            s.get_task(f"{big.id}.1.1000001")

        # Canceling it is as cheap: the never-dispatched instances are cut off, not visited.
        t0 = time.perf_counter()
        s.cancel_job(big.id, timeout=10)
        t_cancel = time.perf_counter() - t0
        assert big.refresh().state == JobState.Canceled
        assert t_cancel < 3.0
        assert s.get_task(f"{big.id}.1.500000").state == TaskState.Canceled
        assert big.get_task(f"{big.id}.1").instance_counts == {"Canceled": 1_000_000}
        keys_after, mem_after = footprint(r)
        assert mem_after < mem_small + 4096, (mem_after, mem_small)
    finally:
        r.flushdb()


@pytest.mark.store
def test_sweep_over_the_limit_is_refused(redis_server):
    url = with_db(redis_server, SCALE_DB)
    r = redis.Redis.from_url(url)
    s = Scheduler.connect(url)
    try:
        job = s.create_job(name="too-big")
        with pytest.raises(InvalidInput, match="1000000"):
            job.add_task(command="echo *", sweep=(1, 1_000_001, 1))
        with pytest.raises(InvalidInput):
            job.add_task(command="echo *", sweep=(5, 1, 1))
        with pytest.raises(InvalidInput):
            job.add_task(command="echo *", sweep=(1, 5, 0))
        assert job.refresh().task_count == 0
    finally:
        r.flushdb()


@pytest.fixture(scope="module")
def cluster(redis_server):
    with running_cluster(redis_server, workers=(("w1@sweep", 2),)) as c:
        yield c


@pytest.mark.cluster
def test_sweep_substitution_end_to_end(cluster, tmp_path):
    s = cluster.scheduler_api()
    job = s.create_job(name="sweeps")
    padded = job.add_task(command="echo *** '^*^^' $HPCQ_SWEEP_VALUE $HPCQ_INSTANCE", name="inst-**",
                          sweep=(1, 10, 3))
    files = job.add_task(command="echo value-*", stdout="out_**.txt", stderr="err_*.txt",
                         work_dir=str(tmp_path), sweep=(8, 12, 2))
    wide = job.add_task(command="echo ***", sweep=(12345, 12345, 1))
    s.submit_job(job)
    assert job.wait(timeout=60) == JobState.Finished
    job.refresh()
    assert job.counts == {"Finished": 3}  # a sweep counts once in its job

    values = [1, 4, 7, 10]
    padded.refresh()
    assert padded.is_sweep and padded.instances == 4 and padded.sweep == (1, 10, 3)
    assert padded.state == TaskState.Finished
    assert padded.instance_counts == {"Finished": 4}
    for i, v in enumerate(values, 1):
        t = s.get_task(f"{job.id}.1.{i}")
        assert t.state == TaskState.Finished and t.exit_code == 0
        assert t.output == f"{v:03d} *^ {v} {i}\n"
        assert t.name == f"inst-{v:02d}"
        assert t.command == f"echo {v:03d} '*^' $HPCQ_SWEEP_VALUE $HPCQ_INSTANCE"
    with pytest.raises(NotFound):
        s.get_task(f"{job.id}.1.5")

    for i, v in enumerate([8, 10, 12], 1):
        t = s.get_task(f"{job.id}.2.{i}")
        assert t.state == TaskState.Finished
        assert t.stdout == str(tmp_path / f"out_{v:02d}.txt")
        assert (tmp_path / f"out_{v:02d}.txt").read_text() == f"value-{v}\n"
        assert (tmp_path / f"err_{v}.txt").read_text() == ""
    assert sorted(p.name for p in tmp_path.glob("out_*.txt")) == ["out_08.txt", "out_10.txt", "out_12.txt"]

    assert s.get_task(f"{job.id}.3.1").output == "12345\n"  # never truncated to the * count

    expanded = job.get_task_id_list(expand=True)
    assert expanded == ([f"{job.id}.1.{i}" for i in range(1, 5)] + [f"{job.id}.2.{i}" for i in range(1, 4)]
                        + [f"{job.id}.3.1"])
    assert job.get_task_id_list() == [f"{job.id}.1", f"{job.id}.2", f"{job.id}.3"]
