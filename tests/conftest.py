"""Shared fixtures: tiny synthetic data built while tests run; real SRTM only behind a fixture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "agg")

REPO_ROOT = Path(__file__).resolve().parents[1]
SRTM_DIR = REPO_ROOT.parent / "shared" / "data" / "srtm3"


@pytest.fixture(scope="session")
def srtm_dir() -> Path:
    """The shared real SRTM 3'' tiles (N45-N47, E006-E010); skips when absent."""
    if not SRTM_DIR.is_dir() or not any(SRTM_DIR.glob("*.hgt.zip")):
        pytest.skip(f"real SRTM tiles not found at {SRTM_DIR}")
    return SRTM_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def fp32_cuda():
    """The CUDA device with TF32 off (convolutions and matmuls in fp32, comparable with the CPU)."""
    import torch

    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
