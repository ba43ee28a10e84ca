"""The run context: everything a command resolves once (work folder, region, DEM, preset, folders).

Each CLI command builds one :class:`RunContext` with :meth:`RunContext.resolve` from what the user
typed and passes it to every flow (queries, databases, training, benchmark); no flow re-resolves a
region name, guesses a DEM or works out a folder name again.

Folder layout (docs/CONTRACTS.md), with ``<region>`` = :attr:`crosslocate.dem.regions.Region.name`
(the built-in name or the polygon file's stem)::

    <work>/<region>/queries/                 the synthetic query set
    <work>/<region>/db/<kind>[-<csv stem>]   databases (sparse/compact of a user CSV get their own)
    <work>/<region>/runs/<run name>[-<modality>][-<csv stem>]

The run name is the preset's, extended by network options (``cpu-efficientnet_lite0-imagenet``,
:meth:`crosslocate.pipelines.presets.NetOptions.run_name`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from crosslocate.datasets.schema import Modality, parse_modality
from crosslocate.dem.regions import Region, get_region

if TYPE_CHECKING:
    from crosslocate.dem.sources import DemSource, DemSpec
    from crosslocate.pipelines.presets import NetOptions, Preset

#: Where a region is given: a built-in name, a polygon file, or an already resolved Region.
RegionSpec = "str | os.PathLike[str] | Region"


def resolve_region(region: RegionSpec) -> Region:
    """A :class:`Region` from a name, a polygon file or a Region (returned as is)."""
    return region if isinstance(region, Region) else get_region(os.fspath(region))


def region_dir(work: str | os.PathLike[str], region: Region) -> Path:
    """``<work>/<region name>``: the one place a region's folder name is worked out."""
    return Path(work) / region.name


@dataclass(frozen=True, kw_only=True, slots=True)
class RunContext:
    """One command's resolved settings and folders.

    Attributes
    ----------
    work : Path
        Work folder (queries, databases, runs).
    region : Region
        The region (polygon in EPSG:4326, LAEA frame ``region.crs_wkt``).
    dem : DemSource
        The DEM (embedded demo or files).
    preset : Preset
        The settings in force (network options applied).
    run_name : str
        Run folder stem: the preset's name, extended by network options.
    modality : str
        Database modality of the network (:class:`~crosslocate.datasets.schema.Modality` value).
    queries_csv : Path or None
        A user's query CSV (absolute), or None for the synthetic query set.
    clip_to_dem : bool
        Build the uniform database over the DEM-covered part of the region only (``--clip-to-dem``)
        instead of refusing a region the DEM does not cover.
    """

    work: Path
    region: Region
    dem: DemSource
    preset: Preset
    run_name: str = ""
    modality: str = Modality.DEPTH.value
    queries_csv: Path | None = None
    clip_to_dem: bool = False
    _base: Preset | None = field(default=None, repr=False, compare=False)

    @classmethod
    def resolve(
        cls,
        *,
        region: RegionSpec = "demo",
        dem: DemSpec | None = None,
        preset: str | Preset = "cpu",
        work: str | os.PathLike[str] = "work",
        modality: str = Modality.DEPTH.value,
        queries_csv: str | os.PathLike[str] | None = None,
        net_options: NetOptions | None = None,
        clip_to_dem: bool = False,
    ) -> RunContext:
        """Resolve what a user typed; every error names the offending option."""
        from crosslocate.dem.sources import DemSource
        from crosslocate.pipelines.presets import get_preset

        reg = resolve_region(region)
        base = get_preset(preset) if isinstance(preset, str) else preset
        if net_options is None or net_options.empty:
            resolved, run_name = base, base.name
        else:
            resolved, run_name = net_options.apply(base), net_options.run_name(base.name)
        mod = parse_modality(modality, "--modality").value
        return cls(
            work=Path(work),
            region=reg,
            dem=DemSource.resolve(dem, reg.name),
            preset=resolved,
            run_name=run_name,
            modality=mod,
            queries_csv=None if queries_csv is None else Path(queries_csv).resolve(),
            clip_to_dem=bool(clip_to_dem),
            _base=base,
        )

    @property
    def region_dir(self) -> Path:
        """``<work>/<region>``."""
        return region_dir(self.work, self.region)

    @property
    def queries_dir(self) -> Path:
        """``<work>/<region>/queries``: the synthetic query set."""
        return self.region_dir / "queries"

    @property
    def query_set(self) -> str:
        """``synthetic`` or the CSV's stem."""
        return "synthetic" if self.queries_csv is None else self.queries_csv.stem

    def _suffix(self) -> str:
        return "" if self.queries_csv is None else f"-{self.queries_csv.stem}"

    @property
    def extra_photos(self) -> int:
        """Synthetic training-only photos of this run (``TrainConfig.extra_photos``; 0: none)."""
        return int(getattr(self.preset.train, "extra_photos", 0) or 0)

    @property
    def baselines_dir(self) -> Path:
        """``<work>/<region>/baselines``: the horizon baselines' rankings, kept by content for every run
        (:func:`crosslocate.pipelines.refine.horizon_rankings`' ``cache_dir``)."""
        return self.region_dir / "baselines"

    @property
    def training_photos_dir(self) -> Path:
        """``<work>/<region>/queries-train<N>``: the training-only photos (N = :attr:`extra_photos`)."""
        return self.region_dir / f"queries-train{self.extra_photos}"

    def db(self, kind: str) -> Path:
        """``<work>/<region>/db/<kind>`` (``-<csv stem>`` appended for all but uniform with a CSV query
        set: they depend on the query set; the uniform database is shared; ``-x<N>`` appended for
        sparse/compact with N training-only photos, which place views too)."""
        if kind == "uniform":
            return self.region_dir / "db" / kind
        extra = f"-x{self.extra_photos}" if self.extra_photos and kind in ("sparse", "compact") else ""
        return self.region_dir / "db" / (kind + self._suffix() + extra)

    @property
    def run(self) -> Path:
        """``<work>/<region>/runs/<run name>`` (``-<modality>`` unless depth, then ``-<csv stem>``)."""
        suffix = "" if self.modality == Modality.DEPTH.value else f"-{self.modality}"
        return self.region_dir / "runs" / f"{self.run_name or self.preset.name}{suffix}{self._suffix()}"

    @property
    def base_preset(self) -> Preset:
        """The preset as named, before network options (what databases and queries depend on)."""
        return self._base if self._base is not None else self.preset


__all__ = ["RegionSpec", "RunContext", "region_dir", "resolve_region"]
