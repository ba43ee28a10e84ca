"""Render backends, registered by name as ``"module:Class"`` strings (listing imports nothing)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from crosslocate.errors import ConfigError

if TYPE_CHECKING:
    from crosslocate.render.backends.base import RenderBackend
    from crosslocate.render.config import RenderConfig

BACKENDS: dict[str, str] = {
    "cpu": "crosslocate.render.backends.heightfield_numba:HeightfieldBackend",
    "pyrender": "crosslocate.render.backends.pyrender_egl:PyrenderBackend",
}


def backend_class(name: str) -> type[RenderBackend]:
    """The backend class registered as ``name`` (imports only that backend's module)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise ConfigError(f"unknown render backend {name!r}; choose one of {sorted(BACKENDS)}") from None
    module_name, cls_name = target.split(":")
    cls: type[RenderBackend] = getattr(importlib.import_module(module_name), cls_name)
    return cls


def open_backend(config: RenderConfig) -> RenderBackend:
    """Instantiate the backend named by ``config.backend`` (imports only that backend's module)."""
    return backend_class(config.backend)(config)


def uses_atlas(config: RenderConfig) -> bool:
    """Whether database builds with ``config`` render from a terrain atlas (``config.atlas`` and a
    backend that supports it)."""
    return bool(config.atlas) and bool(backend_class(config.backend).supports_atlas)


def available_backends() -> list[str]:
    """Names of all registered backends."""
    return sorted(BACKENDS)
