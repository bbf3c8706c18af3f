"""Smoke tests of the webhook benchmark: it runs end to end on a tiny configuration.

Speed is never asserted (the machine is shared and timings are noisy). The end-to-end test starts
the real stack (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379, moto S3, the API and the
Celery worker with its beat) through the benchmark's own functions, at 5 comparisons per second
for 2 s plus a backlog of 10 pings, and checks that every webhook arrived correctly signed, that
the figures are consistent and that everything was cleaned up. The others check the receiver,
the target logic, the command line and the images.
"""

from __future__ import annotations

import io
import json
import statistics
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
import sqlalchemy as sa
from PIL import Image
from rich.console import Console
from standardwebhooks.webhooks import Webhook

from bench import bench_webhooks as bwh
from bench.images import noise_png_pairs
from bench.lib import (
    hook_receiver,
    stack,
    stats,
    webhook_latency,
    webhook_stack,
    webhook_throughput,
)
from core.config import WorkerSettings

TINY = bwh.WebhookBenchConfig(
    workers=1, rate=5.0, seconds=2.0, deliveries=10, senders=2, drain_s=60.0
)
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_the_whole_benchmark_runs_on_a_tiny_configuration_and_cleans_up() -> None:
    report = bwh.run(TINY)

    tp = report.throughput
    assert tp is not None
    assert tp.deliveries == tp.arrived == 10 and tp.states == {"succeeded": 10}
    assert tp.attempts == 10  # one attempt each: the receiver answers 200
    assert tp.wall_s is not None and tp.first_arrival_s is not None
    assert 0 < tp.first_arrival_s <= tp.wall_s
    assert tp.rate is not None and tp.rate > 0
    assert tp.attempt_ms["n"] == 10
    assert tp.cpu_s["worker pool"] > 0

    lat = report.latency
    assert lat is not None
    assert lat.planned == lat.accepted == 10 and lat.rejected == {}
    assert lat.states == {"succeeded": 10}
    assert lat.arrived == 10 and lat.missing == 0 and lat.missing_ids == []
    # One delay per comparison; a webhook arrives after its comparison ended (same clock),
    # and its first attempt starts after the comparison's transaction committed.
    assert len(lat.delay_s) == len(lat.to_attempt_ms) == len(lat.post_to_arrival_ms) == 10
    assert all(d > 0 for d in lat.delay_s)
    assert all(v >= 0 for v in lat.to_attempt_ms)
    assert len(lat.queue_wait_ms) == len(lat.run_ms) == 10
    assert lat.submit_rate is not None and lat.finish_rate is not None
    assert lat.delay_median_s is not None and lat.delay_p99_s is not None
    assert lat.delay_median_s <= lat.delay_p99_s <= max(lat.delay_s)

    assert report.bad_signatures == 0 and report.duplicates == 0
    # Warm-up (2 pings + 2 comparisons) + backlog + latency window, each once.
    assert report.requests == 4 + 10 + 10
    assert report.warmup_s is not None and report.warmup_s > 0

    # Cleaned up: processes, database, Redis database.
    for pid in report.stack["pids"].values():
        assert not _alive(pid), report.stack
    admin = sa.create_engine(stack.PG_ADMIN_URL, poolclass=sa.NullPool)
    try:
        with admin.connect() as connection:
            left = connection.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                {"name": report.stack["database"]},
            ).scalar_one()
    finally:
        admin.dispose()
    assert left == 0
    client = redis.Redis(host=stack.REDIS_HOST, port=stack.REDIS_PORT, db=report.stack["redis_db"])
    try:
        assert client.exists(stack.REDIS_MARKER) == 0
    finally:
        client.close()

    # The report renders and serialises.
    out = io.StringIO()
    bwh.render(Console(file=out, width=160), report)
    text = out.getvalue()
    assert "Targets" in text and "Where the time goes" in text and "Delivery throughput" in text
    data = json.loads(json.dumps(report.to_dict(), default=str))
    statuses = {t["target"]: t["status"] for t in data["targets"]}
    assert all(s in ("PASS", "FAIL", "info") for s in statuses.values()), statuses
    assert data["latency"]["delay_s_summary"]["n"] == 10
    assert data["receiver"] == {"requests": 24, "bad_signatures": 0, "duplicates": 0}


def _post(receiver: hook_receiver.Receiver, msg_id: str, body: str, secret: str) -> int:
    now = datetime.now(UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, now, body),
        "content-type": "application/json",
    }
    return httpx.post(receiver.url(), content=body, headers=headers, timeout=5).status_code


def test_receiver_verifies_records_first_arrivals_and_counts_the_rest() -> None:
    receiver = hook_receiver.Receiver()
    try:
        receiver.secret = SECRET
        body = json.dumps({"type": hook_receiver.EVENT, "timestamp": "x", "data": {"id": "c1"}})
        ping = json.dumps({"type": "ping", "timestamp": "x", "data": {"object": "ping"}})
        before = datetime.now(UTC).timestamp()
        assert _post(receiver, "msg_1", body, SECRET) == 200
        assert _post(receiver, "msg_1", body, SECRET) == 200  # a retry of the same event
        assert _post(receiver, "msg_2", ping, SECRET) == 200
        assert _post(receiver, "msg_3", body, "whsec_" + "Ab" * 16) == 200  # wrong secret
    finally:
        receiver.close()
    assert receiver.requests == 4 and receiver.bad_signatures == 1
    assert receiver.duplicates() == 1
    first = receiver.arrived(["msg_1", "msg_2", "msg_3"])
    assert [a.msg_id for a in first] == ["msg_1", "msg_2"]
    assert first[0].type == hook_receiver.EVENT and first[0].subject == "c1" and first[0].count == 2
    assert first[1].type == "ping" and first[1].subject is None
    assert before <= first[0].at <= first[1].at
    assert set(receiver.for_subjects(["c1", "c2"])) == {"c1"}


def _latency(
    delays: list[float], *, finish_rate: float, missing: int = 0
) -> webhook_latency.LatencyRun:
    return webhook_latency.LatencyRun(
        rate=50.0,
        planned=len(delays),
        accepted=len(delays),
        rejected={},
        submit_rate=50.0,
        send_lag_ms=stats.summary([]),
        post_ms=stats.summary([]),
        states={"succeeded": len(delays)},
        finish_rate=finish_rate,
        arrived=len(delays) - missing,
        missing=missing,
        missing_ids=[],
        delay_s=delays,
        queue_wait_ms=[],
        run_ms=[],
        to_attempt_ms=[],
        post_to_arrival_ms=[],
        retried=0,
        wall_s=10.0,
        cpu_s={},
        cpus=2,
        load_start=[0.0, 0.0, 0.0],
    )


def test_targets_are_judged_on_median_p99_rate_and_completeness() -> None:
    report = bwh.Report(config=bwh.WebhookBenchConfig(workers=2), machine={})
    assert [t["status"] for t in report.targets()] == ["n/a"] * 4
    fast = [0.05] * 99 + [2.0]
    report.latency = _latency(fast, finish_rate=49.0)
    assert [t["status"] for t in report.targets()] == ["PASS", "PASS", "PASS", "PASS", "n/a"]
    # p99 by linear interpolation, as the standard library's inclusive quantiles compute it.
    p99 = statistics.quantiles(fast, n=100, method="inclusive")[98]
    assert report.targets()[1]["measured"] == pytest.approx(p99, abs=1e-3)
    report.latency = _latency(fast, finish_rate=40.0)  # below 95 % of 50/s
    assert [t["status"] for t in report.targets()][:3] == ["PASS", "PASS", "FAIL"]
    report.latency = _latency([1.0] * 100, finish_rate=50.0)  # the median must be < 1 s
    assert [t["status"] for t in report.targets()][:2] == ["FAIL", "PASS"]
    report.latency = _latency([0.1] * 98 + [3.5, 3.5], finish_rate=50.0)
    assert [t["status"] for t in report.targets()][:2] == ["PASS", "FAIL"]
    report.latency = _latency([0.1] * 10, finish_rate=50.0, missing=1)
    assert report.targets()[3]["status"] == "FAIL" and report.targets()[3]["measured"] == 1
    report.latency = _latency([0.1] * 10, finish_rate=50.0)
    report.throughput = _throughput(arrived=100, wall_s=2.0)
    assert [t["status"] for t in report.targets()][3:] == ["PASS", "info"]
    assert report.targets()[4]["measured"] == 50.0  # 100 deliveries in 2 s
    report.throughput = _throughput(arrived=98, wall_s=None)  # two never arrived
    assert [t["status"] for t in report.targets()][3:] == ["FAIL", "n/a"]
    assert report.targets()[3]["measured"] == 2
    report.throughput, report.bad_signatures = _throughput(arrived=100, wall_s=2.0), 1
    assert report.targets()[3]["status"] == "FAIL"


def _throughput(*, arrived: int, wall_s: float | None) -> webhook_throughput.ThroughputRun:
    return webhook_throughput.ThroughputRun(
        deliveries=100,
        arrived=arrived,
        write_s=0.1,
        wall_s=wall_s,
        first_arrival_s=0.05,
        steady_rate=None,
        attempt_ms=stats.summary([]),
        states={"succeeded": arrived},
        attempts=arrived,
        cpu_s={},
        cpus=2,
        load_start=[0.0, 0.0, 0.0],
    )


def test_percentiles_and_summaries() -> None:
    rng = np.random.default_rng(7)
    values = [float(v) for v in rng.exponential(0.2, 501)]
    # The median checked against the standard library's (an independent implementation).
    assert stats.percentile(values, 50) == pytest.approx(statistics.median(values))
    assert stats.percentile([], 99) is None
    assert stats.percentile([3.0], 99) == 3.0
    s = stats.summary(values)
    assert s["n"] == 501 and s["max"] == pytest.approx(max(values), abs=1e-4)
    median, p99, top = s["median"], s["p99"], s["max"]
    assert median is not None and p99 is not None and top is not None
    assert median <= p99 <= top
    assert stats.summary([]) == {"n": 0, "median": None, "p99": None, "max": None}


def test_command_line_defaults_and_errors() -> None:
    config, out = bwh.parse_args([])
    assert out is None
    assert (config.rate, config.seconds, config.comparisons) == (50.0, 10.0, 500)
    # The service's default worker processes (DIFFALL_WORKER__CONCURRENCY, or CPUs + 1).
    assert config.workers == WorkerSettings().processes >= 2
    assert (config.deliveries, config.size, config.webhook_workers) == (500, 32, 4)
    config, out = bwh.parse_args(
        ["--rate", "5", "--seconds", "2", "--workers", "1", "--webhook-worker", "4", "--json", "o"]
    )
    assert (config.rate, config.comparisons, config.workers, config.webhook_workers) == (
        5.0,
        10,
        1,
        4,
    )
    assert out == Path("o")
    for bad in (["--rate", "0"], ["--workers", "0"], ["--size", "4"], ["--deliveries", "-1"]):
        with pytest.raises(SystemExit):
            bwh.parse_args(bad)


def test_worker_command_lines_are_the_normal_set_up() -> None:
    argv = webhook_stack.worker_argv(concurrency=2, schedule=Path("/tmp/s"))
    assert argv[1:5] == ["-m", "celery", "--app=worker.celery_app", "worker"]
    assert "--beat" in argv and "--schedule=/tmp/s" in argv and "--concurrency=2" in argv
    assert "--queues=interactive,batch,maintenance" in argv and "--pool=prefork" in argv
    extra = webhook_stack.webhook_worker_argv(threads=4)
    assert "--queues=maintenance" in extra and "--pool=threads" in extra
    assert "--concurrency=4" in extra and "--beat" not in extra


def test_pairs_are_seeded_distinct_pngs_of_the_size() -> None:
    pairs = noise_png_pairs(2, 32, seed=5)
    assert pairs == noise_png_pairs(2, 32, seed=5)
    for a, b in pairs:
        # Decoded by PIL (independent of OpenCV, which wrote them).
        ia, ib = (np.asarray(Image.open(io.BytesIO(x))) for x in (a, b))
        assert ia.shape == ib.shape == (32, 32, 3)
        changed = np.any(ia != ib, axis=2)
        assert changed[8:16, 8:16].all() and not changed[16:, :].any()
    assert pairs[0][0] != pairs[1][0]
