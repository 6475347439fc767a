"""The codec training loop: Adam + warm-up/cosine, clipping, logs, checkpoints, exact resumption, a final export.

Losses: L1 and multi-scale mel reconstruction, VQ commitment (see :mod:`.codec_step`) and, with
``adversarial.enabled``, EnCodec's GAN half: a multi-scale STFT discriminator (:mod:`.discriminator`) trained with
a hinge loss, and the generator's hinge + feature-matching losses. With ``balancer.enabled`` the weights of the
losses of the decoded waveform (``l1``, ``msspec``, ``adv``, ``feat``) set their share of its gradient
(:mod:`.balancer`); the commitment loss is always backpropagated with its plain weight. A step first updates the
discriminator (every step, or with probability ``adversarial.update_prob`` drawn from a generator seeded by
``(seed, step)``) on the detached reconstruction, then the codec against the updated discriminator.

Conventions follow :mod:`.lm_solver`: data comes from ``batches(step)`` (the global batch of a step), checkpoints
restore weights (including the RVQ's EMA codebook buffers), optimizer, scheduler and RNG states, and the
discriminator, its optimizer and the balancer's moving averages (in the checkpoint's ``extra``), and
``metrics.jsonl`` is trimmed back to the restored step, so a resumed run reproduces the uninterrupted one (bit for
bit, whatever step it stopped at). Segments with NaN or infinite samples are skipped; a step whose loss or gradient
is not finite stops the run before it touches the weights, so the last checkpoint stays good, and non-finite weights
are never saved or exported. With
``valid_manifest`` set, SI-SNR and mel distance of a fixed held-out batch are logged every ``valid_every`` steps
(``valid_si_snr``, ``valid_mel``).

Data parallel: under ``torchrun`` (a process group initialised, e.g. by :func:`.distributed.init_from_env`), every
rank calls ``batches(step)`` for the global batch and trains on its contiguous shard; the codec is wrapped in
``DistributedDataParallel`` (gradients averaged), the discriminator's gradients are averaged explicitly, the
RVQ's EMA codebooks are synchronised by the quantizer itself (``set_distributed``), and the feature-matching
normalisers and balancer norms are averaged over ranks, so the run matches one process on the global batch up to
float rounding (k-means initialisation and dead-code replacement draw from the latents gathered from all ranks, then
rank 0's result is broadcast). The global batch size (and the validation batch size) must be a multiple of the world
size. Rounding differences are not always negligible: at initialisation the log-mel loss's gradient is chaotic where
the reconstruction is nearly silent (the direction of ``X / |X|`` at ``X ~ 0``), so runs with different batch layouts
(one process on 4 items or two on 2 + 2) drift apart there as two single-process runs would.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from ..codec.compression import EnCodec
from ..codec.config import CodecConfig
from ..errors import WavecraftError
from .balancer import Balancer
from .checkpoint import append_metrics, load_checkpoint, non_finite, save_checkpoint
from .codec_losses import multiscale_mel_loss, si_snr
from .codec_step import CodecLossWeights, adversarial_losses, discriminator_loss, reconstruction_losses
from .discriminator import DEFAULT_N_FFTS, MultiScaleSTFTDiscriminator
from .distributed import all_reduce_gradients, all_reduce_mean, barrier, broadcast_module, rank_and_world_size, shard
from .loop import prepare_run_dir, resume_on_all_ranks, run_steps, save_on_main, stop_if_not_finite
from .schedule import warmup_cosine

FINAL_DIR = "final"
_DDP_ARGS = inspect.signature(DistributedDataParallel).parameters
_BUFFER_SYNC_ARG = "forward_sync_buffers" if "forward_sync_buffers" in _DDP_ARGS else "broadcast_buffers"


def _small_codec() -> CodecConfig:
    # Trainable on a CPU in minutes: 16 kHz, hop 320 (50 Hz frames), 4 x 256 codebooks (1.6 kbps).
    return CodecConfig(sample_rate=16000, n_filters=8, dimension=32, ratios=(8, 5, 4, 2), lstm_layers=1,
                       n_q=4, bins=256)


@dataclass(frozen=True)
class AdversarialConfig:
    """The discriminator (its loss weights are ``losses.adv`` / ``losses.feat``). EnCodec: windows 2048..128,
    32 filters, the discriminator updated with probability 2/3 at 24 kHz."""

    enabled: bool = False
    n_ffts: tuple[int, ...] = DEFAULT_N_FFTS  # one STFT sub-discriminator per window length (hop = window / 4)
    filters: int = 32
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    update_prob: float = 1.0  # probability of a discriminator update at a step

    def __post_init__(self) -> None:
        if not 0 <= self.update_prob <= 1:
            raise ValueError(f"update_prob must be in [0, 1], got {self.update_prob}")
        if not self.n_ffts:
            raise ValueError("n_ffts needs at least one window length")


@dataclass(frozen=True)
class BalancerConfig:
    """EnCodec's gradient balancer (see :class:`.balancer.Balancer`)."""

    enabled: bool = False
    total_norm: float = 1.0
    ema_decay: float = 0.999
    per_batch_item: bool = True


@dataclass(frozen=True)
class CodecTrainConfig:
    """What the codec training run needs: data, model shape (``codec``), optimisation and bookkeeping."""

    manifest: str = ""
    codec: CodecConfig = field(default_factory=_small_codec)
    init_from: str = ""  # start from this trained codec (its own config; ``codec`` is then ignored)
    train_part: str = "all"  # all | decoder: encoder and quantizer frozen, so the codes (and LMs on them) stay valid
    segment_duration: float = 1.0
    batch_size: int = 8
    lr: float = 3e-4
    betas: tuple[float, float] = (0.5, 0.9)
    total_steps: int = 1000
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # <= 0 disables clipping (the norm is still reported)
    losses: CodecLossWeights = field(default_factory=CodecLossWeights)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    valid_manifest: str = ""  # held-out files; empty disables validation
    valid_every: int = 100
    valid_batch_size: int = 8
    log_every: int = 10
    checkpoint_every: int = 100
    seed: int = 0
    output_dir: str = "runs/codec"

    def __post_init__(self) -> None:
        if self.train_part not in ("all", "decoder"):
            raise ValueError(f"train_part must be 'all' or 'decoder', got {self.train_part!r}")


class CodecSolver:
    """Trains ``model`` (an :class:`EnCodec`) with ``cfg``; see the module docstring.

    ``model`` stays the bare codec (checkpoints, export); under data parallelism the forward/backward pass goes
    through a DDP wrapper of it. ``discriminator`` / ``disc_optimizer`` / ``balancer`` are ``None`` when disabled.
    """

    def __init__(self, model: EnCodec, cfg: CodecTrainConfig) -> None:
        self.model = model
        self.cfg = cfg
        self.rank, self.world_size = rank_and_world_size()
        self.device = next(model.parameters()).device
        if cfg.batch_size % self.world_size:
            raise WavecraftError(f"batch_size {cfg.batch_size} does not split over {self.world_size} ranks")
        if cfg.valid_manifest and cfg.valid_batch_size % self.world_size:
            raise WavecraftError(f"valid_batch_size {cfg.valid_batch_size} does not split over {self.world_size} ranks")
        if cfg.train_part == "decoder":
            model.encoder.requires_grad_(False)
            model.quantizer.requires_grad_(False)
        self._train_module: torch.nn.Module = model
        if self.world_size > 1:
            model.quantizer.set_distributed(True)
            device_ids = [self.device] if self.device.type == "cuda" else None
            # The codebook buffers are kept in sync by the quantizer; broadcasting them again each step is waste
            # (``broadcast_buffers`` is deprecated for ``forward_sync_buffers`` in recent torch).
            no_buffer_sync = {_BUFFER_SYNC_ARG: False}
            self._train_module = DistributedDataParallel(model, device_ids=device_ids, **no_buffer_sync)
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
        self.scheduler = warmup_cosine(self.optimizer, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio)
        self.discriminator: MultiScaleSTFTDiscriminator | None = None
        self.disc_optimizer: torch.optim.Optimizer | None = None
        adv = cfg.adversarial
        if adv.enabled:
            self.discriminator = MultiScaleSTFTDiscriminator(model.channels, adv.filters, adv.n_ffts).to(self.device)
            broadcast_module(self.discriminator)  # DDP does this for the codec
            self.disc_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=adv.lr, betas=adv.betas)
        self.balancer: Balancer | None = None
        if cfg.balancer.enabled:
            names = ("l1", "msspec", "stft", "adv", "feat") if adv.enabled else ("l1", "msspec", "stft")
            weights = {n: getattr(cfg.losses, n) for n in names if getattr(cfg.losses, n) > 0}
            bcfg = cfg.balancer
            self.balancer = Balancer(weights, bcfg.total_norm, bcfg.ema_decay, bcfg.per_batch_item)
        self.step = 0  # optimizer steps done so far (survives resumption)

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _discriminator_due(self) -> bool:
        prob = self.cfg.adversarial.update_prob
        if prob >= 1:
            return True
        # Seeded by (seed, step): the same decision on every rank and after resuming, and no global RNG used.
        generator = torch.Generator().manual_seed((self.cfg.seed << 32) + self.step)
        return bool(torch.rand((), generator=generator) < prob)

    def _update_discriminator(self, wav: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        assert self.discriminator is not None and self.disc_optimizer is not None
        self.discriminator.train()
        loss = discriminator_loss(self.discriminator, fake.detach(), wav)
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        all_reduce_gradients(self.discriminator.parameters())
        grads = [p.grad for p in self.discriminator.parameters() if p.grad is not None]
        stop_if_not_finite(self.output_dir, self.step + 1,
                           {"d_loss": loss, "d_grad_norm": torch.nn.utils.get_total_norm(grads)})
        self.disc_optimizer.step()
        return loss.detach()

    def train_step(self, wav: torch.Tensor) -> dict[str, float]:
        """One optimizer step on the global batch ``wav [B, C, T]`` (each rank trains on its shard of it).

        Returns ``loss`` (weighted total), its parts (``l1``, ``msspec``, ``commitment``, and with a discriminator
        ``adv``, ``feat``, plus ``d_loss`` on steps that update it), ``si_snr``, ``lr``, ``grad_norm`` and with the
        balancer ``gnorm_<loss>`` (moving averages of the output-gradient norms); losses are averaged over ranks.
        """
        self._train_module.train()
        if self.cfg.train_part == "decoder":
            self.model.quantizer.eval()  # no EMA codebook updates, k-means or dead-code resets: codes stay fixed
        wav = shard(wav, self.rank, self.world_size).to(self.device)
        result = self._train_module(wav)
        out = result.x
        values: dict[str, torch.Tensor] = {}
        if self.discriminator is not None and self._discriminator_due():
            values["d_loss"] = self._update_discriminator(wav, out)
        parts = reconstruction_losses(out, wav, self.model.sample_rate, stft=self.cfg.losses.stft > 0)
        if self.discriminator is not None:
            self.discriminator.train()
            parts.update(adversarial_losses(self.discriminator, out, wav, reduce_scale=all_reduce_mean))
        commitment = result.penalty if result.penalty is not None else wav.new_zeros(())
        weights = self.cfg.losses
        weighted_commitment = weights.commitment * commitment
        loss = sum((getattr(weights, k) * v for k, v in parts.items()), weighted_commitment)
        self.optimizer.zero_grad(set_to_none=True)
        balancer_stats: dict[str, float] = {}
        if self.balancer is not None:
            balanced = {k: parts[k] for k in self.balancer.weights}
            balancer_stats = self.balancer.backward(balanced, out, weighted_commitment)
        else:
            loss.backward()
        # DDP averaged the gradients: they are the same on every rank, so clipping needs no communication.
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        # A NaN step would poison every weight (and the RVQ's codebooks through their EMA) for good: stop first.
        stop_if_not_finite(self.output_dir, self.step + 1, {"loss": loss, "grad_norm": grad_norm})
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        with torch.no_grad():
            values.update({"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()},
                           "commitment": commitment.detach(), "si_snr": si_snr(out, wav).mean()})
        # One collective for all of them: equal shards make the mean of the shard means the global mean.
        averaged = all_reduce_mean(torch.stack([v.float() for v in values.values()])).tolist()
        metrics = dict(zip(values, averaged, strict=True))
        return {**metrics, "lr": lr, "grad_norm": float(grad_norm), **balancer_stats}

    @torch.no_grad()
    def validate(self, wav: torch.Tensor) -> dict[str, float]:
        """``valid_si_snr`` (dB) and ``valid_mel`` (multi-scale mel distance) of the codec in eval mode on
        ``wav [B, C, T]`` (sharded over ranks, the scores averaged)."""
        self.model.eval()
        try:
            wav = shard(wav, self.rank, self.world_size).to(self.device)
            out = self.model(wav).x
            scores = torch.stack([si_snr(out, wav).mean(), multiscale_mel_loss(out, wav, self.model.sample_rate)])
        finally:
            self.model.train()
        valid_si_snr, valid_mel = all_reduce_mean(scores).tolist()
        return {"valid_si_snr": valid_si_snr, "valid_mel": valid_mel}

    def fit(self, batches: Callable[[int], torch.Tensor], resume: bool = True, max_steps: int | None = None,
            valid: torch.Tensor | None = None) -> None:
        """Train until ``cfg.total_steps`` (or for at most ``max_steps`` more steps in this call).

        Resumes from ``cfg.output_dir`` when it holds a checkpoint (and ``resume``); logs every ``log_every`` steps,
        checkpoints every ``checkpoint_every`` steps and on return, and once ``total_steps`` is reached exports the
        model with ``save_pretrained`` to ``output_dir/final`` (loadable with :meth:`EnCodec.from_pretrained`).
        ``valid [B, C, T]``: the held-out batch scored every ``valid_every`` steps (default: read from
        ``cfg.valid_manifest`` when set); its scores join the step's log line, or get a line of their own.
        """
        if resume:
            self.resume()
            # Nobody may start training (and rank 0 overwrite the checkpoint) before every rank has read it.
            barrier()
        if valid is None and self.cfg.valid_manifest:
            valid = valid_batch_from_manifest(self.cfg)
        if self.is_main:
            prepare_run_dir(self.output_dir, self.cfg, self.step)
        end = self.cfg.total_steps if max_steps is None else min(self.cfg.total_steps, self.step + max_steps)

        def train_one() -> dict[str, float]:
            metrics = self.train_step(batches(self.step))
            if valid is not None and self.cfg.valid_every > 0 and self.step % self.cfg.valid_every == 0:
                scores = self.validate(valid)
                if self.step % self.cfg.log_every == 0:
                    metrics.update(scores)
                elif self.is_main:
                    append_metrics(self.output_dir, self.step, scores)
            return metrics

        run_steps(self, train_one, end, is_main=self.is_main)
        if self.step >= self.cfg.total_steps and self.is_main:
            bad = non_finite(self.model.state_dict())
            if bad is not None:
                raise WavecraftError(f"refusing to export {self.output_dir / FINAL_DIR}: {bad} has NaN or infinite "
                                     "values")
            self.model.save_pretrained(self.output_dir / FINAL_DIR)
        barrier()

    def save(self) -> None:
        """Checkpoint the current state into ``cfg.output_dir`` (written by rank 0; every rank must call it)."""
        def write() -> None:
            extra: dict[str, Any] = {}
            if self.discriminator is not None and self.disc_optimizer is not None:
                extra["discriminator"] = dict(self.discriminator.state_dict())
                extra["disc_optimizer"] = self.disc_optimizer.state_dict()
            if self.balancer is not None:
                extra["balancer"] = self.balancer.state_dict()
            save_checkpoint(self.output_dir, self.step, self.model, self.optimizer, self.scheduler, extra)

        # The checkpoint is complete on disk once any rank returns, e.g. before a job scheduler stops the others.
        save_on_main(self.is_main, self.device, write)

    def resume(self) -> bool:
        """Restore the checkpoint in ``cfg.output_dir`` if there is one; return whether one was found.

        A checkpoint without discriminator (or balancer) state, e.g. from a reconstruction-only run, leaves the
        freshly initialised discriminator (balancer) as it is. Every rank reads the same files.
        """
        def restore(extra: dict[str, Any]) -> None:
            # Inside load_checkpoint: a failure here makes it fall back to the previous checkpoint too.
            if self.discriminator is not None and self.disc_optimizer is not None and "discriminator" in extra:
                self.discriminator.load_state_dict(extra["discriminator"])
                self.disc_optimizer.load_state_dict(extra["disc_optimizer"])
            if self.balancer is not None and "balancer" in extra:
                self.balancer.load_state_dict(extra["balancer"])

        def load(chosen: int | None) -> int:
            return load_checkpoint(self.output_dir, self.model, self.optimizer, self.scheduler, restore, step=chosen)[0]

        step = resume_on_all_ranks(self.is_main, self.device, load)
        if step == 0:
            return False
        self.step = step
        return True


def batches_from_manifest(cfg: CodecTrainConfig) -> Callable[[int], torch.Tensor]:
    """``batches(step) -> wav [B, C, T]`` of segments from ``cfg.manifest`` at the codec's rate and channels.

    Item ``i`` of the dataset is seeded by ``(cfg.seed, i)`` only and step ``s`` takes items ``s*B .. s*B+B-1``,
    so a step's batch is the same whenever it is asked for: resuming needs no data-loader state. A segment with NaN
    or infinite samples is replaced by another draw of the same item (with a warning naming its file).
    """
    from ..data import collate, read_manifest
    from .segments import FiniteSegmentDataset

    if not cfg.manifest:
        raise WavecraftError("no training manifest given (set manifest=PATH)")
    dataset = FiniteSegmentDataset(read_manifest(cfg.manifest), cfg.segment_duration, cfg.codec.sample_rate,
                             cfg.codec.channels, num_samples=cfg.total_steps * cfg.batch_size, seed=cfg.seed,
                             return_info=False)
    size = cfg.batch_size

    def batches(step: int) -> torch.Tensor:
        return collate([dataset[i] for i in range(step * size, (step + 1) * size)])[0]
    return batches


def valid_batch_from_manifest(cfg: CodecTrainConfig) -> torch.Tensor:
    """The held-out batch ``wav [valid_batch_size, C, T]``: segments of ``segment_duration`` from the start of the
    files of ``cfg.valid_manifest`` (file ``i % n`` for item ``i``), at the codec's rate and channels."""
    from ..data import collate, read_manifest
    from .segments import FiniteSegmentDataset

    dataset = FiniteSegmentDataset(read_manifest(cfg.valid_manifest), cfg.segment_duration, cfg.codec.sample_rate,
                             cfg.codec.channels, num_samples=cfg.valid_batch_size, shuffle=False, seed=cfg.seed,
                             return_info=False)
    return collate([dataset[i] for i in range(cfg.valid_batch_size)])[0]
