"""Losses and metrics for training the codec: reconstruction (on ``[B, C, T]`` waveforms) and adversarial.

The adversarial losses take what :class:`.discriminator.MultiScaleSTFTDiscriminator` returns: per sub-discriminator
``k`` the logits ``[B, 1, frames_k, F_k]`` and a list of feature maps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F


@lru_cache(maxsize=32)
def _mel_filterbank_np(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """Slaney-style mel filters ``[n_mels, n_fft // 2 + 1]`` (area-normalised triangles on the Slaney mel scale)."""
    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        linear = f / (200.0 / 3)
        log_start = 1000.0 / (200.0 / 3)
        return np.where(f >= 1000.0, log_start + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), linear)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        log_start = 1000.0 / (200.0 / 3)
        return np.where(m >= log_start, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - log_start)), m * (200.0 / 3))

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_points = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths = np.diff(mel_points)
    ramps = mel_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_points[2:] - mel_points[:-2]))[:, None]


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None,
                   device: torch.device | None = None) -> torch.Tensor:
    weights = _mel_filterbank_np(sample_rate, n_fft, n_mels, float(f_min), float(f_max or sample_rate / 2))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _magnitude(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``[B, C, T] -> [B * C, n_fft // 2 + 1, frames]`` STFT magnitudes (Hann window, centred)."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, n_fft, window, center=True, return_complex=True)
    return spec.abs()


def multiscale_mel_loss(pred: torch.Tensor, target: torch.Tensor, sample_rate: int, scales: range = range(6, 12),
                        n_mels: int = 64, f_min: float = 64.0, floor: float = 1e-5) -> torch.Tensor:
    """Sum over window sizes ``2**i`` of L1 on mel magnitudes plus L1 on their logs (EnCodec's ``msspec``)."""
    total = pred.new_zeros(())
    for exponent in scales:
        n_fft = 2 ** exponent
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, device=pred.device)
        mel_p = fb @ _magnitude(pred, n_fft, n_fft // 4)
        mel_t = fb @ _magnitude(target, n_fft, n_fft // 4)
        total = total + F.l1_loss(mel_p, mel_t) + F.l1_loss(torch.log(mel_p + floor), torch.log(mel_t + floor))
    return total / len(scales)


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor,
                               resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512))
                               ) -> torch.Tensor:
    """Spectral convergence + log-magnitude L1, averaged over STFT resolutions ``(n_fft, hop)``."""
    total = pred.new_zeros(())
    for n_fft, hop in resolutions:
        mag_p, mag_t = _magnitude(pred, n_fft, hop), _magnitude(target, n_fft, hop)
        convergence = torch.linalg.norm(mag_t - mag_p) / torch.linalg.norm(mag_t).clamp_min(1e-8)
        log_l1 = F.l1_loss(torch.log(mag_p.clamp_min(1e-7)), torch.log(mag_t.clamp_min(1e-7)))
        total = total + convergence + log_l1
    return total / len(resolutions)


def si_snr(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB per item, ``[B, C, T] -> [B]`` (higher is better)."""
    pred = pred.reshape(pred.shape[0], -1)
    target = target.reshape(target.shape[0], -1)
    pred = pred - pred.mean(dim=-1, keepdim=True)
    target = target - target.mean(dim=-1, keepdim=True)
    projection = (pred * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps) * target
    noise = pred - projection
    return 10 * torch.log10(projection.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps) + eps)


def mel_distance(pred: torch.Tensor, target: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """A validation metric: the multi-scale mel loss without gradients."""
    with torch.no_grad():
        return multiscale_mel_loss(pred, target, sample_rate)


def discriminator_hinge_loss(real_logits: Sequence[torch.Tensor], fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """EnCodec's discriminator loss: ``1/K sum_k [mean(relu(1 - D_k(x))) + mean(relu(1 + D_k(x_hat)))]``.

    Zero once every real logit is ``>= 1`` and every fake one ``<= -1``.
    """
    total = real_logits[0].new_zeros(())
    for real, fake in zip(real_logits, fake_logits, strict=True):
        total = total + F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return total / len(real_logits)


def generator_hinge_loss(fake_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """EnCodec's adversarial loss for the generator: ``1/K sum_k mean(relu(1 - D_k(x_hat)))``."""
    total = fake_logits[0].new_zeros(())
    for fake in fake_logits:
        total = total + F.relu(1 - fake).mean()
    return total / len(fake_logits)


def feature_matching_loss(real_features: Sequence[Sequence[torch.Tensor]],
                          fake_features: Sequence[Sequence[torch.Tensor]],
                          reduce_scale: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Mean over all sub-discriminators and layers of ``mean|real - fake| / mean|real|`` (EnCodec's ``l_feat``).

    The real maps are treated as constants (no gradient). ``reduce_scale`` maps the stacked per-layer
    ``mean|real|`` values ``[L]`` to the ones to divide by: under data parallelism, the mean over ranks (equal
    shards), so that each rank uses the normalisers of the global batch.
    """
    scales = torch.stack([real.detach().abs().mean() for layers in real_features for real in layers])
    if reduce_scale is not None:
        scales = reduce_scale(scales)
    terms = [F.l1_loss(fake, real.detach())
             for real_layers, fake_layers in zip(real_features, fake_features, strict=True)
             for real, fake in zip(real_layers, fake_layers, strict=True)]
    return (torch.stack(terms) / scales.clamp_min(1e-8)).mean()
