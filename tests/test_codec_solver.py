"""Codec solver: learning on real files through a manifest, exact resumption, the final export and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from wavecraft.cli import main
from wavecraft.codec import CodecConfig, EnCodec
from wavecraft.data import build_manifest, write_manifest
from wavecraft.train.codec_solver import CodecSolver, CodecTrainConfig, batches_from_manifest
from wavecraft.train.config import config_to_dict

CODEC = CodecConfig(sample_rate=16000, n_filters=4, dimension=16, ratios=(4, 4), lstm_layers=1, n_q=2, bins=32,
                    kmeans_iters=5)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Four sine mixtures of 1-2 s at 16 kHz, listed in a manifest."""
    root = tmp_path_factory.mktemp("audio")
    rng = np.random.default_rng(0)
    for i in range(4):
        t = np.arange(int((1.0 + 0.3 * i) * 16000)) / 16000
        freqs = rng.uniform(100, 2000, size=3)
        wav = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in freqs)
        sf.write(root / f"tone{i}.wav", wav.astype(np.float32), 16000)
    path = root / "train.jsonl"
    write_manifest(path, build_manifest(root))
    return path


def train_cfg(manifest: Path, out: Path, **changes) -> CodecTrainConfig:
    base = CodecTrainConfig(manifest=str(manifest), codec=CODEC, segment_duration=0.5, batch_size=2, lr=3e-3,
                            total_steps=30, log_every=1, checkpoint_every=10, output_dir=str(out))
    return dataclasses.replace(base, **changes)


def make_model() -> EnCodec:
    torch.manual_seed(0)
    return EnCodec(CODEC)


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_loss_goes_down_and_final_export_loads(manifest, tmp_path):
    cfg = train_cfg(manifest, tmp_path / "run")
    model = make_model()
    CodecSolver(model, cfg).fit(batches_from_manifest(cfg))
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == list(range(1, 31))
    assert {"loss", "l1", "msspec", "commitment", "si_snr", "lr", "grad_norm"} <= set(metrics[0])
    first = np.mean([m["loss"] for m in metrics[:3]])
    last = np.mean([m["loss"] for m in metrics[-3:]])
    assert last < 0.9 * first

    loaded = EnCodec.from_pretrained(tmp_path / "run" / "final")
    assert loaded.cfg == CODEC
    expected = model.state_dict()
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, expected[k], msg=k)


def test_resume_is_exact(manifest, tmp_path):
    full_cfg = train_cfg(manifest, tmp_path / "a")
    full = CodecSolver(make_model(), full_cfg)
    full.fit(batches_from_manifest(full_cfg))

    cfg = train_cfg(manifest, tmp_path / "b")
    CodecSolver(make_model(), cfg).fit(batches_from_manifest(cfg), max_steps=15)
    assert not (tmp_path / "b" / "final").exists()  # not finished yet
    torch.manual_seed(123)  # the resumed run must not depend on the RNG state it starts with
    resumed = CodecSolver(EnCodec(CODEC), cfg)
    resumed.fit(batches_from_manifest(cfg))

    assert resumed.step == full.step == 30
    expected = full.model.state_dict()
    for k, v in resumed.model.state_dict().items():  # parameters and the RVQ's EMA buffers alike
        torch.testing.assert_close(v, expected[k], atol=1e-6, rtol=0, msg=k)
    for a, b in zip(resumed.optimizer.state.values(), full.optimizer.state.values(), strict=True):
        torch.testing.assert_close(a["exp_avg_sq"], b["exp_avg_sq"], atol=1e-6, rtol=0)
    assert resumed.scheduler.state_dict() == full.scheduler.state_dict()
    losses_a = [m["loss"] for m in read_metrics(tmp_path / "a")]
    losses_b = [m["loss"] for m in read_metrics(tmp_path / "b")]
    np.testing.assert_allclose(losses_b, losses_a, atol=1e-6, rtol=0)


def test_cli_trains_and_reports_bad_config(manifest, tmp_path, capsys):
    cfg_path = tmp_path / "codec.yaml"
    cfg = train_cfg(manifest, tmp_path / "cli", total_steps=100)
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert main(["train", "codec", str(cfg_path), "--set", "total_steps=4", "--set", "checkpoint_every=2"]) == 0
    assert EnCodec.from_pretrained(tmp_path / "cli" / "final").cfg == CODEC
    assert read_metrics(tmp_path / "cli")[-1]["step"] == 4

    assert main(["train", "codec", str(cfg_path), "--set", "codec.n_filtres=8"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'codec.n_filtres'" in err

    assert main(["train", "codec", "--set", f"manifest={tmp_path / 'missing.jsonl'}"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.jsonl" in err


def test_decoder_only_fine_tune_keeps_the_codes(manifest, tmp_path):
    """train_part=decoder from init_from (through the CLI): encoder and codebooks are bit-identical afterwards, so
    an LM trained on the codes stays valid, while the decoder learns, here with the high-resolution STFT loss."""
    first = train_cfg(manifest, tmp_path / "base", total_steps=10)
    CodecSolver(make_model(), first).fit(batches_from_manifest(first))
    base = EnCodec.from_pretrained(tmp_path / "base" / "final")
    cfg_path = tmp_path / "decoder.yaml"
    cfg = train_cfg(manifest, tmp_path / "decoder", total_steps=6, init_from=str(tmp_path / "base" / "final"),
                    train_part="decoder", losses=dataclasses.replace(first.losses, stft=1.0))
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert main(["train", "codec", str(cfg_path)]) == 0
    tuned = EnCodec.from_pretrained(tmp_path / "decoder" / "final")
    before, after = base.state_dict(), tuned.state_dict()
    for name, value in after.items():
        if name.startswith(("encoder.", "quantizer.")):
            assert torch.equal(value, before[name]), name
    assert any(not torch.equal(v, before[k]) for k, v in after.items() if k.startswith("decoder."))
    assert "stft" in read_metrics(tmp_path / "decoder")[0]
    wav = torch.randn(1, 1, 8000)
    assert torch.equal(tuned.encode(wav)[0], base.encode(wav)[0])
    assert main(["train", "codec", str(cfg_path), "--set", "train_part=encoder"]) == 1
