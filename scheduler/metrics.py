"""Prometheus metrics of the cluster, served by ``hpcq scheduler --metrics-port P``.

The figures are the cluster's, not this process's: gauges and the attempt counters are read
from Redis when Prometheus scrapes (so every scheduler, leader or standby, serves the same
numbers, and a restart loses nothing), and the latency histograms come from the event stream
(scheduler/api/events.py), which this process tails from the moment it starts.

What is read at a scrape, in a fixed number of pipelined round trips per 1000 jobs or queued
entries: every job's per-state task counts (a sweep counted once, as ``job view`` counts it),
the queue with each queued sweep's instances left, the workers (scheduler/api/nodes.py), and
the ``STATS`` counters the scripts increment.

Latencies, observed when the event that ends them is read:
  dispatch   Queued -> Dispatching (a sweep instance: from its sweep's or its own Queued); this
             includes time spent waiting for dependencies, since a task is Queued from submit
  start      Queued -> Running (the dispatch plus the message to the worker and its start)
  cancel     Canceling -> the end of the attempt (Failed, or Queued for a requeue): how long a
             running task took to stop (a sweep master's: until its last instance stopped)
Only moves that began after this process started are observed (it needs both ends)."""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from scheduler.api import events as ev_api
from scheduler.api.nodes import node_list
from scheduler.core import keys, schema
from scheduler.core.states import JobState, TaskState
from scheduler.core.store import Store
from scheduler.errors import HpcqError, RedisUnavailable
from scheduler.settings import Settings

log = logging.getLogger("hpcq.metrics")

#: Records read per pipelined round trip.
BATCH = 1000
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800,
                   3600, 6 * 3600, float("inf"))
CANCEL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, float("inf"))
_TASK_END = {"Finished", "Failed", "Canceled"}


def _batches(items, n=BATCH):
    for k in range(0, len(items), n):
        yield items[k:k + n]


class ClusterCollector:
    """The gauges and counters, read from Redis at each scrape."""

    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings

    def collect(self):
        up = GaugeMetricFamily("hpcq_redis_up", "1 if this scrape could read hpcq's Redis")
        try:
            families = self._read()
        except (RedisUnavailable, HpcqError) as exc:
            log.warning("metrics: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> list:
        r = self.store.redis
        jobs = {s.value: 0 for s in JobState}
        tasks = {s.value: 0 for s in TaskState}
        count_fields = [f"c:{s.value}" for s in TaskState]
        ids = self.store.job_ids()
        for chunk in _batches(ids):
            pipe = r.pipeline(transaction=False)
            for j in chunk:
                pipe.hmget(keys.job(j), "state", *count_fields)
            for row in self.store._do(pipe.execute):
                if row[0] in jobs:
                    jobs[row[0]] += 1
                for s, v in zip(TaskState, row[1:]):
                    tasks[s.value] += int(v or 0)
        out = []
        g = GaugeMetricFamily("hpcq_jobs", "Jobs kept in Redis, per state", labels=["state"])
        for s, n in jobs.items():
            g.add_metric([s], n)
        out.append(g)
        g = GaugeMetricFamily("hpcq_tasks", "Tasks of the jobs kept in Redis, per state (a sweep "
                              "counted once, as hpcq job view counts it)", labels=["state"])
        for s, n in tasks.items():
            g.add_metric([s], n)
        out.append(g)
        out.append(GaugeMetricFamily("hpcq_queue_depth", "Tasks and sweep instances ready to "
                                     "run that wait for a free slot", value=self.queue_depth()))
        out += self.workers()
        stats = self.store._do(r.hgetall, schema.key("STATS"))
        for field, help_ in schema.STATS.items():
            c = CounterMetricFamily(f"hpcq_{field}", help_)
            c.add_metric([], int(stats.get(field) or 0))
            out.append(c)
        return out

    def queue_depth(self) -> int:
        """The dispatchable entries of the queue: a task counts 1, a sweep its instances left
        (requeued ones, then those never handed out)."""
        r = self.store.redis
        members = self.store._do(r.zrange, keys.QUEUE, 0, -1)
        depth = 0
        for chunk in _batches(members):
            pipe = r.pipeline(transaction=False)
            for tid in chunk:
                pipe.hmget(keys.task(tid), "total", "next", "pre")
                pipe.llen(keys.sweep_redo(tid))
            vals = self.store._do(pipe.execute)
            for k in range(0, len(vals), 2):
                (total, nxt, pre), redo = vals[k], vals[k + 1]
                if total is None:
                    depth += 1
                else:
                    depth += redo + max(0, int(total) - int(nxt or 0) - int(pre or 0))
        return depth

    def workers(self) -> list:
        nodes = node_list(self.store, self.settings.worker_timeout)
        by_state: dict[str, int] = {}
        for n in nodes:
            by_state[n.state] = by_state.get(n.state, 0) + 1
        states = GaugeMetricFamily("hpcq_workers", "Workers Redis knows, per state (unreachable: "
                                   "online but silent past the worker timeout)", labels=["state"])
        for s, n in sorted(by_state.items()):
            states.add_metric([s], n)
        alive = [n for n in nodes if n.state in ("online", "draining")]
        return [
            states,
            GaugeMetricFamily("hpcq_workers_alive", "Workers heartbeating (online or draining)",
                              value=len(alive)),
            GaugeMetricFamily("hpcq_slots", "Slots of the alive workers", value=sum(n.slots for n in alive)),
            GaugeMetricFamily("hpcq_slots_free", "Slots free for a task (online workers)",
                              value=sum(n.free for n in alive)),
        ]


class LatencyTail(threading.Thread):
    """Follows the event stream and observes the latencies (see the module's docstring)."""

    def __init__(self, store: Store, registry: CollectorRegistry):
        super().__init__(daemon=True, name="hpcq-metrics-events")
        self.store = store
        self.dispatch = Histogram("hpcq_dispatch_latency_seconds", "Queued -> Dispatching",
                                  buckets=LATENCY_BUCKETS, registry=registry)
        self.start_latency = Histogram("hpcq_start_latency_seconds", "Queued -> Running",
                                       buckets=LATENCY_BUCKETS, registry=registry)
        self.cancel = Histogram("hpcq_cancel_to_stopped_seconds", "Canceling -> stopped "
                                "(the attempt's end)", buckets=CANCEL_BUCKETS, registry=registry)
        self.queued: dict[str, float] = {}      # task, instance or sweep -> when it was queued
        self.sent: dict[str, float] = {}        # dispatched unit -> when it was queued
        self.canceling: dict[str, float] = {}
        self.cursor = ev_api.last_cursor(store)  # from now: taken before the thread starts

    def run(self) -> None:
        while True:
            try:
                for e in ev_api.events(self.store, since=self.cursor):
                    self.cursor = e.cursor
                    if e.kind == "task":
                        self.observe(e)
            except Exception:      # never let a bad entry stop the histograms for good
                log.exception("metrics: reading the event stream")
                threading.Event().wait(1.0)

    def observe(self, e: ev_api.Event) -> None:
        tid, st = e.id, e.state
        if st == "Queued":
            self.queued[tid] = e.time
            self.sent.pop(tid, None)
        elif st == "Dispatching":
            t0 = self.queued.pop(tid, None)
            if t0 is None and tid.count(".") == 2:     # an instance: queued with its sweep
                t0 = self.queued.get(tid.rpartition(".")[0])
            if t0 is not None:
                self.dispatch.observe(max(0.0, e.time - t0))
                self.sent[tid] = t0
        elif st == "Running":
            t0 = self.sent.pop(tid, None)
            if t0 is not None:
                self.start_latency.observe(max(0.0, e.time - t0))
        elif st == "Canceling":
            self.canceling[tid] = e.time
        if st in _TASK_END or (st == "Queued" and e.old_state == "Canceling"):
            t0 = self.canceling.pop(tid, None)
            if t0 is not None:
                self.cancel.observe(max(0.0, e.time - t0))
        if st in _TASK_END:
            self.queued.pop(tid, None)
            self.sent.pop(tid, None)


def registry_for(store: Store, settings: Settings) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(ClusterCollector(store, settings))
    ProcessCollector(registry=reg)
    return reg


def serve(settings: Settings, port: int, address: str = "0.0.0.0") -> None:
    """Start the endpoint (``/metrics`` on ``address:port``) and the event tail, in daemon
    threads of this process."""
    store = Store(settings.redis_url, timeout=settings.redis_timeout)
    reg = registry_for(store, settings)
    tail = LatencyTail(store, reg)
    listen(reg, port, address)
    tail.start()
    log.info("metrics on http://%s:%d/metrics", address, port)


def listen(reg: CollectorRegistry, port: int, address: str) -> None:
    """``start_http_server``, with a taken port as one clear error."""
    try:
        start_http_server(port, addr=address, registry=reg)
    except OSError as exc:
        raise HpcqError(f"cannot serve metrics on {address}:{port}: {exc.strerror}") from None
