"""Chaos with a fixed seed (issue 10): a few hundred short tasks and sweeps on 3 workers (each on a
network-namespace host of its own) and 2 schedulers, under random cancels and requeues of tasks
and jobs, kill -9 of worker main processes, whole workers, pool processes and schedulers
(restarted under their names), a Redis restart (SHUTDOWN, same port, AOF) and a link cut and
heal; then every invariant (bench/chaos.py) must hold with zero violations.

The engine is ``bench/chaos.py``; ``python -m bench.chaos --tasks 10000 --seed S`` is the long
version.  The second test proves the checker itself: fed a run's record with one thing broken at a
time, each invariant reports it."""

from __future__ import annotations

import os
from collections import Counter

import pytest

from bench.chaos import Chaos, Config, EventTail, JobPlan, TaskPlan
from tests.support.netns import netns_available

SEED = 20261125
TASKS = 300

_ok, _reason = netns_available()


@pytest.mark.cluster
@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.skipif(not _ok, reason=_reason)
def test_chaos_with_a_fixed_seed_breaks_no_invariant():
    chaos = Chaos(Config(tasks=TASKS, seed=SEED, quiet=True))
    report = ""
    try:
        chaos.run()
    finally:
        if chaos.invariants:
            report = chaos.report()
            print(report)
        else:
            print("\n".join(chaos.notes[-40:]))
    assert chaos.violations == 0, report
    # the chaos really happened, and the checks really looked at something
    done = {name: c["ok"] for name, c in chaos.ops.items()}
    for name in ("task cancel", "task requeue", "kill -9 worker main", "kill -9 whole worker",
                 "kill -9 pool process", "kill -9 scheduler", "Redis restart", "link cut"):
        assert done.get(name, 0) >= 1, f"no {name} happened:\n{report}"
    assert chaos.figures["units"] == TASKS
    inv = chaos.invariants
    assert inv["1"].checked >= TASKS and inv["3"].checked == TASKS and inv["3b"].checked > TASKS // 3
    assert inv["2"].checked >= 1, "no task was canceled before it started"
    assert sum(chaos.totals[s] for s in ("Finished", "Failed", "Canceled")) == TASKS
    chaos.cleanup()


# --- the checker, on a made-up record -------------------------------------------------------

def made_up_run(tmp_path) -> Chaos:
    """A record as a run leaves it: job 1 with a plain task 1.1 (Finished), a 2-instance sweep
    1.2 (both Finished) and a task 1.3 canceled before it started; everything consistent."""
    c = Chaos(Config(tasks=4, seed=1, quiet=True))
    c.submitted = [JobPlan(0.0, "Normal", [
        TaskPlan("t1", "quick", True, "true"),
        TaskPlan("t2", "quick", True, "true", sweep=(1, 2, 1)),
        TaskPlan("t3", "quick", True, "true")])]
    c.submitted[0].job_id = 1

    def done(tid):
        cid = f"hpcq-{tid}-7"
        return {"state": "Finished", "celery_id": cid, "output": cid + "\n"}
    c.task_recs = {"1.1": done("1.1"), "1.3": {"state": "Canceled"},
                   "1.2": {"state": "Finished", "total": "2", "next": "2", "i:Finished": "2",
                           "start": "1", "end": "2", "step": "1"}}
    c.inst_recs = {"1.2.1": done("1.2.1"), "1.2.2": done("1.2.2")}
    c.master_sets = {"1.2": (0, 0)}
    c.job_recs = {1: {"state": "Finished", "ntasks": "3", "c:Finished": "2", "c:Canceled": "1"}}
    c.settled_states = {1: "Finished"}
    c.queue, c.on_workers, c.waiting = [], {"w1": []}, {}
    c.left_after_settle, c.left_after_stop = [], []
    ev = EventTail("redis://127.0.0.1:1/0")
    ran = ["Dispatching", "Running", "Finished"]
    ev.task_events.update({"1.1": ["Submitted", "Validating", "Queued"] + ran,
                           "1.2": ["Submitted", "Validating", "Queued", "Running", "Finished"],
                           "1.2.1": list(ran), "1.2.2": list(ran),
                           "1.3": ["Submitted", "Validating", "Queued", "Canceled"]})
    ev.job_events["1"] = ["Submitted", "Validating", "Queued", "Running", "Finished"]
    c.events = ev
    for tid, v in (("1.1", ""), ("1.2.1", " v=1"), ("1.2.2", " v=2")):
        with open(os.path.join(c.marks, tid), "w") as f:
            f.write(f"start hpcq-{tid}-7{v}\nend hpcq-{tid}-7\n")
    return c


def broken(c: Chaos) -> Counter:
    c.invariants.clear()
    c.check_all()
    return Counter({k: len(i.violations) for k, i in c.invariants.items() if i.violations})


@pytest.mark.unit
def test_the_checker_finds_each_kind_of_violation(tmp_path):
    c = made_up_run(tmp_path)
    assert broken(c) == Counter(), c.report()
    assert c.invariants["2"].checked == 1 and c.invariants["3b"].checked == 3

    with open(os.path.join(c.marks, "1.3"), "w") as f:      # canceled before it started, yet ran
        f.write("start hpcq-1.3-9\n")
    assert set(broken(c)) == {"2", "2b"}
    os.unlink(os.path.join(c.marks, "1.3"))

    c.events.task_events["1.1"].append("Finished")         # recorded twice
    assert set(broken(c)) == {"3"}
    c.events.task_events["1.1"].pop()

    c.task_recs["1.1"]["output"] = "hpcq-1.1-3\n"           # another attempt's result
    assert set(broken(c)) == {"3b"}
    c.task_recs["1.1"]["output"] = "hpcq-1.1-7\n"
    with open(os.path.join(c.marks, "1.2.2"), "w") as f:   # the wrong sweep value
        f.write("start hpcq-1.2.2-7 v=1\nend hpcq-1.2.2-7\n")
    assert set(broken(c)) == {"3b"}
    with open(os.path.join(c.marks, "1.2.2"), "w") as f:
        f.write("start hpcq-1.2.2-7 v=2\nend hpcq-1.2.2-7\n")

    c.inst_recs["1.2.1"]["state"] = "Running"               # not in an end state
    c.events.task_events["1.2.1"] = ["Dispatching", "Running"]
    assert "1" in broken(c)
    c.inst_recs["1.2.1"]["state"] = "Finished"
    c.events.task_events["1.2.1"] = ["Dispatching", "Running", "Finished"]

    c.job_recs[1]["c:Finished"] = "3"                       # a count out of step
    assert set(broken(c)) == {"5"}
    c.job_recs[1]["c:Finished"] = "2"
    c.task_recs["1.2"]["i:Finished"] = "1"
    assert set(broken(c)) == {"5"}
    c.task_recs["1.2"]["i:Finished"] = "2"

    c.job_recs[1]["state"] = "Failed"                       # no task Failed
    c.settled_states[1] = "Failed"
    c.events.job_events["1"][-1] = "Failed"
    assert set(broken(c)) == {"6"}
    c.job_recs[1]["state"] = c.settled_states[1] = c.events.job_events["1"][-1] = "Finished"

    c.left_after_settle = ["pid 1234 sleep 60"]             # a task process left
    assert set(broken(c)) == {"4"}
    c.left_after_settle = []
    assert broken(c) == Counter()
    c.cleanup()
