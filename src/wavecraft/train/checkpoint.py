"""Resumable training checkpoints: model weights as safetensors, the rest as a weights-only-loadable ``.pt``.

A checkpoint directory holds exactly one (the latest) checkpoint:

- ``model.safetensors``: the model's state dict (``step`` in its metadata);
- ``train_state.pt``: optimizer and scheduler state dicts, ``step``, torch and python RNG states, ``extra``.

Both are written to temporary files and moved into place with ``os.replace``, the train state last: it is the
commit point. A crash between the two moves leaves a model newer than the train state, which the loader detects
(the steps differ) rather than silently resuming from a mix.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..fileio import follow_umask

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"


def save_checkpoint(directory: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any] | None = None) -> None:
    """Write the checkpoint of ``step`` into ``directory``, replacing the previous one.

    ``extra`` must hold only weights-only-safe values (tensors, numbers, strings, lists/tuples/dicts of them).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # safetensors refuses shared storage; contiguous clones also detach the saved tensors from the live model.
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    version, internal, gauss = random.getstate()
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        # python's state is a tuple of (int, tuple[int], float|None); lists keep it plain for weights_only.
        "rng": {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "extra": extra or {},
    }
    model_tmp = _temp_path(directory, MODEL_FILE)
    state_tmp = _temp_path(directory, STATE_FILE)
    try:
        save_file(weights, str(model_tmp), metadata={"step": str(step)})
        torch.save(state, state_tmp)
        follow_umask(model_tmp)
        follow_umask(state_tmp)
        os.replace(model_tmp, directory / MODEL_FILE)
        os.replace(state_tmp, directory / STATE_FILE)
    finally:
        for tmp in (model_tmp, state_tmp):
            tmp.unlink(missing_ok=True)


def load_checkpoint(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None) -> tuple[int, dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNG states from ``directory``; return ``(step, extra)``.

    No checkpoint there → ``(0, {})`` and nothing is touched.
    """
    directory = Path(directory)
    model_path, state_path = directory / MODEL_FILE, directory / STATE_FILE
    if not state_path.exists():
        return 0, {}
    if not model_path.exists():
        raise CheckpointError(f"{directory}: {STATE_FILE} without {MODEL_FILE}")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    with safe_open(str(model_path), framework="pt") as f:
        model_step = (f.metadata() or {}).get("step")
    if model_step != str(state["step"]):
        raise CheckpointError(f"{directory}: model is from step {model_step} but train state from step "
                              f"{state['step']} (interrupted while saving)")
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    model.load_state_dict(load_file(str(model_path), device=str(device)))
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return int(state["step"]), state["extra"]


def _temp_path(directory: Path, name: str) -> Path:
    # Same directory as the target so that os.replace is a rename on one file system (atomic).
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    return Path(path)


METRICS_FILE = "metrics.jsonl"


def append_metrics(directory: Path, step: int, metrics: dict[str, float]) -> None:
    """One JSON line ``{"step": ..., **metrics}`` appended to the run's ``metrics.jsonl``."""
    with open(Path(directory) / METRICS_FILE, "a") as f:
        f.write(json.dumps({"step": step, **metrics}) + "\n")


def truncate_metrics(directory: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the last checkpoint of a run that crashed), so none repeat."""
    path = Path(directory) / METRICS_FILE
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))
