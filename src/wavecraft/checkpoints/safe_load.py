"""Reading weight files without executing code: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnsafeCheckpointError


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers; anything needing other globals is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"(Unsupported global|Unsupported operand)[^.\n]*", str(e))
        detail = found.group(0) if found else _one_line(str(e), 120)
        raise UnsafeCheckpointError(
            f"{path}: refused to load, it needs arbitrary Python objects ({detail}); "
            "only tensors and plain containers are accepted (convert it to safetensors)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_one_line(str(e), 120)})") from None


def load_safetensors(path: str | Path, prefix: str | tuple[str, ...] = "") -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file whose names start with ``prefix`` (one of them, for a tuple).

    Only those are read: a MusicGen file holds the text encoder and the codec beside the LM, and each part is
    loaded on its own.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {name: f.get_tensor(name) for name in f.keys() if name.startswith(prefix)}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(str(e), 120)})") from None


def load_weights(path: str | Path, prefix: str | tuple[str, ...] = "") -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` mapping from a ``.safetensors`` file or a safe ``torch.load``-able file; with
    ``prefix``, only the names starting with it (a ``.safetensors`` file reads nothing else)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path, prefix)
    state = load_torch_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors")
    return {k: v for k, v in state.items() if k.startswith(prefix)}
