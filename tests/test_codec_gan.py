"""The codec's GAN half: MS-STFT discriminator, hinge / feature-matching losses, the balancer, adversarial training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.testing import assert_close

from wavecraft.codec import CodecConfig, EnCodec
from wavecraft.data import build_manifest, write_manifest
from wavecraft.train.balancer import Balancer
from wavecraft.train.codec_losses import discriminator_hinge_loss, feature_matching_loss, generator_hinge_loss
from wavecraft.train.codec_solver import AdversarialConfig, BalancerConfig, CodecSolver, CodecTrainConfig
from wavecraft.train.config import load_config
from wavecraft.train.discriminator import MultiScaleSTFTDiscriminator

CODEC = CodecConfig(sample_rate=16000, n_filters=4, dimension=16, ratios=(4, 4), lstm_layers=1, n_q=2, bins=32,
                    kmeans_iters=5)
LENGTH = 4000  # 0.25 s


def test_discriminator_shapes_and_features():
    disc = MultiScaleSTFTDiscriminator(in_channels=2, filters=4, n_ffts=(256, 128))
    x = torch.randn(3, 2, LENGTH, requires_grad=True)
    logits, features = disc(x)
    assert len(logits) == len(features) == 2
    for n_fft, out, feats in zip((256, 128), logits, features, strict=True):
        frames, bins = LENGTH // (n_fft // 4) + 1, n_fft // 2 + 1
        assert len(feats) == 5  # input conv, three dilated convs (stride 2 along frequency), last conv
        assert [f.shape[-1] for f in feats] == [bins, (bins + 1) // 2, (bins + 3) // 4, (bins + 7) // 8,
                                               (bins + 7) // 8]
        assert all(f.shape[:3] == (3, 4, frames) for f in feats)
        assert out.shape == (3, 1, frames, (bins + 7) // 8)
    assert disc.discriminators[0].spectrogram(x).shape == (3, 4, LENGTH // 64 + 1, 129)  # re/im of 2 channels
    sum(out.sum() for out in logits).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert any("parametrizations.weight.original0" in k for k in disc.state_dict())  # weight norm


def test_hinge_losses_and_feature_matching_signs():
    high, low = [torch.full((2, 1, 4, 3), 2.0)], [torch.full((2, 1, 4, 3), -2.0)]
    assert discriminator_hinge_loss(high, low) == 0  # real above 1, fake below -1: nothing to learn
    assert discriminator_hinge_loss(low, high) == pytest.approx(6.0)  # relu(1 + 2) + relu(1 + 2)
    assert generator_hinge_loss(high) == 0
    fake = torch.zeros(2, 1, 4, 3, requires_grad=True)
    loss = generator_hinge_loss([fake])
    loss.backward()
    assert loss.item() == pytest.approx(1.0) and (fake.grad < 0).all()  # raising the fake logits lowers the loss

    torch.manual_seed(0)
    real = [[torch.randn(2, 3, 5, 4), torch.randn(2, 6, 5, 2)]]
    assert feature_matching_loss(real, real) == 0
    fake_maps = [[(r + 0.5 * torch.randn_like(r)).requires_grad_() for r in real[0]]]
    value = feature_matching_loss(real, fake_maps)
    assert value > 0
    # Normalised by mean |real| per layer: scaling both sides leaves it unchanged.
    scaled = feature_matching_loss([[10 * r for r in real[0]]], [[10 * f for f in fake_maps[0]]])
    assert_close(scaled, value)
    value.backward()
    assert all(f.grad is not None for f in fake_maps[0])


@pytest.mark.parametrize("per_batch_item", [True, False])
def test_balancer_gradient_shares_follow_weights(per_batch_item):
    torch.manual_seed(0)
    out = torch.randn(3, 2, 50, requires_grad=True)
    param = torch.ones(4, requires_grad=True)
    balancer = Balancer({"big": 3.0, "tiny": 1.0}, total_norm=2.0, ema_decay=0.9, per_batch_item=per_batch_item)

    def norm(g: torch.Tensor) -> float:
        return float(g.flatten(1).norm(dim=1).mean()) if per_batch_item else float(g.norm())

    for scale in (1.0, 7.0):  # a second step, with the big loss even bigger: same shares once averaged
        out.grad, param.grad = None, None
        losses = {"big": scale * 1e4 * out[:, 0].pow(2).mean(),  # reads channel 0 only
                  "tiny": 1e-4 * (out[:, 1] - 1).abs().mean()}  # reads channel 1 only
        stats = balancer.backward(losses, out, other=5 * param.sum())
        # The output gradient splits 3 : 1 of total_norm whatever the scales of the losses (1e4 vs 1e-4) ...
        expected_big = 2.0 * 0.75 * (1.0 if scale == 1.0 else 7.0 / (0.9 + 7.0) * 1.9)  # EMA lags behind
        assert norm(out.grad[:, 0]) == pytest.approx(expected_big, rel=1e-4)
        assert norm(out.grad[:, 1]) == pytest.approx(2.0 * 0.25, rel=1e-4)
        # ... while a loss not going through the output is backpropagated as it is.
        assert_close(param.grad, torch.full((4,), 5.0))
    assert set(stats) == {"gnorm_big", "gnorm_tiny"}

    fresh = Balancer({"big": 3.0, "tiny": 1.0}, total_norm=2.0, ema_decay=0.9, per_batch_item=per_batch_item)
    fresh.load_state_dict(balancer.state_dict())
    assert_close(fresh.state_dict()["sum"], balancer.state_dict()["sum"])
    with pytest.raises(ValueError, match="expects losses"):
        balancer.backward({"big": out.sum()}, out)


FREQS = (220.0, 330.0, 440.0, 550.0)


def batch_at(step: int) -> torch.Tensor:
    """Global batch of a step: two of four fixed sines (0.5 amplitude), in turn."""
    t = torch.arange(LENGTH) / 16000
    return torch.stack([0.5 * torch.sin(2 * torch.pi * FREQS[(2 * step + i) % 4] * t) for i in range(2)])[:, None]


@pytest.fixture(scope="module")
def valid_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("valid")
    t = np.arange(LENGTH) / 16000
    for i, f in enumerate((330.0, 550.0)):
        sf.write(root / f"v{i}.wav", (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32), 16000)
    path = root / "valid.jsonl"
    write_manifest(path, build_manifest(root))
    return path


def gan_cfg(out: Path, valid: Path, **changes) -> CodecTrainConfig:
    base = CodecTrainConfig(codec=CODEC, segment_duration=LENGTH / 16000, batch_size=2, lr=3e-3, total_steps=20,
                            log_every=1, checkpoint_every=10, output_dir=str(out),
                            adversarial=AdversarialConfig(enabled=True, n_ffts=(256, 128), filters=4, lr=1e-3,
                                                          update_prob=0.5),
                            balancer=BalancerConfig(enabled=True, ema_decay=0.9),
                            valid_manifest=str(valid), valid_every=5, valid_batch_size=2)
    return dataclasses.replace(base, **changes)


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_adversarial_training_learns_and_resumes_exactly(tmp_path, valid_manifest):
    cfg = gan_cfg(tmp_path / "a", valid_manifest)
    torch.manual_seed(0)
    full = CodecSolver(EnCodec(CODEC), cfg)
    full.fit(batch_at)
    metrics = read_metrics(tmp_path / "a")
    assert [m["step"] for m in metrics] == list(range(1, 21))
    assert {"loss", "l1", "msspec", "commitment", "adv", "feat", "gnorm_adv", "gnorm_msspec"} <= set(metrics[0])
    updates = [m["step"] for m in metrics if "d_loss" in m]
    assert 0 < len(updates) < 20  # update_prob 0.5
    valid = [m for m in metrics if "valid_mel" in m]
    assert [m["step"] for m in valid] == [5, 10, 15, 20] and all("valid_si_snr" in m for m in valid)
    assert all(np.isfinite([m["valid_mel"], m["valid_si_snr"]]).all() for m in valid)
    assert np.mean([m["msspec"] for m in metrics[-4:]]) < 0.9 * np.mean([m["msspec"] for m in metrics[:4]])

    resumed_cfg = gan_cfg(tmp_path / "b", valid_manifest)
    torch.manual_seed(0)
    CodecSolver(EnCodec(CODEC), resumed_cfg).fit(batch_at, max_steps=10)
    torch.manual_seed(123)  # different initial weights, discriminator included: the checkpoint must replace them
    resumed = CodecSolver(EnCodec(CODEC), resumed_cfg)
    resumed.fit(batch_at)

    assert resumed.step == full.step == 20
    assert full.discriminator is not None and resumed.discriminator is not None
    for got, want in ((resumed.model, full.model), (resumed.discriminator, full.discriminator)):
        expected = want.state_dict()
        for k, v in got.state_dict().items():
            assert_close(v, expected[k], atol=1e-6, rtol=0, msg=k)
    assert resumed.disc_optimizer is not None and full.disc_optimizer is not None
    for a, b in zip(resumed.disc_optimizer.state.values(), full.disc_optimizer.state.values(), strict=True):
        assert_close(a["exp_avg_sq"], b["exp_avg_sq"], atol=1e-7, rtol=0)
    assert resumed.balancer is not None and full.balancer is not None
    assert_close(resumed.balancer.state_dict()["sum"], full.balancer.state_dict()["sum"], atol=1e-6, rtol=1e-5)
    logs_b = read_metrics(tmp_path / "b")
    assert [m.keys() for m in logs_b] == [m.keys() for m in metrics]
    for got_line, want_line in zip(logs_b, metrics, strict=True):
        assert got_line == pytest.approx(want_line, abs=1e-5)


def test_adversarial_config_from_overrides():
    cfg = load_config(CodecTrainConfig, None, ["adversarial.enabled=true", "adversarial.n_ffts=[512,256]",
                                               "balancer.enabled=true", "losses.adv=3", "valid_every=50"])
    assert cfg.adversarial.enabled and cfg.adversarial.n_ffts == (512, 256) and cfg.balancer.enabled
    assert cfg.losses.adv == 3.0 and cfg.valid_every == 50
    solver = CodecSolver(EnCodec(CODEC), dataclasses.replace(cfg, batch_size=2))
    assert solver.balancer is not None and list(solver.balancer.weights) == ["l1", "msspec", "adv", "feat"]
    assert solver.discriminator is not None and len(solver.discriminator.discriminators) == 2
