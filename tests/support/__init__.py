"""What the tests and the benchmarks (``bench/``) share, one module per idea:

  wait          ``wait_until``: the one poll loop; ``stays``: a condition held a while
  ports         ``free_port``: the one port picker (never 6379)
  redis_server  ``RedisServer``: the one redis-server starter (the session's, the benchmarks')
  procs         ``Proc``/``Procs`` (children always cleaned up) and the process finders
  hpcq          ``hpcq(...)``: the CLI as a subprocess
  cluster       ``Cluster`` and ``running_cluster``: scheduler and workers as child processes
  netns         network namespaces (``Network``, ``Host``) for partition tests

Import from the modules or from here: ``from tests.support import wait_until, free_port``."""

from tests.support.cluster import (CLUSTER_ENV, MARKER_VAR, Cluster, as_cluster, assert_no_leftovers, marked_processes,
                                   dump_logs, new_marker, running_cluster, task_processes, with_db)
from tests.support.hpcq import hpcq
from tests.support.ports import free_port
from tests.support.procs import (PROC_MARKER_VAR, Proc, Procs, alive, assert_gone, attempt_processes,
                                 descendants, describe, die_with_parent, no_task_processes, processes)
from tests.support.redis_server import REDIS_SERVER_BIN, RedisServer
from tests.support.wait import stays, wait_until

__all__ = [
    "CLUSTER_ENV", "MARKER_VAR", "Cluster", "as_cluster", "assert_no_leftovers", "dump_logs", "marked_processes", "new_marker",
    "running_cluster", "task_processes", "with_db", "hpcq", "free_port", "PROC_MARKER_VAR", "Proc",
    "Procs", "alive", "assert_gone", "attempt_processes", "descendants", "describe", "die_with_parent",
    "no_task_processes", "processes", "REDIS_SERVER_BIN", "RedisServer", "stays", "wait_until",
]
