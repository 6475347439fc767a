"""Melody adherence: cosine similarity between the chroma of a reference melody and of generated audio."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..audio import convert_audio
from ..conditioning.chroma import ChromaExtractor


@torch.no_grad()
def chroma_cosine_similarity(preds: torch.Tensor, targets: torch.Tensor, sample_rate: int,
                             sizes: torch.Tensor | None = None, radix2_exp: int = 14, argmax: bool = True) -> float:
    """Mean per-frame cosine similarity of one-hot chroma, over the valid frames of every item.

    ``preds``/``targets``: ``[B, C, T]`` at ``sample_rate`` (mixed to mono; resampled to 32 kHz as the reference
    metric runs there). ``sizes [B]``: valid samples per item (default: all). AudioCraft's definition: frames
    ``ceil(size / hop)`` of each item count; the result is their average (musicgen-melody reports 0.44).
    """
    if preds.shape != targets.shape or preds.dim() != 3:
        raise ValueError(f"preds and targets must be [B, C, T] of one shape, got {tuple(preds.shape)} and "
                         f"{tuple(targets.shape)}")
    rate = 32000
    preds = convert_audio(preds, sample_rate, rate, 1)
    targets = convert_audio(targets, sample_rate, rate, 1)
    if sizes is None:
        sizes = torch.full((preds.shape[0],), preds.shape[-1])
    else:
        sizes = (sizes.float() * rate / sample_rate).round()
    extractor = ChromaExtractor(rate, radix2_exp=radix2_exp, argmax=argmax).to(preds.device)
    gen, ref = extractor(preds), extractor(targets)
    lengths = (sizes / extractor.hop).ceil().int()
    total, count = 0.0, 0
    for i in range(gen.shape[0]):
        frames = int(lengths[i])
        total += float(F.cosine_similarity(ref[i, :frames], gen[i, :frames], dim=1).sum())
        count += frames
    return total / max(count, 1)
