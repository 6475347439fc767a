"""MusicGen-Melody parity with AudioCraft (../shared/golden/melody): chroma, prefix fusion, greedy generation.

T5 is bypassed as in the golden set: a stand-in tokenizer/encoder returns the stored hidden states for the two
descriptions (and the T5 length of ``""`` for the null rows). Demucs is off, as it was there.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_repo
from wavecraft import MusicGen
from wavecraft.checkpoints.lm import load_lm_bundle
from wavecraft.conditioning.chroma import ChromaExtractor, chroma_filterbank
from wavecraft.errors import WavecraftError
from wavecraft.lm.generate import Conditions


@pytest.fixture(scope="module")
def io(golden):
    return load_file(str(golden / "melody" / "io.safetensors"))


@pytest.fixture(scope="module")
def meta(golden):
    return json.loads((golden / "melody" / "meta.json").read_text())


class GoldenT5:
    """Tokenizer + encoder returning the golden T5 states for the golden descriptions ('' -> one token)."""

    def __init__(self, descriptions, lengths, hidden):
        self.rows = {d: i for i, d in enumerate(descriptions)}
        self.lengths, self.hidden = lengths, hidden

    def __call__(self, texts, return_tensors="pt", padding=True):
        lens = [self.lengths[self.rows[t]] if t else 1 for t in texts]
        width = max(lens)
        ids = torch.tensor([[self.rows.get(t, -1) + 1] * width for t in texts])
        mask = torch.tensor([[1] * n + [0] * (width - n) for n in lens])
        return {"input_ids": ids, "attention_mask": mask}

    def encoder(self):
        outer = self

        class Encoder(torch.nn.Module):
            def forward(self, input_ids, attention_mask):
                rows = []
                for ids in input_ids:
                    row = int(ids[0]) - 1
                    h = outer.hidden[row, : ids.shape[0]] if row >= 0 else torch.zeros(ids.shape[0], 768)
                    rows.append(h)
                return SimpleNamespace(last_hidden_state=torch.stack(rows))
        return Encoder()


def test_filterbank_and_chroma(io):
    assert torch.equal(chroma_filterbank(32000, 16384), io["chroma_fbanks"])
    extractor = ChromaExtractor(32000, radix2_exp=14, argmax=False)
    with torch.inference_mode():
        torch.testing.assert_close(extractor(io["melody_wavs"]), io["chroma_norm"], atol=1e-5, rtol=0)
        extractor.argmax = True
        assert torch.equal(extractor(io["melody_wavs"]), io["chroma_onehot"])
        assert torch.equal(extractor(io["alt_melody_wav"]), io["alt_chroma_onehot"])


def test_conditioner_tiling_null_and_projection(golden, io):
    bundle = load_lm_bundle(golden / "melody" / "state_dict.bin")
    chroma = bundle.conditioners["self_wav"]
    assert chroma.chroma_len == 47 and not bundle.lm.cfg.cross_attention
    with torch.inference_mode():
        assert torch.equal(chroma.extract(io["melody_wavs"]), io["chroma"])
        assert torch.equal(chroma.extract(io["alt_melody_wav"]), io["alt_chroma"])
        null = chroma.extract(torch.zeros(1, 1, 1))
        assert torch.equal(null, io["null_chroma"])
        torch.testing.assert_close(chroma(io["melody_wavs"])[0], io["self_wav_embeds"], atol=1e-5, rtol=0)
        torch.testing.assert_close(chroma(torch.zeros(1, 1, 1))[0], io["null_self_wav_embeds"], atol=1e-5, rtol=0)


def test_prefix_logits(golden, io):
    bundle = load_lm_bundle(golden / "melody" / "state_dict.bin")
    with torch.inference_mode():
        desc = bundle.conditioners["description"].project(io["t5_hidden"], io["t5_mask"])
        wav = bundle.conditioners["self_wav"](io["melody_wavs"])
        prefix, cross, _, _ = bundle.fuser.fuse({"description": desc, "self_wav": wav})
        assert cross is None and prefix.shape[1] == 47 + 12
        logits = bundle.lm(io["fwd_sequence"], prefix=prefix)
    torch.testing.assert_close(logits, io["fwd_logits"], atol=1e-4, rtol=0)
    assert Conditions(prefix=prefix).prefix_len == 59


@pytest.fixture(scope="module")
def model(golden, io, meta, tmp_path_factory):
    folder = tmp_path_factory.mktemp("melody")
    golden_repo(golden, "melody", folder)
    m = MusicGen.get_pretrained(folder, device="cpu")
    conditions = meta["conditions"]
    fake = GoldenT5(conditions["descriptions"], conditions["t5_token_lengths"], io["t5_hidden"])
    m.bundle.conditioners["description"].set_encoder(fake, fake.encoder())
    m.set_generation_params(use_sampling=False, duration=30 / 50)
    return m, conditions["descriptions"]


def _melodies(io):
    return [io["melody_wavs"][i, :, : int(n)] for i, n in enumerate(io["melody_lengths"])]


def test_generation_with_melody(model, io):
    m, texts = model
    assert m.max_duration == 6
    _, tokens = m.generate_with_chroma(texts, _melodies(io), 32000, return_tokens=True)
    assert torch.equal(tokens, io["gen_melody"])


def test_generation_without_and_mixed(model, io):
    m, texts = model
    assert torch.equal(m.generate(texts, return_tokens=True)[1], io["gen_no_melody"])
    mixed = m.generate_with_chroma(texts, [_melodies(io)[0], None], 32000, return_tokens=True)[1]
    assert torch.equal(mixed, io["gen_mixed"])


def test_double_cfg_with_beta_one_is_plain_cfg(model, io):
    """Double CFG with a melody: null + cfg * (mid + beta * (cond - mid) - null), mid = melody without text; at
    beta = 1 it reduces to plain CFG, so the golden tokens come back."""
    m, texts = model
    m.set_generation_params(use_sampling=False, duration=30 / 50, cfg_coef_beta=1.0)
    try:
        _, tokens = m.generate_with_chroma(texts, _melodies(io), 32000, return_tokens=True)
    finally:
        m.set_generation_params(use_sampling=False, duration=30 / 50)
    assert torch.equal(tokens, io["gen_melody"])


@pytest.mark.parametrize("melody, rate, message", [
    (lambda io: [torch.zeros(1, 100)], 32000, "melodies for"),
    (lambda io: _melodies(io), 0, "sample_rate"),
    (lambda io: [torch.full((1, 3200), float("nan")), None], 32000, "NaN"),
    (lambda io: [torch.zeros(1, 0), None], 32000, "non-empty"),
])
def test_bad_melody_input(model, io, melody, rate, message):
    m, texts = model
    with pytest.raises(WavecraftError, match=message):
        m.generate_with_chroma(texts, melody(io), rate)


def test_text_only_model_rejects_melody(golden, tmp_path):
    golden_repo(golden, "musicgen", tmp_path)
    with pytest.raises(WavecraftError, match="no melody conditioner"):
        MusicGen.get_pretrained(tmp_path, device="cpu").generate_with_chroma(["x"], [None], 32000)


def test_cli_melody(model, io, golden, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from wavecraft.cli import main

    m, texts = model
    folder = tmp_path / "repo"
    folder.mkdir()
    golden_repo(golden, "melody", folder)
    # a stereo 44.1 kHz melody file: converted to 32 kHz mono for the chroma
    t = np.arange(44100 * 2) / 44100
    sf.write(tmp_path / "tune.wav", np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 0.3, 44100)
    (tmp_path / "broken.mp3").write_bytes(b"\xff\xfb" + bytes(200))
    from wavecraft.models import musicgen as musicgen_module

    real = musicgen_module.MusicGen.get_pretrained

    def with_golden_t5(*args, **kwargs):
        loaded = real(*args, **kwargs)
        loaded.bundle.conditioners["description"].set_encoder(*_golden_encoder(m))
        return loaded

    musicgen_module.MusicGen.get_pretrained = with_golden_t5
    try:
        assert main(["generate", texts[0], "--model", str(folder), "--melody", str(tmp_path / "tune.wav"),
                     "--duration", "0.4", "-o", str(tmp_path / "out.wav"), "--no-progress"]) == 0
        assert sf.read(tmp_path / "out.wav")[0].shape == (12800,)
        assert main(["generate", texts[0], "--model", str(folder), "--melody", str(tmp_path / "broken.mp3"),
                     "-o", str(tmp_path / "bad.wav"), "--no-progress"]) == 1
        assert "broken.mp3" in capsys.readouterr().err and not (tmp_path / "bad.wav").exists()
    finally:
        musicgen_module.MusicGen.get_pretrained = real


def _golden_encoder(m):
    conditioner = m.bundle.conditioners["description"]
    return conditioner._encoder


def test_silent_and_very_short_melodies_equal_the_null_melody(model, io):
    """All-zero chroma is bin 0 — exactly the null melody — so silence gives the no-melody result."""
    m, texts = model
    silent = [torch.zeros(1, 32000), torch.zeros(2, 100)]  # 1 s of silence; 100 samples of stereo silence
    assert torch.equal(m.generate_with_chroma(texts, silent, 32000, return_tokens=True)[1], io["gen_no_melody"])
    short = [torch.randn(1, 100) * 0.1, None]  # shorter than one chroma window: padded, still works
    wav = m.generate_with_chroma(texts, short, 16000)
    assert wav.shape == (2, 1, 19200)


def test_stem_separator_hook_runs_before_chroma(golden, io):
    """The (off by default) source-separation hook sees the melody at the model rate before the chroma."""
    bundle = load_lm_bundle(golden / "melody" / "state_dict.bin")
    conditioner = bundle.conditioners["self_wav"]
    seen = []

    def separator(wav, sample_rate):
        seen.append((tuple(wav.shape), sample_rate))
        return torch.zeros_like(wav)  # "removes" everything: the chroma becomes the null melody

    conditioner.stem_separator = separator
    with torch.inference_mode():
        chroma = conditioner.extract(io["melody_wavs"])
    assert seen == [((2, 1, 128000), 32000)]
    assert torch.equal(chroma, io["null_chroma"].expand(2, -1, -1))


def test_save_pretrained_round_trip(model, io, tmp_path):
    """wavecraft's own layout (one safetensors file + config.json) reloads to the same generations."""
    m, texts = model
    m.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]
    again = MusicGen.get_pretrained(tmp_path / "saved", device="cpu")
    again.bundle.conditioners["description"].set_encoder(*_golden_encoder(m))
    again.set_generation_params(use_sampling=False, duration=30 / 50)
    assert again.max_duration == 6 and again.bundle.conditioners["self_wav"].chroma_len == 47
    _, tokens = again.generate_with_chroma(texts, _melodies(io), 32000, return_tokens=True)
    assert torch.equal(tokens, io["gen_melody"])
