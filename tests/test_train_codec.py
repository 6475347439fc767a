"""Codec training pieces: losses against independent references and a few steps that reduce the loss."""

from __future__ import annotations

import pytest
import torch

from wavecraft.codec import CodecConfig, EnCodec
from wavecraft.train.codec_losses import mel_filterbank, multi_resolution_stft_loss, multiscale_mel_loss, si_snr
from wavecraft.train.codec_step import codec_train_step


def test_mel_filterbank_matches_transformers():
    audio_utils = pytest.importorskip("transformers.audio_utils")
    expected = audio_utils.mel_filter_bank(num_frequency_bins=257, num_mel_filters=40, min_frequency=0.0,
                                           max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                                           mel_scale="slaney")
    ours = mel_filterbank(16000, 512, 40, 0.0, 8000.0).T
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float32), atol=1e-6, rtol=1e-4)


def test_si_snr_known_values():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 8000)
    assert (si_snr(3 * x, x) > 60).all()  # scale-invariant: a scaled copy is perfect
    noise = torch.randn(2, 1, 8000)
    noise = noise / noise.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True) / 10  # 20 dB below
    noise = noise - (noise * x).sum(-1, keepdim=True) / x.pow(2).sum(-1, keepdim=True) * x  # orthogonal to x
    torch.testing.assert_close(si_snr(x + noise, x), torch.full((2,), 20.0), atol=0.3, rtol=0)


def test_spectral_losses_zero_for_identical_and_positive_otherwise():
    x = torch.randn(1, 1, 16000)
    assert multiscale_mel_loss(x, x, 16000) == 0 and multi_resolution_stft_loss(x, x) < 1e-6
    y = torch.randn(1, 1, 16000)
    assert multiscale_mel_loss(y, x, 16000) > 0.1 and multi_resolution_stft_loss(y, x) > 0.1


def test_training_steps_reduce_loss():
    torch.manual_seed(0)
    model = EnCodec(CodecConfig(sample_rate=16000, n_filters=4, dimension=16, ratios=(4, 4), lstm_layers=1,
                                n_q=2, bins=32, kmeans_iters=5))
    t = torch.arange(8000) / 16000
    wav = torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in (220.0, 330.0, 440.0)])[:, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = [codec_train_step(model, wav, optimizer) for _ in range(40)]
    assert history[-1]["loss"] < 0.75 * history[0]["loss"]
    assert history[-1]["si_snr"] > history[0]["si_snr"]
    assert model.quantizer.layers[0]._codebook.inited.item() == 1  # k-means ran on the first batch
