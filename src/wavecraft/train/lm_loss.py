"""The language model's training objective: cross-entropy over the codebook pattern's valid steps."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..lm.generate import Conditions
from ..lm.model import LMModel
from ..lm.patterns import get_pattern_provider


@dataclass
class LMLoss:
    """``loss`` (mean over codebooks) and ``per_codebook [K]`` cross-entropies, in nats."""

    loss: torch.Tensor
    per_codebook: torch.Tensor


def lm_logits(lm: LMModel, codes: torch.Tensor, cond: Conditions) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced predictions aligned with the codes.

    ``codes [B, K, T] -> (logits [B, K, T, card], valid [B, K, T])``: the codes are laid out by the model's
    pattern (only steps whose every codebook is present, as the reference trains), run through the LM, and the
    logits are mapped back so that ``logits[:, k, t]`` predicts ``codes[:, k, t]``.
    """
    cfg = lm.cfg
    pattern = get_pattern_provider(cfg.pattern, cfg.n_q, delays=list(cfg.delays)).get_pattern(codes.shape[-1])
    sequence, _, _ = pattern.build_pattern_sequence(codes, cfg.special_token, keep_only_valid_steps=True)
    logits = lm(sequence, cross_src=cond.cross_src, cross_mask=cond.cross_mask, prefix=cond.prefix,
                summed=cond.summed)
    aligned, _, valid = pattern.revert_pattern_logits(logits.permute(0, 3, 1, 2), float("nan"),
                                                      keep_only_valid_steps=True)
    return aligned.permute(0, 2, 3, 1), valid[None].expand(codes.shape[0], -1, -1)


def lm_cross_entropy(lm: LMModel, codes: torch.Tensor, cond: Conditions,
                     padding_mask: torch.Tensor | None = None) -> LMLoss:
    """Cross-entropy of ``codes [B, K, T]`` under the LM; ``padding_mask [B, K, T]`` (True = real) excludes padding."""
    logits, valid = lm_logits(lm, codes, cond)
    if padding_mask is not None:
        valid = valid & padding_mask
    per_codebook = torch.stack([
        F.cross_entropy(logits[:, k][valid[:, k]], codes[:, k][valid[:, k]]) for k in range(codes.shape[1])])
    return LMLoss(per_codebook.mean(), per_codebook)


def cfg_dropout(cond: Conditions, null: Conditions, p: float, generator: torch.Generator | None = None
                ) -> Conditions:
    """Classifier-free-guidance dropout: each row's conditions are replaced by the null ones with probability p.

    Both must have the same shapes (null conditions built for the same batch, as in batched CFG).
    """
    if p <= 0:
        return cond
    rows = cond.batch_size or 0
    drop = torch.rand(rows, generator=generator) < p

    def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        if a is None or b is None:
            return a
        mask = drop.to(a.device).view(-1, *([1] * (a.dim() - 1)))
        return torch.where(mask, b, a)

    return Conditions(pick(cond.prefix, null.prefix), pick(cond.cross_src, null.cross_src),
                      pick(cond.cross_mask, null.cross_mask), pick(cond.summed, null.summed))
