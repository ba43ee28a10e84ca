"""Runners: in-process, and a real `dask scheduler` + `dask worker` pair on localhost (tcp round trip)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crosslocate.errors import ConfigError
from crosslocate.pipelines.cluster import Runner, available_cores, open_runner


def _square(x):
    if x == 3:
        raise ValueError("three is bad")
    return x * x


def test_sync_runner_reports_results_and_errors():
    with open_runner("sync") as runner:
        out = list(runner.map_unordered(_square, range(5)))
    assert isinstance(runner, Runner) and [(j, r) for j, r, e in out if e is None] == [(0, 0), (1, 1), (2, 4), (4, 16)]
    errors = [(j, str(e)) for j, r, e in out if e is not None]
    assert errors == [(3, "three is bad")]
    assert available_cores() >= 1


def test_bad_scheduler_is_a_config_error():
    with pytest.raises(ConfigError, match="tcp://"), open_runner("mycluster"):
        pass


def _start_cluster(tmp_path: Path, n_workers: int) -> tuple[str, list[subprocess.Popen]]:
    """A `dask scheduler` and ``n_workers`` separate `dask worker` processes (1 thread, no nanny: a
    worker is its own process) on 127.0.0.1, the way a user starts them on several machines."""
    bindir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    dask = str(bindir / "dask")
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            **common,
        )
    ]
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not sched_file.exists():
        _stop(procs)
        pytest.fail("dask scheduler did not start within 60 s")
    address = json.loads(sched_file.read_text())["address"]
    for _ in range(n_workers):
        procs.append(
            subprocess.Popen(
                [dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--memory-limit", "2GiB"],
                **common,
            )
        )
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(n_workers, timeout=60)
    return address, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.fixture
def dask_cluster(tmp_path):
    """(scheduler address, [scheduler, worker, worker] processes)."""
    address, procs = _start_cluster(tmp_path, 2)
    try:
        yield address, procs
    finally:
        _stop(procs)


def test_tcp_scheduler_round_trip(dask_cluster):
    # math.factorial: importable by the worker (functions of test modules are not); -3 raises ValueError
    with open_runner(dask_cluster[0]) as runner:
        assert runner.n_workers == 2
        jobs = [0, 1, 2, -3, 4, 5]
        out = sorted((j, r, e) for j, r, e in runner.map_unordered(math.factorial, jobs, max_in_flight=2))
    assert [(j, r) for j, r, e in out if e is None] == [(0, 1), (1, 1), (2, 2), (4, 24), (5, 120)]
    assert [(j, type(e)) for j, r, e in out if e is not None] == [(-3, ValueError)]


def _shard_bytes(db: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(db.glob("shard-*.h5"))}


def test_cluster_build_survives_kill9_and_equals_local_build(dask_cluster, tiny_world, tmp_path, database_difference):
    """A uniform build through a scheduler with two worker processes, one of them killed with SIGKILL
    after the first shard landed, completes, verifies, and is byte-identical to an in-process build."""
    import threading

    from crosslocate.datasets.manifest import Manifest
    from crosslocate.datasets.verify import verify_database
    from crosslocate.pipelines.build import build_database
    from crosslocate.pipelines.presets import get_preset

    address, procs = dask_cluster
    dem, region, _ = tiny_world
    preset = get_preset("tiny").with_overrides(
        grid={"yaws_deg": (0.0, 120.0, 240.0), "spacing_m": 700.0}, shard={"views_per_shard": 6},
        render={"size_px": 48},
    )  # fmt: skip
    remote = tmp_path / "remote"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            build_database("uniform", preset, region, dem, remote, scheduler=address)
        except BaseException as exc:  # re-raised in the test thread
            errors.append(exc)

    th = threading.Thread(target=run)
    th.start()
    victim = procs[2]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and th.is_alive():
        if (remote / "manifest.json").exists() and len(Manifest.load(remote).shards) >= 1:
            break
        time.sleep(0.02)
    n_before = len(Manifest.load(remote).shards)
    victim.kill()  # SIGKILL: no goodbye to the scheduler, its running task is lost
    victim.wait(timeout=30)
    th.join(timeout=300)
    assert not th.is_alive() and not errors, errors
    total = Manifest.load(remote).n_planned_shards
    assert n_before < total, "the build finished before a worker could be killed"
    assert verify_database(remote).ok
    local = build_database("uniform", preset, region, dem, tmp_path / "local", scheduler="sync")
    a, b = _shard_bytes(remote), _shard_bytes(local)
    assert len(a) == total > 4
    assert a == b, database_difference(remote, tmp_path / "local", sorted(k for k in a if a[k] != b.get(k)))


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("mycluster", "tcp://host:8786"),
        ("tcp://", "not a dask scheduler address"),
        ("tcp://host-without-port", "not a dask scheduler address"),
        ("http://127.0.0.1:8786", "not a dask scheduler address"),
        ("tcp://127.0.0.1:1", "cannot reach the dask scheduler"),  # nothing listens on port 1
    ],
)
def test_check_scheduler_refuses_bogus_addresses(address, needle):
    from crosslocate.pipelines.cluster import check_scheduler

    with pytest.raises(ConfigError, match=needle):
        check_scheduler(address)
    for fine in (None, "sync", "local"):
        check_scheduler(fine)
