"""Machine and software facts recorded in every benchmark JSON, and the atomic JSON writer.

Timings only compare within one run on one machine, so each ``bench/*.json`` carries
:func:`environment_info` (CPU count, GPU name, Python and package versions, git sha).
Standard library only; safe to import from the CLI at start-up.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Distributions whose versions are recorded (missing ones are recorded as None).
PACKAGES: tuple[str, ...] = (
    "numpy",
    "scipy",
    "numba",
    "trimesh",
    "pyrender",
    "PyOpenGL",
    "torch",
    "faiss-cpu",
    "dask",
    "distributed",
    "h5py",
    "rasterio",
    "pyproj",
)

_REPO_ROOT = Path(__file__).resolve().parents[1]


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (None when not installed); imports nothing."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def gpu_names() -> list[str]:
    """GPU names from ``nvidia-smi`` (empty list when it is absent or fails)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        res = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.warning("nvidia-smi failed (%s); recording no GPU", exc)
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def git_sha(repo: Path = _REPO_ROOT) -> str | None:
    """``git rev-parse HEAD`` of the checkout (suffix ``-dirty`` with uncommitted changes), or None."""
    exe = shutil.which("git")
    if exe is None:
        return None
    try:
        sha = subprocess.run(
            [exe, "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [exe, "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha


def environment_info() -> dict[str, Any]:
    """Facts about this machine and software for a benchmark record (JSON-serialisable dict)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "gpus": gpu_names(),
        "python": sys.version.split()[0],
        "packages": package_versions(),
        "git_sha": git_sha(),
        "pyopengl_platform": os.environ.get("PYOPENGL_PLATFORM"),
    }


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (:func:`crosslocate.fileio.write_json_atomic`).

    numpy scalars/arrays and paths become plain JSON values; NaN is written as ``NaN`` (a benchmark
    may measure nothing). Parent folders are created. Returns the path.
    """
    from crosslocate.fileio import write_json_atomic  # numpy: kept out of this module's import

    return write_json_atomic(path, data, default=_json_default, allow_nan=True)


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and paths as plain JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
