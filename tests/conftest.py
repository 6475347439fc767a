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
def rebuild_native(monkeypatch):
    """``rebuild_native(NAME=value, ...)`` sets (``None``: removes) environment variables and has the native kernels
    looked up again under them; after the test the environment and every other ``monkeypatch`` change are undone
    and the kernels looked up once more."""
    from wavecraft.lm import native

    def rebuild(**env: str | None) -> None:
        for name, value in env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        native.reset()

    yield rebuild
    monkeypatch.undo()
    native.reset()


@pytest.fixture
def native_off(rebuild_native):
    """The native kernels unavailable (as on a machine without a compiler); restored afterwards."""
    rebuild_native(WAVECRAFT_NATIVE="0")


@pytest.fixture(params=["widest", "avx2"])
def native_isa(request, rebuild_native):
    """The native kernels built for this CPU's widest vectors (AVX-512 where it has them), then for AVX2 alone, what
    CPUs without AVX-512 run (the same build twice on those)."""
    from wavecraft.lm import native

    rebuild_native(WAVECRAFT_NATIVE_ISA="avx2" if request.param == "avx2" else None)
    return native.isa()


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
