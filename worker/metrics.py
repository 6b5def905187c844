"""The worker's own Prometheus endpoint (``hpcq worker --metrics-port P``): what only this
worker's main process knows - its slots, the attempts its registry holds (running, or ended
with a result still waiting for Redis), whether it is draining - and its process counters.

The cluster's figures (tasks per state, queue depth, latencies, attempts lost and rerun) are
the scheduler's endpoint (scheduler/metrics.py): they come from Redis and would only be
repeated here.  Read at scrape time from the registry files (worker/registry.py), so a scrape
costs no Redis call and works through a Redis outage."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

from scheduler.metrics import listen


class WorkerCollector:
    def __init__(self, presence):
        self.presence = presence

    def collect(self):
        p = self.presence
        label = [p.name or ""]
        entries = p.registry.entries() if p.registry else []
        held = sum(1 for e in entries if e.get("result"))
        rows = (
            ("hpcq_worker_slots", "Tasks this worker runs at once", p.slots),
            ("hpcq_worker_attempts", "Attempts this worker holds (running, or ended and not "
             "yet recorded)", len(entries)),
            ("hpcq_worker_results_held", "Ended attempts whose result waits for Redis", held),
            ("hpcq_worker_draining", "1 while the worker shuts down (takes no new work)",
             int(p.draining)),
        )
        for name, help_, value in rows:
            g = GaugeMetricFamily(name, help_, labels=["worker"])
            g.add_metric(label, value)
            yield g


def serve(presence, port: int, address: str = "0.0.0.0") -> None:
    """Serve ``/metrics`` from a daemon thread of the worker's main process."""
    reg = CollectorRegistry()
    reg.register(WorkerCollector(presence))
    ProcessCollector(registry=reg)
    listen(reg, port, address)
