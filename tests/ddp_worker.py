"""Worker for tests/test_lm_solver_ddp.py: trains a tiny LM with LMSolver, alone or as one rank under torchrun.

``python tests/ddp_worker.py OUT_WEIGHTS RUN_DIR``: 4 steps, a fresh solver resuming from the checkpoint for 4
more (so resumption under DDP is exercised), then rank 0 saves the final state dict to ``OUT_WEIGHTS``.

``python tests/ddp_worker.py OUT_WEIGHTS RUN_DIR codec`` (tests/test_codec_ddp.py): the same for a tiny EnCodec
with CodecSolver (discriminator, balancer, quantizer dropout and validation on), 3 + 3 steps; ``OUT_WEIGHTS``
then also holds the discriminator's weights and the balancer's state.
"""

from __future__ import annotations

import sys

import torch

from wavecraft.codec import CodecConfig, EnCodec
from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions
from wavecraft.lm.model import LMModel
from wavecraft.train.codec_solver import AdversarialConfig, BalancerConfig, CodecSolver, CodecTrainConfig
from wavecraft.train.codec_step import CodecLossWeights
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


# A high dead-code threshold keeps the (gathered) dead-code replacement busy on every step.
CODEC = CodecConfig(sample_rate=16000, n_filters=4, dimension=16, ratios=(4, 4), lstm_layers=1, n_q=2, bins=32,
                    kmeans_iters=5, threshold_ema_dead_code=8.0, q_dropout=True)
CODEC_LENGTH = 2000


def codec_batch_at(step: int) -> torch.Tensor:
    """The global codec batch of a step ``[GLOBAL_BATCH, 1, CODEC_LENGTH]``: noisy sines seeded by the step."""
    g = torch.Generator().manual_seed(2000 + step)
    t = torch.arange(CODEC_LENGTH) / 16000
    freqs = 100 + 900 * torch.rand(GLOBAL_BATCH, 1, 1, generator=g)
    return 0.4 * torch.sin(2 * torch.pi * freqs * t) + 0.05 * torch.randn(GLOBAL_BATCH, 1, CODEC_LENGTH, generator=g)


def codec_main(out_path: str, run_dir: str) -> None:
    init_from_env()
    torch.manual_seed(0)
    # No mel loss: at init the tiny decoder's output is nearly silent in places, where the gradient of log|STFT|
    # (the direction of X / |X| at X ~ 0) flips with the 1e-8 rounding differences of a different batch size, so
    # no two batch layouts would agree (a single process on batches of 4 vs 2 + 2 diverges as much). The loss's
    # exact shard equivalence is checked in tests/test_codec_ddp.py on its own.
    cfg = CodecTrainConfig(codec=CODEC, batch_size=GLOBAL_BATCH, lr=3e-3, total_steps=6, log_every=1,
                           losses=CodecLossWeights(msspec=0.0),
                           checkpoint_every=3, output_dir=run_dir, valid_every=2, valid_batch_size=GLOBAL_BATCH,
                           adversarial=AdversarialConfig(enabled=True, n_ffts=(256, 128), filters=4, update_prob=0.5),
                           balancer=BalancerConfig(enabled=True, ema_decay=0.9))
    valid = codec_batch_at(10_000)
    CodecSolver(EnCodec(CODEC), cfg).fit(codec_batch_at, max_steps=3, valid=valid)
    torch.manual_seed(1)  # a different init: the checkpoint must overwrite it on every rank
    solver = CodecSolver(EnCodec(CODEC), cfg)
    solver.fit(codec_batch_at, valid=valid)
    assert solver.discriminator is not None and solver.balancer is not None
    if is_main():
        torch.save({"step": solver.step, "model": solver.model.state_dict(),
                    "discriminator": dict(solver.discriminator.state_dict()),
                    "balancer": solver.balancer.state_dict()["sum"]}, out_path)
    cleanup()


if __name__ == "__main__":
    if sys.argv[3:] == ["codec"]:
        codec_main(sys.argv[1], sys.argv[2])
    else:
        main(sys.argv[1], sys.argv[2])
