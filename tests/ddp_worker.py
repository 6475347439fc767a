"""Worker for tests/test_lm_solver_ddp.py: trains a tiny LM with LMSolver, alone or as one rank under torchrun.

``python tests/ddp_worker.py OUT_WEIGHTS RUN_DIR``: 4 steps, a fresh solver resuming from the checkpoint for 4
more (so resumption under DDP is exercised), then rank 0 saves the final state dict to ``OUT_WEIGHTS``.
"""

from __future__ import annotations

import sys

import torch

from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions
from wavecraft.lm.model import LMModel
from wavecraft.train.config import LMTrainConfig
from wavecraft.train.distributed import cleanup, init_from_env, is_main
from wavecraft.train.lm_solver import LMSolver

CFG = LMConfig(dim=32, num_heads=2, num_layers=2, card=16, n_q=4)
GLOBAL_BATCH = 4


def batch_at(step: int) -> tuple[torch.Tensor, Conditions]:
    """The global batch of a step, the same on every rank (a generator seeded by the step)."""
    g = torch.Generator().manual_seed(1000 + step)
    codes = torch.randint(0, CFG.card, (GLOBAL_BATCH, CFG.n_q, 8), generator=g)
    cond = Conditions(cross_src=torch.randn(GLOBAL_BATCH, 3, CFG.dim, generator=g),
                      cross_mask=torch.ones(GLOBAL_BATCH, 3, dtype=torch.long))
    return codes, cond


def null_condition(cond: Conditions) -> Conditions:
    return Conditions(cross_src=torch.zeros_like(cond.cross_src), cross_mask=torch.zeros_like(cond.cross_mask))


def main(out_path: str, run_dir: str) -> None:
    init_from_env()
    torch.manual_seed(0)
    cfg = LMTrainConfig(lr=1e-3, warmup_steps=2, total_steps=8, cfg_dropout=0.5, ema_decay=0.9, log_every=1,
                        checkpoint_every=4, output_dir=run_dir)
    LMSolver(LMModel(CFG), cfg, null_condition).fit(batch_at, max_steps=4)
    torch.manual_seed(1)  # a different init: the checkpoint must overwrite it on every rank
    solver = LMSolver(LMModel(CFG), cfg, null_condition)
    solver.fit(batch_at)
    if is_main():
        torch.save({"step": solver.step, "model": solver.lm.state_dict()}, out_path)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
