from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_ENV = "WAVECRAFT_GOLDEN"
GOLDEN_DEFAULT = ROOT / "tests" / "data" / "golden"
GOLDEN_SETS = ("encodec", "musicgen", "stereo", "melody")  # the sets these tests read


def golden_dir() -> Path:
    """``$WAVECRAFT_GOLDEN`` (a folder in the layout of tests/data/golden) if set, else tests/data/golden."""
    value = os.environ.get(GOLDEN_ENV)
    return Path(value).expanduser() if value else GOLDEN_DEFAULT


@pytest.fixture(scope="session")
def golden() -> Path:
    """Reference data written by AudioCraft's own code (read-only; see tests/data/golden/README.md).

    Other sets in the same layout (other sizes, seeds, options) are selected with ``WAVECRAFT_GOLDEN``; the tests
    read every size and call argument from the set's ``meta.json``, the checkpoint config or tensor shapes.
    """
    root = golden_dir()
    missing = [name for name in GOLDEN_SETS if not (root / name / "meta.json").is_file()]
    if missing:
        where = f"${GOLDEN_ENV}={os.environ[GOLDEN_ENV]}" if os.environ.get(GOLDEN_ENV) else f"${GOLDEN_ENV} unset"
        pytest.fail(f"golden reference set(s) {', '.join(missing)} not found under {root} ({where}): set "
                    f"{GOLDEN_ENV} to a folder holding {', '.join(GOLDEN_SETS)} (each with its meta.json)",
                    pytrace=False)
    return root


def golden_meta(golden: Path, name: str) -> dict:
    """The ``meta.json`` of the golden set ``name`` (every call argument, seed and size of that set)."""
    return json.loads((golden / name / "meta.json").read_text())


def seconds(frames: int, frame_rate: float) -> float:
    """A duration of ``frames`` codec frames: ``int(duration * frame_rate) == frames`` (how the models count them)."""
    duration = frames / frame_rate
    while int(duration * frame_rate) < frames:
        duration = math.nextafter(duration, math.inf)
    return duration


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
