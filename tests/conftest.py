from __future__ import annotations

import shutil
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


def golden_repo(golden: Path, lm: str, folder: Path) -> Path:
    """A local 'hub repo' folder: the golden ``lm`` checkpoint (musicgen, stereo, melody) + the golden codec."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(golden / lm / "state_dict.bin", folder / "state_dict.bin")
    shutil.copy(golden / "encodec" / "compression_state_dict.bin", folder / "compression_state_dict.bin")
    return folder


@pytest.fixture
def native_off(monkeypatch):
    """The native kernels unavailable (as on a machine without a compiler); restored afterwards."""
    from wavecraft.lm import native

    monkeypatch.setenv("WAVECRAFT_NATIVE", "0")
    native.reset()
    yield
    monkeypatch.undo()
    native.reset()


@pytest.fixture(params=["widest", "avx2"])
def native_isa(request, monkeypatch):
    """The native kernels built for this CPU's widest vectors (AVX-512 where it has them), then for AVX2 alone, what
    CPUs without AVX-512 run (the same build twice on those)."""
    from wavecraft.lm import native

    if request.param == "avx2":
        monkeypatch.setenv("WAVECRAFT_NATIVE_ISA", "avx2")
    native.reset()
    yield native.isa()
    monkeypatch.undo()
    native.reset()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
