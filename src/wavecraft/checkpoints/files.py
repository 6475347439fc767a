"""The files of a checkpoint folder or hub repo: JSON configs and (sharded) weights read, wavecraft's layout written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..fileio import atomic_outputs
from .hub import find_file
from .safe_load import load_safetensors, load_weights


def write_checkpoint(directory: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path:
    """Write ``config.json`` and ``model.safetensors`` (``tensors`` detached, contiguous, on CPU) in ``directory``.

    Both files are written beside and renamed over together, only once both are complete: a loaded model maps its
    file, which rewriting in place would change (or truncate) under it, and an interrupted write must leave
    neither a broken file nor new weights beside an old config.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_outputs([directory / "model.safetensors", directory / "config.json"]) as (weights, meta):
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(weights),
                  metadata={"format": "pt"})
        meta.write_text(json.dumps(config, indent=2) + "\n")
    return directory


#: Largest JSON config read (a sharded index of a multi-billion-parameter model is well under 1 MB).
MAX_JSON_BYTES = 16 * 2 ** 20


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a one-line :class:`CheckpointError` for anything else (too big, not UTF-8,
    malformed, nested too deep, numbers with too many digits)."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_JSON_BYTES:
            raise CheckpointError(f"{path}: {size} bytes is too big for a JSON config (at most {MAX_JSON_BYTES})")
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{path}: unreadable JSON ({' '.join(str(e).split())[:100]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def read_weights(source: str | Path, prefix: str | tuple[str, ...] = "") -> dict[str, torch.Tensor]:
    """Weights of a local folder or hub repo ``source``: ``model.safetensors``, its sharded index, or
    ``pytorch_model.bin``. Only tensors whose name starts with ``prefix`` are read, and the prefix is stripped;
    a tuple of prefixes reads the names starting with any of them and keeps them whole. Only the shards holding
    them are opened.
    """
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        found = find_file(source, name, required=False)
        if found is not None:
            break
    else:
        raise CheckpointError(f"{source}: no model.safetensors or pytorch_model.bin beside config.json")
    if found.name.endswith(".index.json"):
        weight_map = read_json(found).get("weight_map", {})
        if not isinstance(weight_map, dict) or not all(
                isinstance(k, str) and isinstance(f, str) and _plain_file_name(f) for k, f in weight_map.items()):
            raise CheckpointError(f"{found}: weight_map must map tensor names to shard file names beside it")
        state: dict[str, torch.Tensor] = {}
        for shard in sorted({f for k, f in weight_map.items() if k.startswith(prefix)}):
            state.update(load_safetensors(find_file(source, shard), prefix))  # type: ignore[arg-type]
    else:
        state = load_weights(found, prefix)
    return state if isinstance(prefix, tuple) else {k[len(prefix):]: v for k, v in state.items()}


def _plain_file_name(name: str) -> bool:
    """A shard named in an index must sit beside it: no folders, no ``..``."""
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and "\0" not in name
