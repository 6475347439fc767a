"""The run directory and step loop shared by the solvers: config snapshot, metrics log, periodic checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml

from .checkpoint import append_metrics, truncate_metrics
from .config import config_to_dict


class _Solver(Protocol):
    step: int
    cfg: Any  # has log_every and checkpoint_every
    output_dir: Path

    def save(self) -> None: ...


def prepare_run_dir(output_dir: Path, cfg: Any, step: int) -> None:
    """Create ``output_dir``, snapshot the config, and drop log lines a crashed run wrote past ``step``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
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
