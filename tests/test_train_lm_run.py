"""`wavecraft train lm`: manifest + frozen codec -> trained, resumable, exported MusicGen (text and melody)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavecraft.cli import main
from wavecraft.codec.compression import EnCodec
from wavecraft.codec.config import CodecConfig
from wavecraft.errors import WavecraftError
from wavecraft.models.musicgen import MusicGen
from wavecraft.train.config import load_config
from wavecraft.train.lm_run import LMRunConfig, train_lm

RATE = 8000
TINY_LM = ["lm.dim=32", "lm.num_heads=2", "lm.num_layers=2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random codec (saved) and a manifest of 4 tone clips with captions."""
    root = tmp_path_factory.mktemp("lmrun")
    torch.manual_seed(0)
    codec = EnCodec(CodecConfig(sample_rate=RATE, n_filters=4, dimension=16, ratios=(8, 5, 4), lstm_layers=1,
                                n_q=2, bins=32))
    codec.save_pretrained(root / "codec")
    lines = []
    for i, (freq, caption) in enumerate([(220, "a low hum"), (1760, "a high whistle"), (330, "a low drone"),
                                         (1320, "a bright beep")]):
        t = np.arange(int(2.0 * RATE)) / RATE
        sf.write(root / f"clip{i}.wav", 0.5 * np.sin(2 * math.pi * freq * t), RATE)
        lines.append(json.dumps({"path": f"clip{i}.wav", "duration": 2.0, "sample_rate": RATE,
                                 "description": caption}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root / "train.jsonl", root / "codec"


def _cfg(manifest: Path, codec: Path, out: Path, *extra: str) -> LMRunConfig:
    overrides = [f"manifest={manifest}", f"codec={codec}", f"train.output_dir={out}", "segment_duration=1.0",
                 "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=5", "train.log_every=5",
                 "train.checkpoint_every=1000", *TINY_LM, *extra]
    return load_config(LMRunConfig, None, overrides)


def _losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_text_run_learns_exports_and_generates(corpus, tmp_path) -> None:
    manifest, codec = corpus
    out = tmp_path / "run"
    final = train_lm(_cfg(manifest, codec, out, "train.total_steps=60", "train.ema_decay=0.9"))
    losses = _losses(out)
    assert final == out / "final" and losses[-1] < 0.6 * losses[0]
    model = MusicGen.get_pretrained(final, device="cpu")
    assert type(model.bundle.conditioners["description"]).__name__ == "SentenceConditioner"
    assert model.max_duration == 1.0 and model.sample_rate == RATE
    model.set_generation_params(duration=0.5, seed=0)
    wav = model.generate(["a low hum", "a high whistle"])
    assert wav.shape == (2, 1, RATE // 2) and torch.isfinite(wav).all()


def test_split_run_resumes_to_the_same_weights(corpus, tmp_path) -> None:
    manifest, codec = corpus
    whole = train_lm(_cfg(manifest, codec, tmp_path / "a", "train.total_steps=12", "train.checkpoint_every=4"))
    split = _cfg(manifest, codec, tmp_path / "b", "train.total_steps=12", "train.checkpoint_every=4")
    assert train_lm(split, max_steps=7) is None
    resumed = train_lm(split)
    from safetensors.torch import load_file
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys() and any(k.startswith("conditioners.description.output_proj") for k in a)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_melody_run_exports_a_chroma_model(corpus, tmp_path) -> None:
    manifest, codec = corpus
    out = tmp_path / "melody"
    cfg = _cfg(manifest, codec, out, "train.total_steps=6", "melody=true", "fuse=prepend", "codes=disk",
               "train.attribute_dropout={self_wav: 0.5}")
    final = train_lm(cfg)
    assert list((out / "codes").glob("*.safetensors"))  # codes cached on disk
    model = MusicGen.get_pretrained(final, device="cpu")
    assert model.has_melody and not model.lm.cfg.cross_attention
    model.set_generation_params(duration=0.5, seed=0)
    tune = torch.sin(torch.arange(RATE) / RATE * 2 * math.pi * 440)[None]
    wav = model.generate_with_chroma(["a low hum"], tune[None], RATE)
    assert wav.shape == (1, 1, RATE // 2)
    # init_from + melody_fuse=sum turns the prepended melody into a per-frame one (the shipped model's stage 4).
    summed = train_lm(load_config(LMRunConfig, None, [
        f"manifest={manifest}", f"init_from={final}", "melody_fuse=sum", f"train.output_dir={tmp_path / 'sum'}",
        "segment_duration=1.0", "train.batch_size=2", "train.total_steps=2"]))
    config = json.loads((summed / "config.json").read_text())
    assert config["fuser"] == {"prepend": ["description"], "sum": ["self_wav"]}
    assert config["conditioners"]["self_wav"]["frames"] == 50


def _clip(manifest: Path, index: int) -> torch.Tensor:
    """The first second of clip ``index`` as ``[1, 1, RATE]``."""
    wav, _ = sf.read(manifest.parent / f"clip{index}.wav", dtype="float32")
    return torch.from_numpy(wav[:RATE])[None, None]


def test_summed_melody_is_frame_aligned(corpus, tmp_path) -> None:
    """melody_fuse=sum: one projected chroma vector per codec frame; frame f enters the input step that predicts
    frame f, so incremental decoding agrees with the teacher-forced pass and earlier steps do not see it."""
    from wavecraft.lm.patterns import get_pattern_provider
    from wavecraft.train.lm_conditions import ConditionProjector

    manifest, codec = corpus
    final = train_lm(_cfg(manifest, codec, tmp_path / "sum", "train.total_steps=4", "text_encoder=none",
                          "melody=true", "melody_fuse=sum"))
    model = MusicGen.get_pretrained(final, device="cpu")
    lm, projector = model.lm, ConditionProjector(model.bundle.conditioners, model.bundle.fuser)
    tone = _clip(manifest, 0)
    codes = model.compression_model.encode(tone)[0]
    cond = projector.project(projector.encode([None], wav=tone))
    assert cond.prefix is None and cond.cross_src is None and cond.summed.shape == (1, 50, lm.cfg.dim)
    with torch.no_grad():
        pattern = get_pattern_provider(lm.cfg.pattern, lm.cfg.n_q, delays=list(lm.cfg.delays)).get_pattern(50)
        sequence, _, _ = pattern.build_pattern_sequence(codes, lm.cfg.special_token)
        full = lm(sequence, summed=cond.summed)
        state = lm.new_state(1, sequence.shape[-1], summed=cond.summed)
        stepped = torch.cat([lm.step(sequence[..., s:s + 1], state) for s in range(sequence.shape[-1])], dim=2)
        assert torch.allclose(full, stepped, atol=1e-4)
        changed = cond.summed.clone()
        changed[:, 20] += 3.0 * torch.randn(lm.cfg.dim, generator=torch.Generator().manual_seed(0))
        other = lm(sequence, summed=changed)
        assert torch.allclose(other[:, :, :20], full[:, :, :20], atol=1e-6)
        assert (other[:, :, 20] - full[:, :, 20]).abs().max() > 1e-2
        # Steps past the last frame (the delay pattern's tail) reuse the last frame's condition.
        changed = cond.summed.clone()
        changed[:, -1] += 3.0 * torch.randn(lm.cfg.dim, generator=torch.Generator().manual_seed(1))
        tail = lm(sequence, summed=changed)
        assert (tail[:, :, -1] - full[:, :, -1]).abs().max() > 1e-2
    model.set_generation_params(duration=0.5, seed=0)
    wav = model.generate_with_chroma([None], tone[0], RATE)
    assert wav.shape == (1, 1, RATE // 2) and torch.isfinite(wav).all()


def test_bad_manifest_lines_are_reported_and_skipped_or_stop(corpus, tmp_path, caplog) -> None:
    manifest, codec = corpus
    bad = tmp_path / "bad.jsonl"
    lines = manifest.read_text().splitlines()
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wav file")
    folder = manifest.parent
    records = [json.loads(line) for line in lines[:2]]
    for r in records:
        r["path"] = str(folder / r["path"])
    records.insert(1, {"path": str(tmp_path / "missing.wav"), "duration": 2.0, "sample_rate": RATE})
    records.append({"path": str(tmp_path / "corrupt.wav"), "duration": 2.0, "sample_rate": RATE})
    bad.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    with caplog.at_level(logging.WARNING):
        train_lm(_cfg(bad, codec, tmp_path / "skip", "train.total_steps=2"))
    assert "line 2" in caplog.text and "missing.wav" in caplog.text and "line 4" in caplog.text
    with pytest.raises(WavecraftError, match=r"line 2: .*missing\.wav"):
        train_lm(_cfg(bad, codec, tmp_path / "stop", "train.total_steps=2", "on_bad_file=stop"))


def test_cli_train_lm_and_config_errors(corpus, tmp_path, capsys) -> None:
    manifest, codec = corpus
    config = tmp_path / "lm.yaml"
    config.write_text(f"manifest: {manifest}\ncodec: {codec}\nsegment_duration: 1.0\n"
                      f"lm: {{dim: 32, num_heads: 2, num_layers: 2}}\n"
                      f"train: {{total_steps: 3, batch_size: 2, output_dir: {tmp_path / 'cli'}}}\n")
    assert main(["train", "lm", str(config)]) == 0
    assert "final" in capsys.readouterr().out and (tmp_path / "cli" / "final" / "config.json").exists()
    assert main(["train", "lm", str(config), "--set", "train.lrr=1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "wavecraft: error: unknown config key 'train.lrr'"
    assert main(["train", "lm", str(config), "--set", "text_encoder=bert"]) == 1
    assert "text_encoder must be one of" in capsys.readouterr().err


def test_fine_tune_from_an_audiocraft_checkpoint(corpus, golden, tmp_path) -> None:
    """init_from: AudioCraft's state_dict.bin + compression_state_dict.bin (golden, random weights), a local T5."""
    from conftest import golden_meta, golden_repo
    from textenc import tiny_t5

    manifest, _ = corpus
    repo = golden_repo(golden, "musicgen", tmp_path / "repo")
    before = MusicGen.get_pretrained(repo, device="cpu")
    tokenizer, encoder = tiny_t5(before.bundle.conditioners["description"].output_proj.in_features)
    tokenizer.save_pretrained(tmp_path / "t5")
    encoder.save_pretrained(tmp_path / "t5")
    before = before.lm.state_dict()
    cfg = load_config(LMRunConfig, None, [
        f"manifest={manifest}", f"init_from={repo}", f"text_encoder_name={tmp_path / 't5'}",
        f"train.output_dir={tmp_path / 'ft'}", "segment_duration=0.5", "train.batch_size=2", "train.total_steps=2",
        "train.lr=1e-3", "train.warmup_steps=0"])
    final = train_lm(cfg)
    tuned = MusicGen.get_pretrained(final, device="cpu")
    assert tuned.lm.cfg == MusicGen.get_pretrained(repo, device="cpu").lm.cfg
    after = tuned.lm.state_dict()
    assert before.keys() == after.keys()
    assert not torch.equal(before["transformer.layers.0.linear1.weight"], after["transformer.layers.0.linear1.weight"])
    assert tuned.sample_rate == golden_meta(golden, "encodec")["config"]["sample_rate"]
