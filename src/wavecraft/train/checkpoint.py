"""Resumable training checkpoints: model weights as safetensors, the rest as a weights-only-loadable ``.pt``.

A run directory keeps the newest checkpoint and the one before it, each in a folder of its own::

    checkpoints/step-00000020/model.safetensors   the model's state dict (``step`` in its metadata)
    checkpoints/step-00000020/train_state.pt      optimizer, scheduler, ``step``, torch/python/CUDA RNGs, ``extra``
    checkpoints/step-00000020/checkpoint.json     ``step`` and the SHA-256 of both files

A checkpoint is written into a hidden temporary folder, flushed to disk and renamed into place: that rename is the
commit point, so a crash, a signal or a full disk leaves either the whole new checkpoint or none of it (the
temporary folder is removed on the way out, or by the next run when a ``kill -9`` left it). Only then is the
oldest one pruned. Loading checks the checksums before parsing anything, and a checkpoint that fails any check
(torn, truncated, bit-flipped, replaced by a pickle that needs code to load: it is never unpickled unsafely) is
reported in one line and the previous one used instead. The single-checkpoint layout of earlier versions
(``model.safetensors`` + ``train_state.pt`` in the run directory itself) still resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..fileio import atomic_output, follow_umask, fsync_path

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.pt"
DIGEST_FILE = "checkpoint.json"
KEEP = 2  # the newest checkpoint and the previous one, to fall back to when the newest is damaged

_STEP_DIR = re.compile(r"step-(\d{8,})")
# Temporaries of this module: checkpoint folders being written / replaced, and the per-file temporaries that the
# single-checkpoint writer of earlier versions left in the run directory itself (``tempfile.mkstemp`` names).
_TEMP_DIR = re.compile(r"\.step-\d{8,}\.(?:tmp|old)-[0-9a-f]+")
_LEGACY_TEMP = re.compile(r"\.(?:model\.safetensors|train_state\.pt)\.[A-Za-z0-9_]+\.tmp")
_MAX_DIGEST_BYTES = 64 * 1024


def step_dir(directory: str | Path, step: int) -> Path:
    """The folder of the checkpoint of ``step`` in run directory ``directory``."""
    return Path(directory) / CHECKPOINTS_DIR / f"step-{step:08d}"


def non_finite(tensors: Mapping[str, Any], prefix: str = "") -> str | None:
    """The name of the first floating-point tensor of ``tensors`` (nested dicts are searched, their keys joined
    with dots) holding a NaN or an infinity; ``None`` when all are finite."""
    for name, value in tensors.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            found = non_finite(value, f"{key}.")
            if found is not None:
                return found
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def save_checkpoint(directory: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint of ``step`` into ``directory`` (the run directory); return its folder.

    ``extra`` must hold only weights-only-safe values (tensors, numbers, strings, lists/tuples/dicts of them).
    Weights (or tensors of ``extra``) with NaN or infinite values are refused with a :class:`CheckpointError`,
    as is a checkpoint that cannot be written (full disk, ...): the checkpoints already there stay as they were.
    """
    directory = Path(directory)
    # safetensors refuses shared storage; contiguous clones also detach the saved tensors from the live model.
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    extra = extra or {}
    bad = non_finite(weights) or non_finite(extra, "extra.")
    if bad is not None:
        raise CheckpointError(f"refusing to save the checkpoint of step {step}: {bad} has NaN or infinite values "
                              f"(the previous checkpoint in {directory / CHECKPOINTS_DIR} is kept)")
    version, internal, gauss = random.getstate()
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        # python's state is a tuple of (int, tuple[int], float|None); lists keep it plain for weights_only.
        "rng": {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss],
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "extra": extra,
    }
    final = step_dir(directory, step)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _commit(final, weights, state)
    except (OSError, RuntimeError, ValueError) as e:  # torch.save reports a failed write as a RuntimeError
        raise CheckpointError(f"cannot write the checkpoint of step {step} to {final}: {_one_line(e)} (the "
                              "previous checkpoint is kept)") from None
    _prune(directory, step)
    return final


def _commit(final: Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tmp = final.with_name(f".{final.name}.tmp-{secrets.token_hex(6)}")
    tmp.mkdir()
    old: Path | None = None
    try:
        save_file(weights, str(tmp / MODEL_FILE), metadata={"step": str(state["step"])})
        torch.save(state, tmp / STATE_FILE)
        digests = {name: _sha256(tmp / name) for name in (MODEL_FILE, STATE_FILE)}
        (tmp / DIGEST_FILE).write_text(json.dumps({"step": state["step"], "sha256": digests}) + "\n")
        for name in (MODEL_FILE, STATE_FILE, DIGEST_FILE):
            follow_umask(tmp / name)
            fsync_path(tmp / name)
        fsync_path(tmp)
        if final.exists():
            # A checkpoint of this step already there is one that resuming rejected (or one of an earlier run
            # started afresh): moved aside first, since a folder cannot be renamed over a non-empty one.
            old = final.with_name(f".{final.name}.old-{secrets.token_hex(6)}")
            os.rename(final, old)
        os.rename(tmp, final)  # the commit point
        fsync_path(final.parent)
    except BaseException:  # KeyboardInterrupt (Ctrl-C, SIGTERM in the CLI) included: no temporaries left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@dataclass(frozen=True)
class _Candidate:
    step: int  # -1: a single-checkpoint layout whose step cannot even be read
    folder: Path
    legacy: bool  # the single-checkpoint layout of earlier versions (no checksums)

    @property
    def name(self) -> str:
        return str(self.folder / STATE_FILE) if self.legacy else str(self.folder)


def _candidates(directory: Path) -> list[_Candidate]:
    """The checkpoints in run directory ``directory``, newest first."""
    found = []
    root = directory / CHECKPOINTS_DIR
    if root.is_dir():
        for entry in root.iterdir():
            match = _STEP_DIR.fullmatch(entry.name)
            if match and entry.is_dir():
                found.append(_Candidate(int(match.group(1)), entry, legacy=False))
    if (directory / STATE_FILE).exists() or (directory / MODEL_FILE).exists():
        found.append(_Candidate(_legacy_step(directory), directory, legacy=True))
    # At equal steps the checksummed layout is preferred.
    return sorted(found, key=lambda c: (c.step, not c.legacy), reverse=True)


def _legacy_step(directory: Path) -> int:
    from safetensors import safe_open

    try:
        with safe_open(str(directory / MODEL_FILE), framework="pt") as f:
            return int((f.metadata() or {})["step"])
    except Exception:  # noqa: BLE001 - unreadable: it is tried last, and reported then
        return -1


def latest_step(directory: str | Path) -> int:
    """The step of the newest checkpoint in ``directory`` (not verified), 0 when there is none."""
    candidates = _candidates(Path(directory))
    return max(candidates[0].step, 0) if candidates else 0


def load_checkpoint(directory: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None, restore_extra: Callable[[dict[str, Any]], None] | None = None,
                    step: int | None = None) -> tuple[int, dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNG states from the newest usable checkpoint in ``directory``;
    return ``(step, extra)``.

    ``restore_extra(extra)`` restores what the caller keeps in ``extra``; a failure there counts as a damaged
    checkpoint too. A damaged checkpoint is reported (one warning naming it) and the previous one is tried; when
    none is usable a one-line :class:`CheckpointError` says why. No checkpoint at all → ``(0, {})``, nothing touched.
    ``step``: load that checkpoint or fail, no fallback (the other ranks of a data-parallel run load the one rank 0
    chose).
    """
    directory = Path(directory)
    failures = []
    candidates = _candidates(directory)
    if step is not None:
        candidates = [c for c in candidates if c.step == step]
        if not candidates:
            raise CheckpointError(f"no checkpoint of step {step} in {directory}")
    for candidate in candidates:
        try:
            found, weights, state = _read(candidate, model)
            model.load_state_dict(weights)
            if optimizer is not None:
                optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            extra = state["extra"]
            if restore_extra is not None:
                restore_extra(extra)
            _restore_rng(state["rng"])
        except Exception as e:  # noqa: BLE001 - a damaged file can fail anywhere in the readers; all mean "unusable"
            reason = _one_line(e)
            failures.append(f"{candidate.name}: {reason}")
            logger.warning("checkpoint %s is unusable (%s); falling back to the previous one", candidate.name,
                           reason)
            continue
        return found, extra
    if failures:
        raise CheckpointError(f"no usable checkpoint in {directory}: {'; '.join(failures)}")
    return 0, {}


def _read(candidate: _Candidate, model: torch.nn.Module) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]]:
    """Everything a checkpoint holds, verified (checksums, structure, steps, names and shapes against ``model``,
    finite weights) before anything is restored from it."""
    from safetensors import safe_open

    from ..checkpoints.safe_load import load_safetensors, load_torch_file

    folder = candidate.folder
    model_path, state_path = folder / MODEL_FILE, folder / STATE_FILE
    for path in (model_path, state_path):
        if not path.is_file():
            raise CheckpointError(f"{path.name} is missing")
    if not candidate.legacy:
        _verify_digests(folder, candidate.step)
    state = load_torch_file(state_path)
    _check_state(state)
    with safe_open(str(model_path), framework="pt") as f:
        model_step = (f.metadata() or {}).get("step")
    if model_step != str(state["step"]):
        raise CheckpointError(f"the model is from step {model_step} but the train state from step {state['step']} "
                              "(interrupted while saving)")
    if not candidate.legacy and state["step"] != candidate.step:
        raise CheckpointError(f"the train state is from step {state['step']}, not {candidate.step}")
    weights = load_safetensors(model_path)
    expected = model.state_dict()
    missing, unexpected = expected.keys() - weights.keys(), weights.keys() - expected.keys()
    if missing or unexpected:
        names = sorted(missing)[:3] + sorted(unexpected)[:3]
        raise CheckpointError(f"its weights do not match the model ({len(missing)} missing, {len(unexpected)} "
                              f"unexpected: {', '.join(names)})")
    for name, value in weights.items():
        if value.shape != expected[name].shape:
            raise CheckpointError(f"{name} has shape {tuple(value.shape)}, the model {tuple(expected[name].shape)}")
    bad = non_finite(weights)
    if bad is not None:
        raise CheckpointError(f"{bad} has NaN or infinite values")
    return state["step"], weights, state


def _verify_digests(folder: Path, step: int) -> None:
    path = folder / DIGEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{DIGEST_FILE} is missing")
    if path.stat().st_size > _MAX_DIGEST_BYTES:
        raise CheckpointError(f"{DIGEST_FILE} is too large")
    try:
        record = json.loads(path.read_text())
        digests, recorded_step = record["sha256"], record["step"]
        if not isinstance(digests, dict):
            raise TypeError("sha256 is not a mapping")
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{DIGEST_FILE} is malformed ({_one_line(e)})") from None
    if recorded_step != step:
        raise CheckpointError(f"{DIGEST_FILE} is of step {recorded_step}")
    for name in (MODEL_FILE, STATE_FILE):
        if digests.get(name) != _sha256(folder / name):
            raise CheckpointError(f"{name} does not match its checksum (damaged)")


def _check_state(state: Any) -> None:
    """``train_state.pt``'s structure, so that a damaged one fails here with a reason, not deep in a loader."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{STATE_FILE} holds a {type(state).__name__}, not a train state")
    kinds = {"step": int, "optimizer": dict, "scheduler": dict, "rng": dict, "extra": dict}
    for key, kind in kinds.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(f"{STATE_FILE}: {key!r} is missing or not a {kind.__name__}")
    rng = state["rng"]
    if not isinstance(rng.get("torch"), torch.Tensor) or rng["torch"].dtype != torch.uint8:
        raise CheckpointError(f"{STATE_FILE}: the torch RNG state is missing or malformed")
    python = rng.get("python")
    if not (isinstance(python, (list, tuple)) and len(python) == 3 and isinstance(python[1], (list, tuple))):
        raise CheckpointError(f"{STATE_FILE}: the python RNG state is missing or malformed")


def _restore_rng(rng: dict[str, Any]) -> None:
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _prune(directory: Path, step: int) -> None:
    """Keep the checkpoint of ``step`` and the newest one before it. Newer ones are of a past that the run no
    longer follows (it resumed from an older checkpoint, or started afresh) and go as well."""
    previous = [c for c in _candidates(directory) if c.step < step]
    doomed = [c for c in _candidates(directory) if c.step > step] + previous[KEEP - 1:]
    for candidate in doomed:
        if candidate.legacy:
            for name in (MODEL_FILE, STATE_FILE):
                with contextlib.suppress(OSError):
                    (candidate.folder / name).unlink()
        else:
            # Renamed first: an interrupted deletion then leaves a temporary (removed by the next run), never a
            # half-deleted checkpoint that looks like one.
            hidden = candidate.folder.with_name(f".{candidate.folder.name}.old-{secrets.token_hex(6)}")
            try:
                os.rename(candidate.folder, hidden)
            except OSError:
                continue
            shutil.rmtree(hidden, ignore_errors=True)


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporaries this module's writers leave when killed outright (``kill -9``, power loss) from run
    directory ``directory``; return them. Call it only when no other process is saving into ``directory``."""
    directory = Path(directory)
    stale = [p for p in _listdir(directory) if _LEGACY_TEMP.fullmatch(p.name)]
    stale += [p for p in _listdir(directory / CHECKPOINTS_DIR) if _TEMP_DIR.fullmatch(p.name)]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    if stale:
        logger.info("removed %d temporary file(s) of an interrupted checkpoint save in %s", len(stale), directory)
    return stale


def _listdir(directory: Path) -> Iterator[Path]:
    try:
        yield from directory.iterdir()
    except OSError:  # no such folder (yet)
        return


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):  # streamed: a checkpoint can be larger than the memory to spare
            digest.update(chunk)
    return digest.hexdigest()


def _one_line(error: BaseException, limit: int = 200) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


METRICS_FILE = "metrics.jsonl"


def append_metrics(directory: Path, step: int, metrics: dict[str, float]) -> None:
    """One JSON line ``{"step": ..., **metrics}`` appended to the run's ``metrics.jsonl``, in one write (a kill
    tears at most that last line, which :func:`truncate_metrics` drops on resume)."""
    line = json.dumps({"step": step, **{k: _json_number(v) for k, v in metrics.items()}}) + "\n"
    with open(Path(directory) / METRICS_FILE, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # a torn line (killed mid-append): start on a fresh line
                line = "\n" + line
        f.write(line.encode())


def _json_number(value: Any) -> Any:
    # json.dumps would write NaN / Infinity, which strict JSON readers reject.
    return None if isinstance(value, float) and not math.isfinite(value) else value


def truncate_metrics(directory: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the last checkpoint of a run that crashed), so none repeat,
    and lines that are not a JSON record with a ``step`` (torn by a kill during an append). Rewritten atomically."""
    path = Path(directory) / METRICS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    lines = data.decode("utf-8", errors="replace").splitlines(keepends=True)
    kept, torn = [], 0
    for line in lines:
        record = _record(line)
        if record is None:
            torn += line.strip() != ""
        elif record["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if torn:
        logger.warning("%s: dropped %d torn or unreadable line(s)", path, torn)
    text = "".join(kept)
    if text.encode() != data:
        with atomic_output(path) as tmp:
            tmp.write_text(text)


def _record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return None
    return record
