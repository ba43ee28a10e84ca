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


def open_backend(config: RenderConfig) -> RenderBackend:
    """Instantiate the backend named by ``config.backend`` (imports only that backend's module)."""
    try:
        target = BACKENDS[config.backend]
    except KeyError:
        raise ConfigError(f"unknown render backend {config.backend!r}; choose one of {sorted(BACKENDS)}") from None
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    backend: RenderBackend = cls(config)
    return backend


def available_backends() -> list[str]:
    """Names of all registered backends."""
    return sorted(BACKENDS)
