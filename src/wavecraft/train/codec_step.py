"""One optimisation step of the codec on reconstruction losses (the adversarial part comes with the solver)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..codec.compression import EnCodec
from .codec_losses import multiscale_mel_loss, si_snr


@dataclass(frozen=True)
class CodecLossWeights:
    """EnCodec's recipe weights (the adversarial/feature terms are 4/4 there and need the discriminator)."""

    l1: float = 0.1
    msspec: float = 2.0
    commitment: float = 1.0


def codec_losses(model: EnCodec, wav: torch.Tensor, weights: CodecLossWeights) -> dict[str, torch.Tensor]:
    """``wav [B, C, T]`` through the autoencoder; returns the weighted ``loss`` and its parts."""
    result = model(wav)
    parts = {
        "l1": F.l1_loss(result.x, wav),
        "msspec": multiscale_mel_loss(result.x, wav, model.sample_rate),
        "commitment": result.penalty if result.penalty is not None else wav.new_zeros(()),
    }
    loss = weights.l1 * parts["l1"] + weights.msspec * parts["msspec"] + weights.commitment * parts["commitment"]
    with torch.no_grad():
        parts["si_snr"] = si_snr(result.x, wav).mean()
    return {"loss": loss, **parts}


def codec_train_step(model: EnCodec, wav: torch.Tensor, optimizer: torch.optim.Optimizer,
                     weights: CodecLossWeights = CodecLossWeights(), grad_clip: float | None = 1.0) -> dict[str, float]:
    model.train()
    losses = codec_losses(model, wav, weights)
    optimizer.zero_grad()
    losses["loss"].backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}
