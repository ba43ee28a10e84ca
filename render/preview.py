"""PNG previews of rendered views: one image per view and modality, and mosaics (lazy matplotlib).

Colours are the modality registry's previews (:attr:`crosslocate.datasets.schema.ModalitySpec.preview`,
through :func:`crosslocate.datasets.derived.view_to_rgb`): depth ramp, semantic palette, silhouettes
as light edges on dark, the same pictures as the benchmark mosaics and the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.derived import view_to_rgb
from crosslocate.datasets.schema import Modality, parse_modality
from crosslocate.errors import RenderError, missing_dependency
from crosslocate.fileio import save_figure_atomic, save_image_atomic

if TYPE_CHECKING:
    from crosslocate.render.backends.base import ViewBatch

logger = logging.getLogger(__name__)


def view_rgb(modality: Modality | str, view: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 RGB preview of one (H, W) view of ``modality``."""
    m = parse_modality(modality)
    arr = np.asarray(view)
    if arr.ndim != 2:
        raise RenderError(f"a view must be (H, W), got shape {arr.shape}")
    return view_to_rgb(m, arr)


def save_view_pngs(batch: ViewBatch, out_dir: str | Path, prefix: str | Sequence[str] = "view") -> list[Path]:
    """Write ``<prefix>_<modality>.png`` for every view and modality of ``batch``.

    Parameters
    ----------
    batch : ViewBatch
        Views (N, H, W) per modality.
    out_dir : path
        Existing or new directory.
    prefix : str or sequence of str
        One file-name prefix per view (e.g. ``"yaw030"``), or one string ``p`` giving ``p000``, ``p001``...

    Returns
    -------
    list of Path
        Written files, view-major.
    """
    prefixes = [f"{prefix}{i:03d}" for i in range(len(batch))] if isinstance(prefix, str) else list(prefix)
    if len(prefixes) != len(batch):
        raise RenderError(f"need one prefix per view: {len(prefixes)} prefixes for {len(batch)} views")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, name in enumerate(prefixes):
        for m, arr in batch.arrays.items():
            path = out / f"{name}_{parse_modality(m).value}.png"
            save_image_atomic(path, view_rgb(m, arr[i]), format="PNG")
            written.append(path)
    return written


def save_mosaic(
    images: Sequence[npt.ArrayLike], path: str | Path, titles: Sequence[str] | None = None, ncols: int = 4
) -> Path:
    """Save a grid of RGB images (each (H, W, 3) uint8) with optional titles as one PNG (matplotlib).

    Parameters
    ----------
    images : sequence of (H, W, 3) uint8 arrays (or (H, W) greyscale).
    path : output PNG path (written atomically).
    titles : one title per image, optional.
    ncols : grid columns (>= 1).
    """
    if not images:
        raise RenderError("save_mosaic needs at least one image")
    if ncols < 1:
        raise RenderError(f"ncols must be >= 1, got {ncols}")
    if titles is not None and len(titles) != len(images):
        raise RenderError(f"need one title per image: {len(titles)} titles for {len(images)} images")
    try:
        import matplotlib

        matplotlib.use("agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is a core dependency
        raise missing_dependency("matplotlib") from exc
    n = len(images)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.0 * ncols, 3.2 * nrows), squeeze=False)
    try:
        for k, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if k < n:
                ax.imshow(np.asarray(images[k]), cmap="gray" if np.asarray(images[k]).ndim == 2 else None)
                if titles is not None:
                    ax.set_title(titles[k], fontsize=9)
        fig.tight_layout()
        out = save_figure_atomic(fig, path, format="png", dpi=100)
    finally:
        plt.close(fig)
    return out
