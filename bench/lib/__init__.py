"""What the benchmarks share (they import this library, never each other):

- :mod:`bench.lib.machine`: CPUs, load, CPU seconds per process group, the machine's description,
  progress lines;
- :mod:`bench.lib.stack`: the real service topology on this machine (a PostgreSQL database, a
  Redis database, moto's S3 server, a Celery worker and the API as subprocesses, started with
  ``tests/support/processes.py``'s launcher) and an HTTP client with a key;
- :mod:`bench.lib.client`: uploads, the final states, number formatting for the tables;
- :mod:`bench.lib.windows`: a timed window and the CPU other processes took in it (noisy or
  quiet), medians;
- :mod:`bench.lib.bare`: the bare engine's throughput in N processes (the reference);
- :mod:`bench.lib.batches`: load through the batch API (submit, poll to final, per-job figures,
  the timed acceptance of a big batch);
- :mod:`bench.lib.stats`: percentiles and the n / median / p99 / max summary;
- :mod:`bench.lib.tools`: external comparison tools (odiff, ImageMagick) found on the machine;
- :mod:`bench.lib.webhook_stack`, :mod:`bench.lib.hook_receiver`,
  :mod:`bench.lib.webhook_throughput`, :mod:`bench.lib.webhook_latency`: the webhook
  benchmark's stack (beat in the worker, a delivery worker), its verifying receiver, and its two
  measurements.

Test image pairs are made by :mod:`bench.images`.
"""
