"""The one exception hierarchy of crosslocate.

Every exception derives from :class:`CrosslocateError` *and* a built-in, so callers may catch
either ours or the generic one (rasterio's pattern). Messages name the file, line or value and
say how to fix it. This module imports the standard library only.
"""

from __future__ import annotations


class CrosslocateError(Exception):
    """Root of all crosslocate errors."""


class ConfigError(CrosslocateError, ValueError):
    """An invalid setting (config dataclass field, CLI flag or preset name)."""


class DEMReadError(CrosslocateError, OSError):
    """A DEM file is missing, truncated, corrupt, or has an unknown CRS / all nodata."""


class OutsideCoverageError(CrosslocateError, ValueError):
    """A coordinate or region lies outside the DEM (or land-cover) coverage."""


class RegionError(CrosslocateError, ValueError):
    """An unknown region name or an unreadable / invalid region polygon file."""


class QueryCSVError(CrosslocateError, ValueError):
    """A query CSV row is malformed; the message gives the path and 1-based line number."""

    def __init__(self, path: object, line: int, message: str) -> None:
        self.path = str(path)
        self.line = line
        super().__init__(f"{path}:{line}: {message}")


class RenderError(CrosslocateError, ValueError):
    """Invalid render request (bad pose, FOV, size, modality)."""


class BackendUnavailableError(CrosslocateError, RuntimeError):
    """A render backend (EGL/OSMesa/pyrender) or compute device cannot be used here."""


class ShardCorruptError(CrosslocateError, OSError):
    """A shard file is unreadable, truncated, or does not match its manifest checksum."""


class ManifestCorruptError(ShardCorruptError):
    """A database's ``manifest.json`` is unreadable, invalid, or its fingerprint does not match its content."""


class DiskFullError(CrosslocateError, OSError):
    """An output did not fit on its file system; the message gives the path, the space left and how to resume."""


class OutputWriteError(CrosslocateError, OSError):
    """The operating system refused to write an output (I/O error, read-only file system, permission);
    the message names the path, the OS reason and what to do."""


class ManifestMismatchError(CrosslocateError, ValueError):
    """An existing database was built with a different configuration than the one requested."""


class FileOverwriteError(CrosslocateError, FileExistsError):
    """An output exists and neither ``--overwrite`` nor ``--resume`` was given."""


class CheckpointError(CrosslocateError, ValueError):
    """A checkpoint is corrupt, foreign (not written by crosslocate), or does not fit the model."""


class DependencyError(CrosslocateError, ImportError):
    """An optional dependency is missing; the message gives the exact install command."""


class ForeignFormatError(CrosslocateError, ValueError):
    """A file in another tool's format (e.g. CrossLocate's datasets_meta ``.npy``) is foreign, unsafe or inconsistent."""


class NotBuiltError(CrosslocateError, RuntimeError):
    """A pipeline stage that the requested command needs has not been built yet."""


def missing_dependency(package: str, extra: str | None = None, *, pip_name: str | None = None) -> DependencyError:
    """Build a :class:`DependencyError` naming the package and how to install it.

    Use as ``except ImportError as exc: raise missing_dependency("faiss", "gpu") from exc`` so the
    ``import`` statement stays visible at the call site.
    """
    name = pip_name or package
    hint = f"pip install 'crosslocate[{extra}]'" if extra else f"pip install {name}"
    return DependencyError(f"optional dependency '{package}' is not installed; run `make setup` or `{hint}`")
