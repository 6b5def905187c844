"""The Python API (``Scheduler``, ``Job``, ``Task``): specs as users give them, views of
records, and the operations, each one atomic step of the core."""
