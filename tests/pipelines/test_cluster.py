"""Runners: in-process, and a real `dask scheduler` + `dask worker` pair on localhost (tcp round trip)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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


@pytest.fixture
def dask_pair(tmp_path):
    """Address of a `dask scheduler` with one `dask worker` (1 thread) started as subprocesses."""
    bindir = Path(sys.executable).parent
    sched_file = tmp_path / "scheduler.json"
    common = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    procs = [
        subprocess.Popen(
            [
                str(bindir / "dask"),
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
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not sched_file.exists():
            pytest.fail("dask scheduler did not start within 60 s")
        address = json.loads(sched_file.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [
                    str(bindir / "dask"),
                    "worker",
                    address,
                    "--nworkers",
                    "1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--memory-limit",
                    "2GiB",
                ],
                **common,
            )
        )
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.mark.slow
def test_tcp_scheduler_round_trip(dask_pair, tmp_path):
    # math.factorial: importable by the worker (functions of test modules are not); -3 raises ValueError
    with open_runner(dask_pair) as runner:
        assert runner.n_workers == 1
        jobs = [0, 1, 2, -3, 4, 5]
        out = sorted((j, r, e) for j, r, e in runner.map_unordered(math.factorial, jobs, max_in_flight=2))
    assert [(j, r) for j, r, e in out if e is None] == [(0, 1), (1, 1), (2, 2), (4, 24), (5, 120)]
    assert [(j, type(e)) for j, r, e in out if e is not None] == [(-3, ValueError)]


@pytest.mark.slow
def test_tcp_build_equals_sync_build(dask_pair, tmp_path):
    """A tiny uniform database built through the scheduler equals one built in-process."""
    from crosslocate.datasets.shards import open_database
    from crosslocate.datasets.verify import verify_database
    from crosslocate.dem.sources import open_dem
    from crosslocate.dem.sources.geotiff import write_geotiff
    from crosslocate.dem.sources.synthetic import AlpineParams, generate_alpine
    from crosslocate.pipelines.build import build_database
    from crosslocate.pipelines.presets import get_preset

    p = AlpineParams(extent_m=6000.0, spacing_m=100.0, erosion_iterations=1)
    z, transform, tags = generate_alpine(p)
    dem_path = str(write_geotiff(tmp_path / "dem.tif", z, transform, p.crs, tags=tags))
    with open_dem(dem_path) as dem:
        w, s, e, n = dem.bounds_lonlat
    poly = [[[w, s], [e, s], [e, n], [w, n], [w, s]]]
    region = tmp_path / "clusterreg.geojson"
    region.write_text(json.dumps({"type": "Polygon", "coordinates": poly}))
    preset = get_preset("tiny").with_overrides(
        grid={"yaws_deg": (0.0, 180.0), "spacing_m": 2000.0}, shard={"views_per_shard": 2}, render={"size_px": 32}
    )
    remote = build_database("uniform", preset, str(region), dem_path, tmp_path / "remote", scheduler=dask_pair)
    local = build_database("uniform", preset, str(region), dem_path, tmp_path / "local", scheduler="sync")
    assert verify_database(remote).ok
    with open_database(remote) as a, open_database(local) as b:
        assert a.n_views == b.n_views > 2
        idx = np.arange(a.n_views)
        for m in ("depth", "silhouette", "semantic"):
            assert np.array_equal(a.read_batch(m, idx), b.read_batch(m, idx))


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
