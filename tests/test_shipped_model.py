"""The model that ships inside the package: loads with no name and no network, and makes music, not noise."""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch

from wavecraft import MusicGen
from wavecraft.cli import main
from wavecraft.metrics import chroma_cosine_similarity
from wavecraft.metrics.features import onset_rate, spectral_centroid, spectral_flatness
from wavecraft.metrics.pitch import rendered_pitch_classes
from wavecraft.models.genmodel import GenerationError
from wavecraft.models.shipped import shipped_model_dir


@pytest.fixture(scope="module")
def model() -> MusicGen:
    return MusicGen.get_pretrained(device="cpu")


def test_weights_ship_in_the_package_and_are_small() -> None:
    folder = shipped_model_dir()
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= 50 * 2**20
    assert (folder / "model.safetensors").stat().st_size > 1_000_000


def test_generates_music_not_noise_nor_silence(model, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model.set_generation_params(duration=3.0, seed=0)
    wav = model.generate(["a gentle piano waltz in C major, 90 bpm", "a fast rock groove with drums and bass"])
    assert wav.shape == (2, 1, 3 * model.sample_rate) and model.sample_rate == 32000
    white = spectral_flatness(torch.randn(3 * model.sample_rate), model.sample_rate)
    for clip in wav:
        rms = clip.pow(2).mean().sqrt().item()
        assert rms > 1e-3, "silent"
        assert (clip.abs() >= 0.999).float().mean() < 1e-3, "clipped"
        assert spectral_flatness(clip, model.sample_rate) < 0.5 * white, "noise-like"


def test_prompts_that_differ_in_instrument_and_tempo_sound_different(model) -> None:
    """A drum-and-guitar groove and a slow flute tune: the groove is brighter (spectral centroid), over two
    samples of each prompt."""
    model.set_generation_params(duration=4.0, seed=0)
    groove, flute = "a fast bossa nova groove in A minor, 140 bpm, with drums, bass and jazz guitar", \
        "a slow folk song played on flute in C major, 70 bpm"
    wav = model.generate([groove, groove, flute, flute])
    rate = model.sample_rate
    centroids = [spectral_centroid(w, rate) for w in wav]
    onsets = [onset_rate(w, rate) for w in wav]
    bright_groove, bright_flute = sum(centroids[:2]) / 2, sum(centroids[2:]) / 2
    assert bright_groove > 1.15 * bright_flute, (centroids, onsets)


def test_shipped_codec_renders_pitch(model) -> None:
    """12 harmonic notes C4..B4 through the codec: most keep their pitch class (measured 7/12; the SEANet codec
    shipped before rendered all 12 as G)."""
    with torch.inference_mode():
        classes = rendered_pitch_classes(model.compression_model)
    assert sum(c == k for k, c in enumerate(classes)) >= 6, classes
    assert len(set(classes)) >= 7, classes


def test_melody_conditioning_works_with_the_shipped_model(model) -> None:
    assert model.has_melody
    rate = model.sample_rate
    tune = _tune([261.6, 329.6, 392.0, 523.3], rate, 2.0)
    model.set_generation_params(duration=2.0, seed=0)
    wav = model.generate_with_chroma(["a melody played on a flute"], tune[None], rate)
    assert wav.shape == (1, 1, 2 * rate) and wav.abs().max() > 1e-3


def _tune(notes_hz: list[float], rate: int, seconds: float) -> torch.Tensor:
    """``[1, T]``: the notes in turn, equally long."""
    steps = torch.tensor(notes_hz).repeat_interleave(int(seconds * rate) // len(notes_hz))
    return 0.3 * torch.sin(2 * math.pi * torch.cumsum(steps / rate, 0))[None]


def test_melody_guidance_follows_the_melody(model) -> None:
    """Double CFG with the melody kept in the middle term (cfg 9, beta 1/3: the melody's direction weighs 9, the
    text's 3) makes the output's chroma follow its melody more than plain CFG does (eval on held-out tunes: 0.41
    against 0.09; another tune's melody 0.05 and 0.03)."""
    rate, seconds = model.sample_rate, 3.0
    tunes = torch.stack([_tune([261.6, 329.6, 392.0], rate, seconds), _tune([370.0, 277.2, 311.1], rate, seconds)])
    scores = {}
    try:
        for beta in (None, 1 / 3):
            model.set_generation_params(duration=seconds, seed=0, cfg_coef=3.0 if beta is None else 9.0,
                                        cfg_coef_beta=beta)
            wav = model.generate_with_chroma(["a melody played on piano"] * 2, tunes, rate)
            scores[beta] = (chroma_cosine_similarity(wav, tunes, rate),
                            chroma_cosine_similarity(wav, tunes.flip(0), rate))
    finally:
        model.set_generation_params()
    (plain, _), (guided, other) = scores[None], scores[1 / 3]
    assert guided > plain + 0.15 and guided > other + 0.3, scores


def test_melody_guidance_without_text_weight_is_melody_only_cfg(model) -> None:
    """beta = 0 keeps only the melody's direction: the same greedy codes as plain CFG with no description."""
    rate = model.sample_rate
    tune = _tune([261.6, 329.6, 392.0], rate, 1.0)[None]
    model.set_generation_params(duration=1.0, use_sampling=False, cfg_coef=3.0, cfg_coef_beta=0.0)
    try:
        guided = model.generate_with_chroma(["a fast rock groove"], tune, rate, return_tokens=True)[1]
        model.set_generation_params(duration=1.0, use_sampling=False, cfg_coef=3.0)
        melody_only = model.generate_with_chroma([None], tune, rate, return_tokens=True)[1]
        model.set_generation_params(duration=1.0, use_sampling=False, cfg_coef=3.0)
        with_text = model.generate_with_chroma(["a fast rock groove"], tune, rate, return_tokens=True)[1]
    finally:
        model.set_generation_params()
    assert torch.equal(guided, melody_only)
    assert not torch.equal(guided, with_text)


def test_cli_generates_with_the_shipped_model_by_default(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "waltz.wav"
    assert main(["generate", "a gentle piano waltz", "--duration", "1", "--seed", "0", "-o", str(out),
                 "--no-progress"]) == 0
    info = sf.info(out)
    assert info.samplerate == 32000 and abs(info.duration - 1.0) < 0.05


def test_double_cfg_without_cfg_is_refused(model) -> None:
    with pytest.raises(GenerationError, match="cfg_coef must not be 1"):
        model.set_generation_params(cfg_coef=1.0, cfg_coef_beta=0.5)


def test_cli_melody_guidance_with_the_shipped_model(tmp_path, capsys) -> None:
    rate = 32000
    sf.write(tmp_path / "tune.wav", _tune([261.6, 329.6, 392.0], rate, 1.0)[0].numpy(), rate)
    out = tmp_path / "out.wav"
    assert main(["generate", "a melody played on piano", "--melody", str(tmp_path / "tune.wav"), "--cfg", "9",
                 "--cfg-beta", "0.33", "--duration", "1", "--seed", "0", "-o", str(out), "--no-progress"]) == 0
    assert sf.info(out).samplerate == rate and abs(sf.info(out).duration - 1.0) < 0.05
    assert main(["generate", "x", "--cfg-beta", "0.5", "--two-step-cfg", "-o", str(tmp_path / "bad.wav"),
                 "--no-progress"]) == 1
    assert "--cfg-beta" in capsys.readouterr().err and not (tmp_path / "bad.wav").exists()
    assert main(["generate", "x", "--cfg-beta", "0.5", "--cfg", "1", "-o", str(tmp_path / "bad.wav"),
                 "--no-progress"]) == 1
    assert "--cfg must not be 1" in capsys.readouterr().err and not (tmp_path / "bad.wav").exists()
