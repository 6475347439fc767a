"""The language-model training loop: AdamW + warm-up/cosine, clipping, CFG dropout, EMA, logs and resumption.

Resumption is exact: the checkpoint restores weights, optimizer, scheduler and RNG states, CFG dropout draws
from a generator seeded by ``(seed, step)`` (not from the global RNG), and the data comes from a callable
``batches(step)`` giving the batch of a global step, so a resumed run sees what the uninterrupted one would.
A step whose loss or gradient norm is NaN or infinite stops the run before the optimizer applies it, so the
weights and the last checkpoint stay good (non-finite weights are never saved).

Data parallel: under ``torchrun`` (a process group initialised, e.g. by :func:`.distributed.init_from_env`), the
LM is wrapped in ``DistributedDataParallel``. Every rank calls the same ``batches(step)`` for the *global* batch
and trains on its own contiguous shard; with gradients averaged by DDP this matches one process on the global
batch (exactly so when every row has the same number of valid positions, as without padding).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..lm.generate import Conditions
from ..lm.model import LMModel
from .checkpoint import load_checkpoint, save_checkpoint
from .config import LMTrainConfig
from .distributed import all_reduce_mean, barrier, rank_and_world_size, shard
from .lm_conditions import ConditionProjector, RawConditions
from .lm_loss import cfg_dropout, lm_cross_entropy
from .loop import prepare_run_dir, resume_on_all_ranks, run_steps, save_on_main, stop_if_not_finite
from .schedule import warmup_cosine

#: ``(codes [B, K, T], conditions)``: conditions already projected, or the frozen encoders' :class:`RawConditions`
#: when the solver trains the conditioners' projections too (given a :class:`ConditionProjector`).
Batch = tuple[torch.Tensor, Conditions | RawConditions]
#: Preferred: ``batches(step) -> (codes [B, K, T], cond)``. A plain iterable also works; on resume its first
#: ``step`` items are skipped, which is only exact if it replays the same sequence on every iteration.
BatchSource = Callable[[int], Batch] | Iterable[Batch]



class EMA:
    """Exponential moving average of a model's floating-point state: ``ema = decay * ema + (1 - decay) * w``."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v, 1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` in; all-or-nothing: names and shapes are checked before anything is copied."""
        if state.keys() != self.shadow.keys():
            raise ValueError(f"EMA state has {len(state)} tensors, the model {len(self.shadow)}")
        for k, v in state.items():
            if not isinstance(v, torch.Tensor) or v.shape != self.shadow[k].shape:
                raise ValueError(f"EMA tensor {k} does not match the model")
        for k, v in state.items():
            self.shadow[k].copy_(v)


class _DistributedLM(DistributedDataParallel):
    """DDP wrapper that still exposes the LM's ``cfg``: the loss reads it to lay out the codebook pattern."""

    @property
    def cfg(self) -> Any:
        return self.module.cfg


class LMSolver:
    """Trains ``lm`` with ``cfg``. ``null_condition(cond)`` builds the null (unconditional) conditions used by
    CFG dropout; without it, no dropout is applied. Batches are moved to the model's device (a no-op when
    they are there already), so under DDP ``batches(step)`` may build the global batch on the CPU.

    With ``conditions`` (the model's conditioners and fuser), batches carry :class:`RawConditions` and the
    conditioners' projections are trained and checkpointed with the LM (keys ``lm.*`` and ``conditions.*``);
    CFG and attribute dropout then act on the raw conditions."""

    def __init__(self, lm: LMModel, cfg: LMTrainConfig,
                 null_condition: Callable[[Conditions], Conditions] | None = None,
                 conditions: ConditionProjector | None = None) -> None:
        self.lm = lm
        self.cfg = cfg
        self.null_condition = null_condition
        self.conditions = conditions
        # What is optimised, averaged and checkpointed: the LM, plus the trained projections when given.
        self.trainable: nn.Module = lm if conditions is None else nn.ModuleDict({"lm": lm, "conditions": conditions})
        self.rank, self.world_size = rank_and_world_size()
        self.device = next(lm.parameters()).device
        # The module run forward/backward: the DDP wrapper averages gradients across ranks during backward.
        # ``self.lm`` stays the bare model (same parameters) for checkpoints, EMA and clipping.
        self.model: torch.nn.Module = lm
        if self.world_size > 1:
            device_ids = [self.device] if self.device.type == "cuda" else None
            self.model = _DistributedLM(lm, device_ids=device_ids)
        # No weight decay on gains and biases (1-D): decaying them towards 0 only fights the normalisation.
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)
        self.scheduler = warmup_cosine(self.optimizer, cfg.warmup_steps, cfg.total_steps, cfg.min_lr_ratio)
        self.ema = EMA(self.trainable, cfg.ema_decay) if cfg.ema_decay is not None else None
        self.step = 0  # optimizer steps done so far (global, survives resumption)

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def train_step(self, codes: torch.Tensor, cond: Conditions | RawConditions) -> dict[str, float]:
        """One optimizer step on the global batch ``codes [B, K, T]`` (each rank trains on its shard of it);
        returns ``loss``, ``ce_q{k}``, ``lr`` and ``grad_norm``, the losses averaged over ranks."""
        self.model.train()
        # Seeded by (seed, step) so the drop pattern of a step is the same after resuming; drawn for the
        # global batch before sharding so that every row gets the same decision as in a single process.
        generator = torch.Generator().manual_seed((self.cfg.seed << 32) + self.step)
        if isinstance(cond, RawConditions):
            if self.conditions is None:
                raise TypeError("raw conditions need a solver built with conditions=ConditionProjector(...)")
            cond = self.conditions.dropout(cond, self.cfg.cfg_dropout, self.cfg.attribute_dropout, generator)
            codes, cond = shard((codes, cond), self.rank, self.world_size)
            codes, cond = codes.to(self.device), self.conditions.project(cond.to(self.device))
        else:
            if self.null_condition is not None and self.cfg.cfg_dropout > 0:
                cond = cfg_dropout(cond, self.null_condition(cond), self.cfg.cfg_dropout, generator)
            codes, cond = shard((codes, cond), self.rank, self.world_size)
            codes, cond = codes.to(self.device), _conditions_to(cond, self.device)
        out = lm_cross_entropy(cast(LMModel, self.model), codes, cond)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if self.conditions is not None and self.world_size > 1:
            # The projections run outside the DDP-wrapped LM: average their gradients here.
            for p in self.conditions.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= self.world_size
        # The gradients are the DDP average over ranks here, identical everywhere, so clipping (and the reported
        # norm) matches the single-process run on the global batch without any extra communication.
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable.parameters(), max_norm)
        # Applying a NaN step would poison every weight (and the EMA) for good: stop with the weights unchanged.
        stop_if_not_finite(self.output_dir, self.step + 1, {"loss": out.loss, "grad_norm": grad_norm})
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.trainable)
        self.step += 1
        # One collective for all the losses: shards of equal size make the mean of the shard means the global one.
        losses = all_reduce_mean(torch.cat([out.loss.detach()[None], out.per_codebook.detach()])).tolist()
        metrics = {"loss": losses[0], "lr": lr, "grad_norm": grad_norm.item()}
        metrics.update({f"ce_q{k}": v for k, v in enumerate(losses[1:])})
        return metrics

    def fit(self, batches: BatchSource, resume: bool = True, max_steps: int | None = None) -> None:
        """Train until ``cfg.total_steps`` (or for at most ``max_steps`` more steps in this call).

        Resumes from the checkpoint in ``cfg.output_dir`` when there is one (and ``resume``). Appends a line to
        ``metrics.jsonl`` every ``log_every`` steps and checkpoints every ``checkpoint_every`` steps and on return.
        """
        if resume:
            self.resume()
            # Nobody may start training (and rank 0 overwrite the checkpoint) before every rank has read it.
            barrier()
        if self.is_main:
            prepare_run_dir(self.output_dir, self.cfg, self.step)
        end = self.cfg.total_steps if max_steps is None else min(self.cfg.total_steps, self.step + max_steps)
        source = self._batches_from(batches, self.step)

        def train_one() -> dict[str, float] | None:
            batch = next(source, None)  # None: a finite iterable ran out before total_steps
            return None if batch is None else self.train_step(*batch)

        run_steps(self, train_one, end, is_main=self.is_main)

    def save(self) -> None:
        """Checkpoint the current state into ``cfg.output_dir`` (written by rank 0; every rank must call it)."""
        def write() -> None:
            extra: dict[str, Any] = {"ema": self.ema.state_dict()} if self.ema is not None else {}
            save_checkpoint(self.output_dir, self.step, self.trainable, self.optimizer, self.scheduler, extra)

        # The checkpoint is complete on disk once any rank returns, e.g. before a job scheduler stops the others.
        save_on_main(self.is_main, self.device, write)

    def resume(self) -> bool:
        """Restore the checkpoint in ``cfg.output_dir`` if there is one; return whether one was found.

        Every rank loads the same files (the directory must be shared between nodes), which keeps the replicas,
        optimizer states and RNGs identical as DDP requires."""
        def restore(extra: dict[str, Any]) -> None:
            # Inside load_checkpoint: a failure here makes it fall back to the previous checkpoint too.
            if self.ema is not None and "ema" in extra:
                self.ema.load_state_dict(extra["ema"])

        def load(chosen: int | None) -> int:
            return load_checkpoint(self.output_dir, self.trainable, self.optimizer, self.scheduler, restore,
                                   step=chosen)[0]

        step = resume_on_all_ranks(self.is_main, self.device, load)
        if step == 0:
            return False
        self.step = step
        return True

    @staticmethod
    def _batches_from(batches: BatchSource, start: int) -> Iterator[Batch]:
        if callable(batches):
            return (batches(step) for step in itertools.count(start))
        return itertools.islice(iter(batches), start, None)


def _conditions_to(cond: Conditions, device: torch.device) -> Conditions:
    def move(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(device)
    return Conditions(move(cond.prefix), move(cond.cross_src), move(cond.cross_mask))
