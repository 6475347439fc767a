"""MusicGen-Melody parity with AudioCraft (golden ``melody/``): chroma, prefix fusion, greedy generation.

T5 is bypassed as in the golden set: a stand-in tokenizer/encoder returns the stored hidden states for the
descriptions (and the T5 length of ``""`` for the null rows). Demucs is off, as it was there.
Every size and call argument comes from the set's ``meta.json`` (``config.chroma``, ``generate_runs``) or tensor
shapes: other sets with other sizes and options run through the same tests (``WAVECRAFT_GOLDEN``).
Tolerances (README's suggested acceptance): chroma one-hots exact, conditioner embeddings 1e-5, logits 1e-4.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_repo, seconds
from wavecraft import MusicGen
from wavecraft.checkpoints.lm import load_lm_bundle
from wavecraft.conditioning.chroma import ChromaConditioner, ChromaExtractor, chroma_filterbank
from wavecraft.errors import WavecraftError
from wavecraft.lm.generate import Conditions

EMBEDS_ATOL = 1e-5
CHROMA_ATOL = 1e-5  # normalised chroma in [0, 1] (README: recomputed with torch.stft to ~5e-7 relative)
LOGITS_ATOL = 1e-4

@pytest.fixture(scope="module")
def io(golden):
    return load_file(str(golden / "melody" / "io.safetensors"))


@pytest.fixture(scope="module")
def meta(golden):
    return json.loads((golden / "melody" / "meta.json").read_text())


@pytest.fixture(scope="module")
def chroma_cfg(meta):
    """The chroma settings of the set (sample rate of the melodies, n_fft, hop, chroma_len, segment_duration...)."""
    return meta["config"]["chroma"]


def _use_run(m, meta, key, **overrides):
    """Generation parameters of the golden run ``key`` (``meta.json`` ``generate_runs[key].args``)."""
    args = {**meta["generate_runs"][key]["args"], **overrides}
    assert args["prompt"] is None and not args["remove_prompts"]  # melody runs have no audio prompt (README)
    m.set_generation_params(use_sampling=args["use_sampling"], top_k=args["top_k"], top_p=args["top_p"],
                            temperature=args["temp"], duration=seconds(args["max_gen_len"], m.frame_rate),
                            cfg_coef=args["cfg_coef"], cfg_coef_beta=args["cfg_coef_beta"],
                            two_step_cfg=args["two_step_cfg"])
    return args


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
                    width = ids.shape[0]
                    h = outer.hidden[row, :width] if row >= 0 else outer.hidden.new_zeros(width, outer.hidden.shape[-1])
                    rows.append(h)
                return SimpleNamespace(last_hidden_state=torch.stack(rows))
        return Encoder()


def test_filterbank_and_chroma(io, chroma_cfg):
    c = chroma_cfg
    assert c["n_fft"] == c["win_length"] == 2 ** c["radix2_exp"]
    assert torch.equal(chroma_filterbank(c["sample_rate"], c["n_fft"], c["n_chroma"]), io["chroma_fbanks"])
    extractor = ChromaExtractor(c["sample_rate"], c["n_chroma"], radix2_exp=c["radix2_exp"], argmax=False)
    assert (extractor.n_fft, extractor.hop) == (c["n_fft"], c["hop_length"])
    with torch.inference_mode():
        torch.testing.assert_close(extractor(io["melody_wavs"]), io["chroma_norm"], atol=CHROMA_ATOL, rtol=0)
        extractor.argmax = True
        assert torch.equal(extractor(io["melody_wavs"]), io["chroma_onehot"])
        assert torch.equal(extractor(io["alt_melody_wav"]), io["alt_chroma_onehot"])


def test_conditioner_tiling_null_and_projection(golden, io, meta, chroma_cfg):
    bundle = load_lm_bundle(golden / "melody" / "state_dict.bin")
    chroma = bundle.conditioners["self_wav"]
    assert chroma.chroma_len == chroma_cfg["chroma_len"] == io["chroma"].shape[1]
    # AudioCraft's definition: the frame count of the chroma of a silent clip of the window's length (one shorter
    # than n_fft too: the extractor pads it to n_fft first)
    for duration in (chroma_cfg["segment_duration"], chroma_cfg["n_fft"] / 2 / chroma.sample_rate):
        other = ChromaConditioner(chroma.output_proj.out_features, chroma.sample_rate, duration,
                                  chroma_cfg["n_chroma"], chroma_cfg["radix2_exp"])
        silent = torch.zeros(1, 1, int(chroma.sample_rate * duration))
        assert other.chroma_len == other.chroma(silent).shape[1], duration
    assert chroma.sample_rate == chroma_cfg["sample_rate"] and chroma.chroma.argmax == chroma_cfg["argmax"]
    assert bundle.lm.cfg.cross_attention == meta["config"]["cross_attention"]
    fuser = {name: method for method, names in meta["config"]["fuser"].items() for name in names}
    assert bundle.fuser.cond2fuse == fuser
    # the null melody is AudioCraft's WavCondition(zeros [1, 1, 1], length 0)
    with torch.inference_mode():
        assert torch.equal(chroma.extract(io["melody_wavs"]), io["chroma"])
        assert torch.equal(chroma.extract(io["alt_melody_wav"]), io["alt_chroma"])
        null = chroma.extract(torch.zeros(1, 1, 1))
        assert torch.equal(null, io["null_chroma"])
        torch.testing.assert_close(chroma(io["melody_wavs"])[0], io["self_wav_embeds"], atol=EMBEDS_ATOL, rtol=0)
        torch.testing.assert_close(chroma(torch.zeros(1, 1, 1))[0], io["null_self_wav_embeds"], atol=EMBEDS_ATOL,
                                   rtol=0)


def test_prefix_logits(golden, io, chroma_cfg):
    bundle = load_lm_bundle(golden / "melody" / "state_dict.bin")
    with torch.inference_mode():
        desc = bundle.conditioners["description"].project(io["t5_hidden"], io["t5_mask"])
        wav = bundle.conditioners["self_wav"](io["melody_wavs"])
        prefix, cross, _, _ = bundle.fuser.fuse({"description": desc, "self_wav": wav})
        prefix_len = chroma_cfg["chroma_len"] + io["t5_mask"].shape[1]  # [chroma frames, T5 tokens]
        assert cross is None and prefix.shape[1] == prefix_len
        torch.testing.assert_close(desc[0], io["description_embeds"], atol=EMBEDS_ATOL, rtol=0)
        logits = bundle.lm(io["fwd_sequence"], prefix=prefix)
    torch.testing.assert_close(logits, io["fwd_logits"], atol=LOGITS_ATOL, rtol=0)
    assert Conditions(prefix=prefix).prefix_len == prefix_len


@pytest.fixture(scope="module")
def model(golden, io, meta, tmp_path_factory):
    folder = tmp_path_factory.mktemp("melody")
    golden_repo(golden, "melody", folder)
    m = MusicGen.get_pretrained(folder, device="cpu")
    conditions = meta["conditions"]
    fake = GoldenT5(conditions["descriptions"], conditions["t5_token_lengths"], io["t5_hidden"])
    m.bundle.conditioners["description"].set_encoder(fake, fake.encoder())
    _use_run(m, meta, "gen_melody")
    return m, conditions["descriptions"]


def _melodies(io):
    return [io["melody_wavs"][i, :, : int(n)] for i, n in enumerate(io["melody_lengths"])]


def test_generation_with_melody(model, io, meta, chroma_cfg):
    m, texts = model
    assert m.max_duration == chroma_cfg["segment_duration"]
    _use_run(m, meta, "gen_melody")
    _, tokens = m.generate_with_chroma(texts, _melodies(io), chroma_cfg["sample_rate"], return_tokens=True)
    assert torch.equal(tokens, io["gen_melody"])


def test_generation_without_and_mixed(model, io, meta, chroma_cfg):
    m, texts = model
    _use_run(m, meta, "gen_no_melody")
    assert torch.equal(m.generate(texts, return_tokens=True)[1], io["gen_no_melody"])
    _use_run(m, meta, "gen_mixed")
    mixed = m.generate_with_chroma(texts, [_melodies(io)[0], None], chroma_cfg["sample_rate"], return_tokens=True)[1]
    assert torch.equal(mixed, io["gen_mixed"])


def test_every_generate_run_is_tested(meta):
    assert sorted(meta["generate_runs"]) == ["gen_melody", "gen_mixed", "gen_no_melody"]


def test_double_cfg_with_beta_one_is_plain_cfg(model, io, meta, chroma_cfg):
    """Double CFG with a melody: null + cfg * (mid + beta * (cond - mid) - null), mid = melody without text; at
    beta = 1 it reduces to plain CFG, so the golden tokens come back."""
    m, texts = model
    args = _use_run(m, meta, "gen_melody", cfg_coef_beta=1.0)
    assert args["cfg_coef"] != 1.0 and not args["two_step_cfg"]  # double CFG needs guidance, in one batched pass
    _, tokens = m.generate_with_chroma(texts, _melodies(io), chroma_cfg["sample_rate"], return_tokens=True)
    assert torch.equal(tokens, io["gen_melody"])


@pytest.mark.parametrize("melody, rate, message", [  # rate None: the melodies' own rate (the set's)
    (lambda io: [torch.zeros(1, 100)], None, "melodies for"),
    (lambda io: _melodies(io), 0, "sample_rate"),
    (lambda io: [torch.full((1, 3200), float("nan")), None], None, "NaN"),
    (lambda io: [torch.zeros(1, 0), None], None, "non-empty"),
])
def test_bad_melody_input(model, io, chroma_cfg, melody, rate, message):
    m, texts = model
    with pytest.raises(WavecraftError, match=message):
        m.generate_with_chroma(texts, melody(io), chroma_cfg["sample_rate"] if rate is None else rate)


def test_text_only_model_rejects_melody(golden, tmp_path):
    golden_repo(golden, "musicgen", tmp_path)
    with pytest.raises(WavecraftError, match="no melody conditioner"):
        text_only = MusicGen.get_pretrained(tmp_path, device="cpu")
        text_only.generate_with_chroma(["x"], [None], text_only.sample_rate)


def test_cli_melody(model, io, meta, golden, tmp_path, capsys):
    import numpy as np
    import soundfile as sf

    from wavecraft.cli import main

    m, texts = model
    folder = tmp_path / "repo"
    folder.mkdir()
    golden_repo(golden, "melody", folder)
    # a stereo 44.1 kHz melody file (any rate but the model's): converted to the model's rate, mono, for the chroma
    t = np.arange(44100 * 2) / 44100
    frames = meta["generate_runs"]["gen_melody"]["args"]["max_gen_len"]
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
                     "--duration", repr(seconds(frames, m.frame_rate)), "-o", str(tmp_path / "out.wav"),
                     "--no-progress"]) == 0
        assert sf.read(tmp_path / "out.wav")[0].shape[0] == frames * m.compression_model.hop_length
        assert main(["generate", texts[0], "--model", str(folder), "--melody", str(tmp_path / "broken.mp3"),
                     "-o", str(tmp_path / "bad.wav"), "--no-progress"]) == 1
        assert "broken.mp3" in capsys.readouterr().err and not (tmp_path / "bad.wav").exists()
    finally:
        musicgen_module.MusicGen.get_pretrained = real


def _golden_encoder(m):
    conditioner = m.bundle.conditioners["description"]
    return conditioner._encoder


def test_silent_and_very_short_melodies_equal_the_null_melody(model, io, meta, chroma_cfg):
    """All-zero chroma is bin 0 — exactly the null melody — so silence gives the no-melody result."""
    m, texts = model
    args = _use_run(m, meta, "gen_no_melody")
    rate = chroma_cfg["sample_rate"]
    silent = [torch.zeros(1, rate), torch.zeros(2, 100)]  # 1 s of silence; 100 samples of stereo silence
    assert torch.equal(m.generate_with_chroma(texts, silent, rate, return_tokens=True)[1], io["gen_no_melody"])
    short = [torch.randn(1, 100) * 0.1, None]  # at another rate, shorter than one chroma window: padded, works
    wav = m.generate_with_chroma(texts, short, rate // 2)
    assert wav.shape == (len(texts), m.audio_channels, args["max_gen_len"] * m.compression_model.hop_length)


def test_stem_separator_hook_runs_before_chroma(golden, io, chroma_cfg):
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
    assert seen == [(tuple(io["melody_wavs"].shape), chroma_cfg["sample_rate"])]
    assert torch.equal(chroma, io["null_chroma"].expand(io["melody_wavs"].shape[0], -1, -1))


def test_save_pretrained_round_trip(model, io, meta, chroma_cfg, tmp_path):
    """wavecraft's own layout (one safetensors file + config.json) reloads to the same generations."""
    m, texts = model
    m.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]
    again = MusicGen.get_pretrained(tmp_path / "saved", device="cpu")
    again.bundle.conditioners["description"].set_encoder(*_golden_encoder(m))
    _use_run(again, meta, "gen_melody")
    assert again.max_duration == chroma_cfg["segment_duration"]
    assert again.bundle.conditioners["self_wav"].chroma_len == chroma_cfg["chroma_len"]
    _, tokens = again.generate_with_chroma(texts, _melodies(io), chroma_cfg["sample_rate"], return_tokens=True)
    assert torch.equal(tokens, io["gen_melody"])
