"""Choosing the compute device once, and seeding every RNG.

API
---
- ``resolve_device(spec="auto") -> torch.device``: ``"auto"`` = ``cuda`` (index 0) when
  ``torch.cuda.is_available()`` else ``cpu``; ``"cpu"``; ``"cuda"`` / ``"cuda:N"`` (raises
  :class:`~crosslocate.errors.BackendUnavailableError` when CUDA or that index is absent). No
  silent fallback: asking for CUDA without one is an error; ``auto`` logs its choice.
- ``seed_everything(seed, deterministic=True) -> None``: seeds ``random``, numpy's legacy global
  RNG and torch (CPU and CUDA); with ``deterministic`` it turns off cuDNN autotuning and asks for
  deterministic cuDNN kernels (cheap). Call it once at an entry point, never at import.
- ``cpu_threads() -> int``: the threads torch's CPU kernels use now (``OMP_NUM_THREADS`` or
  ``torch.set_num_threads``): a record's timings scale with it, and a training path depends on it.
"""

from __future__ import annotations

import logging
import random
import re

import numpy as np
import torch

from crosslocate.errors import BackendUnavailableError, ConfigError

logger = logging.getLogger(__name__)

_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The torch device for ``spec`` (``auto``, ``cpu``, ``cuda`` or ``cuda:N``); see the module docstring."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    s = str(spec).strip().lower()
    if s == "auto":
        dev = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        logger.info("device auto -> %s", dev)
        return dev
    if s == "cpu":
        return torch.device("cpu")
    m = _CUDA_RE.match(s)
    if m is None:
        raise ConfigError(f"unknown device {spec!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"device {spec!r} requested but CUDA is not available in this torch build/machine; use --device cpu or auto"
        )
    index = int(m.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise BackendUnavailableError(f"device {spec!r}: only {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device(f"cuda:{index}")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, numpy's global RNG and torch (all devices) with ``seed``; see the module docstring."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    torch.manual_seed(int(seed))
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def cpu_threads() -> int:
    """The number of threads torch's CPU kernels use now (see the module docstring)."""
    return int(torch.get_num_threads())


__all__ = ["cpu_threads", "resolve_device", "seed_everything"]
