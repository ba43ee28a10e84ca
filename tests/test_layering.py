"""Import rules of STYLE.md §3.3, checked on every module with ast."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dem", "render", "datasets", "model", "pipelines")

ALLOWED_INTERNAL = {
    "dem": {"dem"},
    "datasets": {"dem", "datasets"},
    "render": {"dem", "render", "datasets.schema", "datasets.derived"},
    "model": {"model", "datasets", "dem"},
    "pipelines": {"dem", "render", "datasets", "model", "pipelines"},
}
# third-party package -> subpackages / modules allowed to import it (prefix match on dotted module path)
THIRD_PARTY = {
    "torch": ("model", "datasets.views", "datasets.transforms"),
    "pyrender": ("render.backends.pyrender_egl", "render.mesh"),
    "OpenGL": ("render.backends.pyrender_egl", "render.mesh"),
    "trimesh": ("render.backends.pyrender_egl", "render.mesh"),
    "numba": ("render.backends.heightfield_numba",),
    "faiss": ("model.search",),
    "dask": ("pipelines",),
    "distributed": ("pipelines",),
    "h5py": ("datasets.shards", "datasets.verify"),
}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            yield ".".join(rel.parts), path


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_internal_and_third_party_import_rules():
    problems = []
    for mod, path in _modules():
        top = mod.split(".")[0]
        for name in _imports(path):
            if name.startswith("crosslocate."):
                target = name[len("crosslocate.") :]
                if target.split(".")[0] in ("errors", "progress", "fileio"):  # cross-cutting, any layer
                    continue
                if not any(target == a or target.startswith(a + ".") for a in ALLOWED_INTERNAL[top]):
                    problems.append(f"{mod} imports crosslocate.{target}")
            else:
                root = name.split(".")[0]
                if root in THIRD_PARTY and not any(mod == a or mod.startswith(a + ".") for a in THIRD_PARTY[root]):
                    problems.append(f"{mod} imports {name}")
    assert not problems, "\n".join(problems)
