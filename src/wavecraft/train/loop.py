"""The run directory and step loop shared by the solvers: config snapshot, metrics log, periodic checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from ..errors import WavecraftError
from ..fileio import atomic_output
from .checkpoint import CHECKPOINTS_DIR, append_metrics, latest_step, remove_stale_temporaries, truncate_metrics
from .config import config_to_dict
from .distributed import all_reduce_mean, from_main


class _Solver(Protocol):
    step: int
    cfg: Any  # has log_every and checkpoint_every
    output_dir: Path

    def save(self) -> None: ...


def prepare_run_dir(output_dir: Path, cfg: Any, step: int) -> None:
    """Create ``output_dir``, snapshot the config, drop log lines a crashed run wrote past ``step`` (and a torn
    last one), and remove the temporaries of a checkpoint save that was killed outright."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(output_dir / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    remove_stale_temporaries(output_dir)
    truncate_metrics(output_dir, step)


def run_steps(solver: _Solver, train_one: Callable[[], dict[str, float] | None], end: int,
              is_main: bool = True) -> None:
    """Call ``train_one()`` (which advances ``solver.step``; ``None`` = data ran out) until ``solver.step == end``.

    Logs every ``log_every`` steps (main process only), checkpoints every ``checkpoint_every`` steps, and once
    more on return unless the last step was just saved.
    """
    saved_at = solver.step
    while solver.step < end:
        metrics = train_one()
        if metrics is None:
            break
        if is_main and solver.step % solver.cfg.log_every == 0:
            append_metrics(solver.output_dir, solver.step, metrics)
        if solver.step % solver.cfg.checkpoint_every == 0:
            solver.save()
            saved_at = solver.step
    if saved_at != solver.step:
        solver.save()


def stop_if_not_finite(output_dir: Path, step: int, values: dict[str, torch.Tensor]) -> None:
    """Raise a one-line :class:`WavecraftError` when one of ``values`` (scalar losses and gradient norms of the
    step that would be ``step``) is NaN or infinite, before the optimizer applies it: the weights stay those of
    the step before, nothing more is saved, and the last checkpoint stays the newest. Every rank takes the same
    decision (one rank's NaN stops all of them)."""
    flags = torch.stack([~torch.isfinite(v.detach().float().reshape(())) for v in values.values()]).float()
    flags = all_reduce_mean(flags.to(next(iter(values.values())).device))
    if not bool(flags.any()):
        return
    shown = ", ".join(f"{name} {float(v.detach()):g}" for name, v in values.items())
    kept = latest_step(output_dir)
    where = f"the checkpoint of step {kept} in {output_dir / CHECKPOINTS_DIR} is kept" if kept else "no checkpoint yet"
    raise WavecraftError(f"step {step}: training diverged ({shown}); stopped before updating the weights, {where} "
                         "(try a lower lr or a smaller grad_clip, or check the data)")


def resume_on_all_ranks(is_main: bool, device: torch.device, load: Callable[[int | None], int]) -> int:
    """Resume every rank from the same checkpoint and return its step (0: none).

    ``load(step)`` restores the checkpoint of ``step`` (``None``: the newest usable one, falling back past damaged
    ones) and returns its step. Rank 0 chooses; the others then load exactly that step. Ranks that fell back on their
    own could pick different checkpoints and then wait forever for each other's collectives.
    """
    error: WavecraftError | None = None
    chosen = -1
    if is_main:
        try:
            chosen = load(None)
        except WavecraftError as e:
            error = e
    chosen = from_main(chosen, device)
    if not is_main and chosen > 0:
        try:
            load(chosen)
        except WavecraftError as e:
            error = e
    failed = all_reduce_mean(torch.tensor([float(error is not None)], device=device))
    if error is not None:
        raise error
    if chosen < 0 or bool(failed.item() > 0):
        raise WavecraftError(f"another rank could not resume from the checkpoint of step {chosen} (see its error)")
    return chosen


def save_on_main(is_main: bool, device: torch.device, write: Callable[[], None]) -> None:
    """Run ``write()`` (the checkpoint save) on rank 0 while the other ranks wait, and have every rank raise when it
    failed: with a plain barrier the others would wait forever for a rank 0 that stopped (full disk, ...)."""
    error: WavecraftError | None = None
    if is_main:
        try:
            write()
        except WavecraftError as e:
            error = e
    # Doubles as the barrier: the checkpoint is complete on disk once any rank returns.
    failed = all_reduce_mean(torch.tensor([float(error is not None)], device=device))
    if error is not None:
        raise error
    if bool(failed.item() > 0):
        raise WavecraftError("rank 0 could not write the checkpoint (see its error)")
