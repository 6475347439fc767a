"""The codec training loop: Adam + warm-up/cosine, clipping, logs, checkpoints, exact resumption, a final export.

Reconstruction losses only (L1, multi-scale mel, VQ commitment, see :func:`.codec_step.codec_losses`): there is no
discriminator / adversarial or feature-matching loss yet, so the codec trained here is EnCodec's recipe without
its GAN half (expect muffled but intelligible reconstructions).

Conventions follow :mod:`.lm_solver`: data comes from ``batches(step)`` (the batch of a global step), checkpoints
restore weights (including the RVQ's EMA codebook buffers), optimizer, scheduler and RNG states, and ``metrics.jsonl``
is trimmed back to the restored step, so a resumed run reproduces the uninterrupted one. Single process only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..codec.compression import EnCodec
from ..codec.config import CodecConfig
from ..errors import WavecraftError
from .checkpoint import load_checkpoint, save_checkpoint
from .codec_step import CodecLossWeights, codec_losses
from .distributed import rank_and_world_size
from .loop import prepare_run_dir, run_steps
from .schedule import warmup_cosine

FINAL_DIR = "final"


def _small_codec() -> CodecConfig:
    # Trainable on a CPU in minutes: 16 kHz, hop 320 (50 Hz frames), 4 x 256 codebooks (1.6 kbps).
    return CodecConfig(sample_rate=16000, n_filters=8, dimension=32, ratios=(8, 5, 4, 2), lstm_layers=1,
                       n_q=4, bins=256)


@dataclass(frozen=True)
class CodecTrainConfig:
    """What the codec training run needs: data, model shape (``codec``), optimisation and bookkeeping."""

    manifest: str = ""
    codec: CodecConfig = field(default_factory=_small_codec)
    segment_duration: float = 1.0
    batch_size: int = 8
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    total_steps: int = 1000
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # <= 0 disables clipping (the norm is still reported)
    losses: CodecLossWeights = field(default_factory=CodecLossWeights)
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    output_dir: str = "runs/codec"


class CodecSolver:
    """Trains ``model`` (an :class:`EnCodec`) with ``cfg``; see the module docstring."""

    def __init__(self, model: EnCodec, cfg: CodecTrainConfig) -> None:
        if rank_and_world_size()[1] > 1:
            # Without DDP the replicas (and their EMA codebooks) would silently drift apart.
            raise WavecraftError("codec training runs in a single process; data parallelism is not supported yet")
        self.model = model
        self.cfg = cfg
        self.device = next(model.parameters()).device
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
        self.scheduler = warmup_cosine(self.optimizer, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio)
        self.step = 0  # optimizer steps done so far (survives resumption)

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def train_step(self, wav: torch.Tensor) -> dict[str, float]:
        """One optimizer step on ``wav [B, C, T]``; returns ``loss``, its parts, ``si_snr``, ``lr``, ``grad_norm``."""
        self.model.train()
        losses = codec_losses(self.model, wav.to(self.device), self.cfg.losses)
        self.optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {**{k: float(v.detach()) for k, v in losses.items()}, "lr": lr, "grad_norm": float(grad_norm)}

    def fit(self, batches: Callable[[int], torch.Tensor], resume: bool = True, max_steps: int | None = None) -> None:
        """Train until ``cfg.total_steps`` (or for at most ``max_steps`` more steps in this call).

        Resumes from ``cfg.output_dir`` when it holds a checkpoint (and ``resume``); logs every ``log_every`` steps,
        checkpoints every ``checkpoint_every`` steps and on return, and once ``total_steps`` is reached exports the
        model with ``save_pretrained`` to ``output_dir/final`` (loadable with :meth:`EnCodec.from_pretrained`).
        """
        if resume:
            self.resume()
        prepare_run_dir(self.output_dir, self.cfg, self.step)
        end = self.cfg.total_steps if max_steps is None else min(self.cfg.total_steps, self.step + max_steps)
        run_steps(self, lambda: self.train_step(batches(self.step)), end)
        if self.step >= self.cfg.total_steps:
            self.model.save_pretrained(self.output_dir / FINAL_DIR)

    def save(self) -> None:
        """Checkpoint the current state into ``cfg.output_dir``."""
        save_checkpoint(self.output_dir, self.step, self.model, self.optimizer, self.scheduler)

    def resume(self) -> bool:
        """Restore the checkpoint in ``cfg.output_dir`` if there is one; return whether one was found."""
        step, _ = load_checkpoint(self.output_dir, self.model, self.optimizer, self.scheduler)
        self.step = step
        return step > 0


def batches_from_manifest(cfg: CodecTrainConfig) -> Callable[[int], torch.Tensor]:
    """``batches(step) -> wav [B, C, T]`` of segments from ``cfg.manifest`` at the codec's rate and channels.

    Item ``i`` of the dataset is seeded by ``(cfg.seed, i)`` only and step ``s`` takes items ``s*B .. s*B+B-1``,
    so a step's batch is the same whenever it is asked for: resuming needs no data-loader state.
    """
    from ..data import SegmentDataset, collate, read_manifest

    if not cfg.manifest:
        raise WavecraftError("no training manifest given (set manifest=PATH)")
    dataset = SegmentDataset(read_manifest(cfg.manifest), cfg.segment_duration, cfg.codec.sample_rate,
                             cfg.codec.channels, num_samples=cfg.total_steps * cfg.batch_size, seed=cfg.seed,
                             return_info=False)
    size = cfg.batch_size

    def batches(step: int) -> torch.Tensor:
        return collate([dataset[i] for i in range(step * size, (step + 1) * size)])[0]
    return batches
