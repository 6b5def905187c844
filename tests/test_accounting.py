"""What a task used (issue 14): peak memory (``max_rss``, bytes) and CPU time, as a real worker
records them, once with the default accounting (a memory cgroup per attempt where the worker may
make one, as on this machine) and once with ``HPCQ_ACCOUNTING=sampling`` (the process tree's RSS
sampled).  One cluster per mode; every task of a mode runs in one job, side by side."""

from __future__ import annotations

import os
import sys

import pytest

from tests.support import marked_processes, running_cluster, wait_until
from worker import accounting

MiB = 1024 * 1024
PY = sys.executable


def burn(seconds: float) -> str:
    """A python3 command that uses ``seconds`` of CPU."""
    return (f"{PY} -c 'import time\nt = time.process_time()\n"
            f"while time.process_time() - t < {seconds}: pass'")


TASKS = {
    "big": f'{PY} -c "b = bytearray(200*1024*1024); import time; time.sleep(1)"',
    "true": "true",
    "echo": "echo hello",
    # two processes the command waits for
    "multi": f"{burn(0.5)} & {burn(0.5)} & wait",
    # one the command does not wait for: orphaned at once, reaped by the worker; the command
    # ends once the orphan has (its file), however long a loaded machine takes for its CPU
    "orphan": f"f=$(mktemp -u); (({burn(0.5)}; touch $f) &); "
              f"until [ -e $f ]; do sleep 0.05; done; rm -f $f",
    # 200 MB for a few milliseconds: only a cgroup sees that
    "spike": f'{PY} -c "b = bytearray(200*1024*1024); del b; import time; time.sleep(0.3)"',
}


@pytest.fixture(scope="module", params=["auto", "sampling"])
def ran(request, redis_server):
    """{"mode", "cgroup" (the cgroup accounting used, or None), "log", name: Task} after one
    job of every task in TASKS ran to its end on a worker with that HPCQ_ACCOUNTING."""
    mode = request.param
    with running_cluster(redis_server, workers=(("w1@hpcq-acct", len(TASKS)),),
                         env={"HPCQ_ACCOUNTING": mode}) as cl:
        api = cl.scheduler_api()
        job = api.submit([{"command": c, "name": n} for n, c in TASKS.items()], name="acct")
        job.wait(timeout=60)
        got = {t.name: t for t in job.get_task_list()}
        log = cl.log("w1@hpcq-acct")
        wait_until(lambda: "accounting: " in (log := cl.log("w1@hpcq-acct")), 10,
                   "the worker's accounting line")
        log = cl.log("w1@hpcq-acct")
        cgroup = accounting.method(mode)
        # the attempt cgroups (``hpcq-<pool pid>-...``) of this cluster's pool processes: another
        # test session's workers (pytest-xdist) share the parent cgroup
        ours = {str(p.pid) for p in marked_processes(cl.marker)}
        left = sorted(n for n in os.listdir(cgroup.parent) if n.startswith(accounting.PREFIX)
                      and n[len(accounting.PREFIX):].split("-")[0] in ours) if cgroup else []
        yield {"mode": mode, "cgroup": cgroup, "log": log, "left": left, **got}


def mb(task) -> float:
    return task.peak_memory / MiB


@pytest.mark.cluster
def test_all_finished(ran):
    for name in TASKS:
        assert ran[name].state.value == "Finished", (name, ran[name].error_message)
    print("\n" + report(ran))          # the figures of the mode (pytest -s shows them)


@pytest.mark.cluster
def test_method_is_logged_at_worker_start(ran):
    if ran["mode"] == "sampling":
        assert "accounting: sampling" in ran["log"]
    elif ran["cgroup"] is not None:
        assert f"accounting: {ran['cgroup'].describe()}" in ran["log"]
        assert ran["left"] == []          # every attempt's cgroup removed


@pytest.mark.cluster
def test_200_mb_task_reports_200_mb(ran):
    assert 180 <= mb(ran["big"]) <= 220, mb(ran["big"])


@pytest.mark.cluster
def test_true_and_echo_report_under_10_mb(ran):
    # Sampling may not see a command that ends within a millisecond at all: that is 0.
    least = 0 if ran["mode"] == "sampling" else 0.1
    assert least <= mb(ran["true"]) < 10, mb(ran["true"])
    assert least <= mb(ran["echo"]) < 10, mb(ran["echo"])


@pytest.mark.cluster
def test_cpu_of_every_process_is_counted(ran):
    multi, orphan = ran["multi"], ran["orphan"]
    assert multi.cpu_user + multi.cpu_kernel >= 0.8, (multi.cpu_user, multi.cpu_kernel)
    assert multi.cpu_user + multi.cpu_kernel < 3
    assert orphan.cpu_user + orphan.cpu_kernel >= 0.4, (orphan.cpu_user, orphan.cpu_kernel)


@pytest.mark.cluster
def test_short_spike_is_seen(ran):
    """A cgroup's high-water mark sees 200 MB that live a few ms; sampling sees them too here,
    through the process's own high-water mark (VmHWM) read while it sleeps afterwards."""
    assert 180 <= mb(ran["spike"]) <= 220, mb(ran["spike"])


@pytest.mark.unit
def test_sampling_is_forced_by_the_setting():
    assert accounting.method("sampling") is None
    a = accounting.Accounting("sampling", "x")
    with a.spawning():
        pass
    assert a.dir is None and a.next_wake() is not None
    a.close()


def report(ran):
    """The figures of a mode, one line (pytest -s shows it)."""
    return ran["mode"] + ": " + ", ".join(
        f"{n} {mb(ran[n]):.1f} MiB cpu {ran[n].cpu_user + ran[n].cpu_kernel:.2f} s" for n in TASKS)
