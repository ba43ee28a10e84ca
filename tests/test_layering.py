"""Import rules of STYLE.md §3.3, checked on every module with ast.

The repo root is the package (``package_dir``), so this file is the only import map: which layer
may import which, and where each heavy or I/O third-party package may appear. Imports inside
functions (lazy imports) count like top-level ones.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dem", "render", "datasets", "model", "pipelines")
#: Root modules any layer may import (stdlib-only helpers beside ``errors.py``).
CROSS_CUTTING = ("errors", "progress", "fileio")

ALLOWED_INTERNAL = {
    "dem": {"dem"},
    "datasets": {"dem", "datasets"},
    "render": {"dem", "render", "datasets.schema", "datasets.derived"},
    "model": {"model", "datasets", "dem"},
    "pipelines": {"dem", "render", "datasets", "model", "pipelines"},
    # root modules (crosslocate/*.py): the cross-cutting ones import only each other
    "__init__": set(),
    "__main__": {"pipelines"},
    "errors": set(),
    "progress": set(),
    "fileio": set(),
}
# third-party package -> modules allowed to import it (prefix match on the dotted module path).
# I/O and geometry stay at the edges named here; a new importer must be added on purpose.
THIRD_PARTY = {
    "torch": ("model", "datasets.views", "datasets.transforms"),
    "pyrender": ("render.backends.pyrender_egl", "render.mesh"),
    "OpenGL": ("render.backends.pyrender_egl", "render.mesh"),
    "trimesh": ("render.backends.pyrender_egl", "render.mesh"),
    "numba": ("render.backends.heightfield_numba", "datasets.codec_kernels"),
    "faiss": ("model.search",),
    "dask": ("pipelines",),
    "distributed": ("pipelines",),
    # shard files: HDF5 and its Blosc filters only where shards are read and written
    "h5py": ("datasets.shards", "datasets.verify"),
    "hdf5plugin": ("datasets.shards",),
    # all geodesy and projections go through dem.geodesy (render/perturb asks it crs_is_projected)
    "pyproj": ("dem.geodesy",),
    # raster files are read (and the demo GeoTIFF written) by the DEM sources only
    "rasterio": ("dem.sources",),
    "affine": ("dem",),
    # region polygons: built in dem.regions, used for grids and splits in dem; datasets.queries
    # refuses query rows outside the region (point-in-polygon on dem.regions' polygon) and
    # pipelines.build.check_coverage names the part of a region outside the DEM (both thin uses
    # of the polygon dem hands out, not geometry of their own)
    "shapely": ("dem.regions", "dem.grid", "dem.splits", "datasets.queries", "pipelines.build"),
    "shapefile": ("dem.regions",),
    # figures (lazily, Agg only): benchmark plots and render previews
    "matplotlib": ("model.plots", "render.preview"),
    # image resizing / augmentation of network inputs
    "cv2": ("datasets.transforms", "datasets.views"),
    # image files: fileio writes PNG/JPEG; photos are read where queries are loaded (datasets.queries
    # checks them, datasets.views decodes them), exported (datasets.export), verified after writing
    # (pipelines.queries.png_complete) and shrunk to report thumbnails (pipelines.report)
    "PIL": (
        "fileio",
        "datasets.queries",
        "datasets.views",
        "datasets.export",
        "pipelines.queries",
        "pipelines.report",
    ),
}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.glob("*.py")):
        yield path.stem, path
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            yield ".".join(rel.parts), path


def _imports(source: str) -> Iterator[str]:
    """Absolute module names imported anywhere in ``source`` (relative imports are not used here)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def _within(mod: str, prefixes: Iterable[str]) -> bool:
    return any(mod == a or mod.startswith(a + ".") for a in prefixes)


def check_module(mod: str, imported: Iterable[str]) -> list[str]:
    """The rule violations of module ``mod`` (dotted path below ``crosslocate``) importing ``imported``."""
    top = mod.split(".")[0]
    problems = []
    for name in imported:
        if name.startswith("crosslocate."):
            target = name[len("crosslocate.") :]
            if target.split(".")[0] in CROSS_CUTTING:
                continue
            if not _within(target, ALLOWED_INTERNAL[top]):
                problems.append(f"{mod} imports crosslocate.{target}")
        else:
            root = name.split(".")[0]
            if root in THIRD_PARTY and not _within(mod, THIRD_PARTY[root]):
                problems.append(f"{mod} imports {name}")
    return problems


def test_internal_and_third_party_import_rules():
    problems = []
    for mod, path in _modules():
        problems += check_module(mod, _imports(path.read_text()))
    assert not problems, "\n".join(problems)


def test_allowed_places_exist():
    """Every module named in the maps exists (a renamed module must not leave a stale allowance)."""
    modules = {mod for mod, _ in _modules()}
    named = {p for places in THIRD_PARTY.values() for p in places}
    named |= {p for places in ALLOWED_INTERNAL.values() for p in places}
    stale = sorted(p for p in named if not any(m == p or m.startswith(p + ".") for m in modules))
    assert not stale, stale


def test_checker_flags_imports_outside_the_allowed_places():
    source = (
        "import pyproj\n"
        "from matplotlib.figure import Figure\n"
        "import numpy as np\n"
        "from crosslocate.fileio import file_sha256\n"
        "from crosslocate.errors import RenderError\n"
        "def f():\n"
        "    import cv2\n"
        "    from crosslocate.model import net\n"
    )
    assert sorted(check_module("render.newthing", _imports(source))) == [
        "render.newthing imports crosslocate.model",
        "render.newthing imports cv2",  # a lazy import counts too
        "render.newthing imports matplotlib.figure",
        "render.newthing imports pyproj",
    ]
    assert check_module("dem.geodesy", ["pyproj", "crosslocate.fileio"]) == []
    assert check_module("render.preview", ["matplotlib.pyplot"]) == []
    assert check_module("dem.geodesy_utils", ["pyproj"]) == ["dem.geodesy_utils imports pyproj"]  # no loose prefix
    assert check_module("fileio", ["crosslocate.dem.geodesy"]) == ["fileio imports crosslocate.dem.geodesy"]
