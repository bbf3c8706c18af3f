"""What the benchmarks share (they import this library, never each other):

- :mod:`bench.lib.machine`: CPUs, load, CPU seconds per process group, the machine's description,
  progress lines;
- :mod:`bench.lib.stack`: the real service topology on this machine (a PostgreSQL database, a
  Redis database, moto's S3 server, a Celery worker and the API as subprocesses, started with
  ``tests/support/processes.py``'s launcher) and an HTTP client with a key;
- :mod:`bench.lib.client`: uploads, the final states, number formatting for the tables.
"""
