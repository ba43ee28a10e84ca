"""Nearest-neighbour search of descriptors with faiss (imported lazily).

API
---
- ``build_index(db, kind="flat", metric="l2", use_gpu=False, ...) -> SearchIndex``:
  ``flat`` = exact ``IndexFlatL2`` (``metric="ip"``: ``IndexFlatIP``), ``ivf`` = ``IndexIVFFlat``
  (nlist clamped to N/39 so training has enough points), ``hnsw`` = ``IndexHNSWFlat``. GPU is used
  only when ``use_gpu`` and ``faiss.get_num_gpus() > 0``; a refused GPU request is logged at WARNING
  and recorded in ``SearchIndex.on_gpu`` / ``.note``.
- ``SearchIndex.search(queries, k) -> (distances (M, k') float32, indices (M, k') int64)`` with
  ``k' = min(k, N)``, best first. Distances are squared L2 (``l2``) or inner products (``ip``).
- ``search(db, queries, k, **kw)``: build + search in one call (exact by default).
- ``search_with_config(db, queries, k, cfg: EvalConfig)``: the same with the settings of an EvalConfig.
- ``approximate_recall(db, queries, k, kinds=("ivf", "hnsw"), **kw) -> dict``: per kind, the mean
  fraction of the exact top-k found by the approximate index, plus build/search seconds.

Arrays: ``db`` (N, D) and ``queries`` (M, D) float32 (converted to C-contiguous float32 here).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError, missing_dependency

logger = logging.getLogger(__name__)

#: Index kinds understood by :func:`build_index`.
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
METRICS: tuple[str, ...] = ("l2", "ip")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise missing_dependency("faiss", pip_name="faiss-cpu") from exc
    return faiss


def _as_f32(name: str, a: npt.ArrayLike, dim: int | None = None) -> npt.NDArray[np.float32]:
    arr = np.ascontiguousarray(np.asarray(a), dtype=np.float32)
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, D)"
        raise ConfigError(f"{name} must be {want} float32 descriptors, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name} contains NaN/inf descriptors; check the network output")
    return arr


@dataclass(slots=True)
class SearchIndex:
    """A built faiss index over ``ntotal`` database descriptors (see :func:`build_index`)."""

    index: Any
    kind: str
    metric: str
    dim: int
    ntotal: int
    on_gpu: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def search(self, queries: npt.ArrayLike, k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """(distances (M, k') float32, indices (M, k') int64), best first; ``k' = min(k, ntotal)``."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        q = _as_f32("queries", queries, self.dim)
        kk = min(int(k), self.ntotal)
        if kk == 0 or len(q) == 0:
            return np.zeros((len(q), kk), np.float32), np.zeros((len(q), kk), np.int64)
        dist, idx = self.index.search(q, kk)
        return np.asarray(dist, np.float32), np.asarray(idx, np.int64)


def build_index(
    db: npt.ArrayLike,
    kind: str = "flat",
    metric: str = "l2",
    *,
    use_gpu: bool = False,
    nlist: int = 1024,
    nprobe: int = 16,
    hnsw_m: int = 32,
    ef_search: int = 128,
    ef_construction: int = 80,
) -> SearchIndex:
    """Build a faiss index over ``db`` (N, D) float32; see the module docstring."""
    if kind not in INDEX_KINDS:
        raise ConfigError(f"index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r}; choose one of {', '.join(METRICS)}")
    faiss = _faiss()
    x = _as_f32("db", db)
    n, d = x.shape
    if d == 0:
        raise ConfigError("db descriptors have dimension 0")
    mt = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    params: dict[str, Any] = {}
    if kind == "flat":
        index = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nl = max(1, min(int(nlist), n // 39))
        quantizer = faiss.IndexFlatL2(d) if metric == "l2" else faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nl, mt)
        if n:
            index.train(x)
        index.nprobe = min(int(nprobe), nl)
        params = {"nlist": nl, "nprobe": int(index.nprobe)}
    else:
        index = faiss.IndexHNSWFlat(d, int(hnsw_m), mt)
        index.hnsw.efConstruction = int(ef_construction)
        index.hnsw.efSearch = int(ef_search)
        params = {"M": int(hnsw_m), "efSearch": int(ef_search), "efConstruction": int(ef_construction)}
    on_gpu, note = False, ""
    if use_gpu:
        n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if n_gpus > 0 and kind != "hnsw":
            index = faiss.index_cpu_to_all_gpus(index)
            on_gpu = True
        else:
            note = f"GPU search requested but faiss reports {n_gpus} GPU(s)" + (
                "" if kind != "hnsw" else " (HNSW is CPU-only)"
            )
            logger.warning("%s; searching on CPU", note)
    if n:
        index.add(x)
    return SearchIndex(index=index, kind=kind, metric=metric, dim=d, ntotal=n, on_gpu=on_gpu, params=params, note=note)


def search(
    db: npt.ArrayLike, queries: npt.ArrayLike, k: int, **kwargs: Any
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Top-``k`` database rows of each query: ``(distances (M, k'), indices (M, k'))``; exact L2 by default.

    ``kwargs`` go to :func:`build_index` (``kind``, ``metric``, ``use_gpu``, ...).
    """
    return build_index(db, **kwargs).search(queries, k)


def search_with_config(
    db: npt.ArrayLike, queries: npt.ArrayLike, k: int, cfg: Any
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """:func:`search` with ``index``, ``metric``, ``use_gpu`` and IVF/HNSW numbers from an EvalConfig."""
    return search(
        db,
        queries,
        k,
        kind=cfg.index,
        metric=cfg.metric,
        use_gpu=cfg.use_gpu,
        nlist=cfg.ivf_nlist,
        nprobe=cfg.ivf_nprobe,
        hnsw_m=cfg.hnsw_m,
        ef_search=cfg.hnsw_ef_search,
    )


def ranking(db: npt.ArrayLike, queries: npt.ArrayLike, k: int, cfg: Any = None) -> npt.NDArray[np.int64]:
    """(M, k') int64 database rows per query, best first: the index of an EvalConfig ``cfg``
    (:func:`search_with_config`), or exact L2 (:func:`search`) when ``cfg`` is None."""
    _, idx = search(db, queries, k) if cfg is None else search_with_config(db, queries, k, cfg)
    return np.asarray(idx, np.int64)


def overlap_recall(approx: npt.NDArray[np.int64], exact: npt.NDArray[np.int64]) -> float:
    """Mean over rows of ``|approx_row ∩ exact_row| / |exact_row|`` (both (M, k) int64 index arrays)."""
    if len(exact) == 0:
        return float("nan")
    hits = [np.intersect1d(a, e).size / max(e.size, 1) for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits))


def approximate_recall(
    db: npt.ArrayLike,
    queries: npt.ArrayLike,
    k: int,
    kinds: Sequence[str] = ("ivf", "hnsw"),
    **kwargs: Any,
) -> dict[str, dict[str, float]]:
    """Recall loss of approximate indices against the exact flat search.

    Returns ``{kind: {"recall_vs_exact", "build_s", "search_s"}}`` including ``"flat"`` (recall 1).
    """
    out: dict[str, dict[str, float]] = {}
    exact: npt.NDArray[np.int64] | None = None
    for kind in ("flat", *[kd for kd in kinds if kd != "flat"]):
        t0 = time.perf_counter()
        index = build_index(db, kind=kind, **kwargs)
        t1 = time.perf_counter()
        _, idx = index.search(queries, k)
        t2 = time.perf_counter()
        if exact is None:
            exact = idx
        out[kind] = {
            "recall_vs_exact": overlap_recall(idx, exact),
            "build_s": round(t1 - t0, 6),
            "search_s": round(t2 - t1, 6),
        }
    return out


__all__ = [
    "INDEX_KINDS",
    "METRICS",
    "SearchIndex",
    "approximate_recall",
    "build_index",
    "overlap_recall",
    "ranking",
    "search",
    "search_with_config",
]
