"""Reading weight files without executing code: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings
import weakref
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, UnsafeCheckpointError


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


#: How torch names the global a weights-only load refused, across versions: "Unsupported global: GLOBAL os.system"
#: (2.4-2.5), "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" (2.6+).
_BLOCKED_GLOBAL = re.compile(r"\bGLOBAL\s+([A-Za-z_][\w.]*\w)")
_BAD_OPCODE = re.compile(r"Unsupported operand\s+(\S+)", re.IGNORECASE)


def _refusal_detail(message: str) -> str:
    """What a weights-only load refused, from torch's (multi-paragraph, version-dependent) message."""
    found = _BLOCKED_GLOBAL.search(message)
    if found:
        return f"it needs the Python global {found.group(1)}"
    found = _BAD_OPCODE.search(message)
    if found:
        return f"pickle opcode {found.group(1)} is not allowed"
    return "it needs arbitrary Python objects"


def load_torch_file(path: str | Path) -> Any:
    """``torch.load`` restricted to tensors and plain containers; anything needing other globals is refused.

    torch's own warnings (old pickle protocols, ...) are silenced: the caller reports problems in one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint is empty: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refused to load, {_refusal_detail(str(e))}; only tensors and plain containers are "
            "accepted (convert it to safetensors)") from None
    except MemoryError:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (it asks for more memory than there "
                              "is)") from None
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail anywhere inside torch's reader
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
            tensors = {name: f.get_tensor(name) for name in f.keys() if name.startswith(prefix)}  # noqa: SIM118
        _check_finite_in_file(path, tensors)
        return tensors
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError, OverflowError, MemoryError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(str(e), 120)})") from None


#: Tensors (by identity, while alive) whose values were checked finite when read: see :func:`_check_finite_in_file`.
_verified: dict[int, weakref.ref] = {}


def verified_finite(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` itself was read from a safetensors file whose bytes for it are all finite."""
    ref = _verified.get(id(tensor))
    return ref is not None and ref() is tensor


def _mark_verified(tensor: torch.Tensor) -> None:
    key = id(tensor)
    _verified[key] = weakref.ref(tensor, lambda _ref: _verified.pop(key, None))
_FILE_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}
_CHUNK = 8 * 2 ** 20


def _check_finite_in_file(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Mark the float16/bfloat16/float32 tensors of ``tensors`` whose bytes in the file are all finite.

    The values are read from the file in chunks rather than through the tensors: those map the file, and reading
    them would bring every page of it into this process's resident memory at load time. Unmarked tensors (other
    dtypes, or NaN/inf found) are judged by ``check_state_dict``, which names the bad one.
    """
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        for name, tensor in tensors.items():
            dtype = _FILE_DTYPES.get(header[name]["dtype"])
            if dtype is None:
                continue
            start, end = header[name]["data_offsets"]
            finite = True
            for offset in range(start, end, _CHUNK):
                data = os.pread(f.fileno(), min(_CHUNK, end - offset), 8 + length + offset)
                if data and not torch.isfinite(torch.frombuffer(bytearray(data), dtype=dtype)).all():
                    finite = False
                    break
            if finite:
                _mark_verified(tensor)


def load_weights(path: str | Path, prefix: str | tuple[str, ...] = "") -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` mapping from a ``.safetensors`` file or a safe ``torch.load``-able file; with
    ``prefix``, only the names starting with it (a ``.safetensors`` file reads nothing else)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path, prefix)
    state = load_torch_file(path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a flat state dict of tensors")
    return {k: v for k, v in state.items() if k.startswith(prefix)}
