from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden"


@pytest.fixture(scope="session")
def golden() -> Path:
    """The reference data written by AudioCraft's own code (read-only; see ../shared/golden/README.md)."""
    if not (GOLDEN / "encodec").is_dir():
        pytest.fail(f"golden reference data not found at {GOLDEN}")
    return GOLDEN


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
