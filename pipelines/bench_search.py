"""Search benchmark: faiss exact (flat) vs IVF / HNSW query throughput and recall loss.

Synthetic descriptors: ``n_db`` unit vectors of dimension ``dim`` drawn around ``n_clusters``
random centres (so approximate indices see realistic structure); queries are noisy copies of random
database vectors. For each index kind we time ``build`` and ``search`` (queries/s) and measure the
recall of the exact top-``k``: ``|approx top-k ∩ exact top-k| / k`` averaged over queries.
JSON via :func:`crosslocate.pipelines.benchinfo.write_json` (default ``bench/search.json``).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

#: Index kinds compared (names of :mod:`crosslocate.model.search`).
KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-db", type=int, default=200_000, help="database descriptors (default 200000)")
    p.add_argument("--n-queries", type=int, default=1000, help="queries (default 1000)")
    p.add_argument("--dim", type=int, default=512, help="descriptor dimension (default 512)")
    p.add_argument("-k", type=int, default=100, help="neighbours per query (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/search.json", help="output JSON (default bench/search.json)")


def synthetic_descriptors(
    n_db: int, n_queries: int, dim: int, rng: np.random.Generator, n_clusters: int = 256, noise: float = 0.5
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """((n_db, dim), (n_queries, dim)) float32 L2-normalised clustered descriptors and noisy-copy queries."""
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    db = centres[rng.integers(0, n_clusters, n_db)] + noise * rng.standard_normal((n_db, dim)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[rng.integers(0, n_db, n_queries)] + 0.3 * noise * rng.standard_normal((n_queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return np.ascontiguousarray(db), np.ascontiguousarray(q)


def overlap_recall(approx: npt.NDArray[np.int64], exact: npt.NDArray[np.int64]) -> float:
    """Mean fraction of each exact top-k row found in the approximate top-k row."""
    hits = [len(np.intersect1d(a, e)) / len(e) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits)) if hits else float("nan")


def measure(db: npt.NDArray[np.float32], q: npt.NDArray[np.float32], k: int) -> dict[str, Any]:
    """Build/search time, queries/s and recall vs exact for each of :data:`KINDS`."""
    from crosslocate.model import search

    rows: dict[str, Any] = {}
    exact: npt.NDArray[np.int64] | None = None
    for kind in KINDS:
        t0 = time.perf_counter()
        index = search.build_index(db, kind=kind)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, idx = index.search(q, k)
        search_s = time.perf_counter() - t0
        idx = np.asarray(idx, np.int64)
        if exact is None:
            exact = idx
        rows[kind] = {
            "build_s": round(build_s, 4),
            "search_s": round(search_s, 4),
            "queries_per_s": round(len(q) / search_s, 1) if search_s > 0 else None,
            "recall_vs_exact": overlap_recall(idx, exact),
        }
        logger.info("%s: %s", kind, rows[kind])
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and write its JSON; returns ``{"path", "summary"}``."""
    from crosslocate.pipelines.benchinfo import environment_info, write_json

    rng = np.random.default_rng(args.seed)
    db, q = synthetic_descriptors(args.n_db, args.n_queries, args.dim, rng)
    rows = measure(db, q, min(args.k, args.n_db))
    flat = rows["flat"]["search_s"]
    summary = {
        kind: {
            "queries_per_s": r["queries_per_s"],
            "speedup_vs_flat": round(flat / r["search_s"], 2) if r["search_s"] else None,
            "recall_vs_exact": round(r["recall_vs_exact"], 4),
        }
        for kind, r in rows.items()
    }
    config = {"n_db": args.n_db, "n_queries": args.n_queries, "dim": args.dim, "k": args.k, "seed": args.seed}
    record = {
        "benchmark": "search",
        "environment": environment_info(),
        "config": config,
        "results": rows,
        "summary": summary,
    }
    path = write_json(args.out, record)
    return {"path": str(path), "summary": summary}


__all__ = ["KINDS", "add_arguments", "measure", "overlap_recall", "run", "synthetic_descriptors"]
