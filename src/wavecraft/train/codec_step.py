"""Codec loss terms: reconstruction losses of a decoded batch, and the adversarial terms given a discriminator.

:class:`.codec_solver.CodecSolver` puts them together (with the discriminator update, the optional balancer and
data parallelism); :func:`codec_train_step` is a plain reconstruction-only step for quick experiments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..codec.compression import EnCodec
from .codec_losses import (
    discriminator_hinge_loss,
    feature_matching_loss,
    generator_hinge_loss,
    multi_resolution_stft_loss,
    multiscale_mel_loss,
    si_snr,
)
from .discriminator import MultiScaleSTFTDiscriminator


@dataclass(frozen=True)
class CodecLossWeights:
    """EnCodec's recipe weights. ``adv`` and ``feat`` (the generator's hinge and feature-matching losses) only
    apply when the solver trains with a discriminator."""

    l1: float = 0.1
    msspec: float = 2.0
    commitment: float = 1.0
    # Not in EnCodec's recipe: high-resolution log-STFT loss (windows up to 4096), which resolves the harmonics
    # that 64-band mel spectra average away; without a discriminator it is what teaches a decoder pitch.
    stft: float = 0.0
    adv: float = 4.0
    feat: float = 4.0


PITCH_STFT_RESOLUTIONS = ((4096, 1024), (2048, 512), (1024, 256))


def reconstruction_losses(pred: torch.Tensor, target: torch.Tensor, sample_rate: int,
                          stft: bool = False) -> dict[str, torch.Tensor]:
    """``l1`` (waveform L1) and ``msspec`` (multi-scale mel) of ``pred`` against ``target``, both ``[B, C, T]``;
    with ``stft`` also the high-resolution multi-resolution STFT loss."""
    parts = {"l1": F.l1_loss(pred, target), "msspec": multiscale_mel_loss(pred, target, sample_rate)}
    if stft:
        parts["stft"] = multi_resolution_stft_loss(pred, target, PITCH_STFT_RESOLUTIONS)
    return parts


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Parameters of ``module`` do not require gradients inside the block (restored after)."""
    previous = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in previous:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in previous:
            p.requires_grad_(flag)


def adversarial_losses(discriminator: MultiScaleSTFTDiscriminator, fake: torch.Tensor, real: torch.Tensor,
                       reduce_scale: Callable[[torch.Tensor], torch.Tensor] | None = None
                       ) -> dict[str, torch.Tensor]:
    """The generator's ``adv`` (hinge) and ``feat`` (feature matching) losses of ``fake`` against ``real``
    (``[B, C, T]``). Gradients reach ``fake`` only, not the discriminator's parameters. ``reduce_scale``: see
    :func:`.codec_losses.feature_matching_loss`."""
    with frozen(discriminator):
        fake_logits, fake_features = discriminator(fake)
        with torch.no_grad():
            _, real_features = discriminator(real)
    return {"adv": generator_hinge_loss(fake_logits),
            "feat": feature_matching_loss(real_features, fake_features, reduce_scale)}


def discriminator_loss(discriminator: MultiScaleSTFTDiscriminator, fake: torch.Tensor,
                       real: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator on ``real`` and (detached) ``fake`` waveforms ``[B, C, T]``."""
    real_logits, _ = discriminator(real)
    fake_logits, _ = discriminator(fake.detach())
    return discriminator_hinge_loss(real_logits, fake_logits)


def codec_losses(model: EnCodec, wav: torch.Tensor, weights: CodecLossWeights) -> dict[str, torch.Tensor]:
    """``wav [B, C, T]`` through the autoencoder; returns the weighted ``loss`` and its (reconstruction) parts."""
    result = model(wav)
    parts = reconstruction_losses(result.x, wav, model.sample_rate, stft=weights.stft > 0)
    parts["commitment"] = result.penalty if result.penalty is not None else wav.new_zeros(())
    loss = sum(getattr(weights, name) * value for name, value in parts.items())
    with torch.no_grad():
        parts["si_snr"] = si_snr(result.x, wav).mean()
    return {"loss": loss, **parts}


def codec_train_step(model: EnCodec, wav: torch.Tensor, optimizer: torch.optim.Optimizer,
                     weights: CodecLossWeights = CodecLossWeights(), grad_clip: float | None = 1.0) -> dict[str, float]:
    """One reconstruction-only optimizer step on ``wav [B, C, T]``; returns the losses as floats."""
    model.train()
    losses = codec_losses(model, wav, weights)
    optimizer.zero_grad()
    losses["loss"].backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}
