"""MusicGen / AudioGen model API on AudioCraft-format checkpoints (golden tiny weights, stand-in T5)."""

from __future__ import annotations

import pytest
import torch

import wavecraft.models.genmodel as genmodel
from conftest import golden_meta, golden_repo, seconds
from textenc import tiny_t5
from wavecraft import MusicGen
from wavecraft.errors import WavecraftError


@pytest.fixture(scope="module")
def repo(golden, tmp_path_factory):
    """A local 'hub repo' folder: LM state_dict.bin + codec compression_state_dict.bin."""
    folder = tmp_path_factory.mktemp("musicgen-tiny")
    golden_repo(golden, "musicgen", folder)
    return folder


def _hop(model) -> int:
    return round(model.sample_rate / model.frame_rate)


def _model(path) -> MusicGen:
    model = MusicGen.get_pretrained(path, device="cpu")
    # a tiny T5 as wide as the checkpoint's
    tokenizer, encoder = tiny_t5(model.bundle.conditioners["description"].output_proj.in_features)
    model.bundle.conditioners["description"].set_encoder(tokenizer, encoder)
    return model


def test_defaults_and_shapes(golden, repo):
    model = _model(repo)
    codec = golden_meta(golden, "encodec")["config"]
    assert (model.sample_rate, model.frame_rate, model.audio_channels) == (
        codec["sample_rate"], codec["frame_rate"], codec["channels"])
    segment = model.bundle.max_duration  # xp.cfg dataset.segment_duration (checked in test_lm_golden)
    assert model.max_duration == segment and model.duration == min(15.0, segment)  # MusicGen's default: 15 s
    frames, (channels, n_q) = 25, (model.audio_channels, model.lm.cfg.n_q)
    model.set_generation_params(duration=seconds(frames, model.frame_rate), seed=0)
    wav, tokens = model.generate(["slow piano waltz", "upbeat rock with drums"], return_tokens=True)
    assert wav.shape == (2, channels, frames * _hop(model)) and tokens.shape == (2, n_q, frames)
    assert model.generate_unconditional(3).shape == (3, channels, frames * _hop(model))


def test_seed_reproducible_and_greedy_deterministic(repo):
    model = _model(repo)
    model.set_generation_params(duration=0.3, seed=7)
    a = model.generate(["calm jazz"], return_tokens=True)[1]
    model.set_generation_params(duration=0.3, seed=7)
    b = model.generate(["calm jazz"], return_tokens=True)[1]
    model.set_generation_params(duration=0.3, seed=8)
    c = model.generate(["calm jazz"], return_tokens=True)[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_continuation_keeps_prompt(repo):
    model = _model(repo)
    frames = 30
    model.set_generation_params(duration=seconds(frames, model.frame_rate), use_sampling=False)
    rate = model.sample_rate // 2  # a prompt at half the model's rate: resampled
    prompt = torch.sin(torch.arange(int(0.3 * rate)) / 10.0)[None, None] * 0.3  # 0.3 s
    wav, tokens = model.generate_continuation(prompt, rate, ["bright synth pop"], return_tokens=True)
    assert wav.shape == (1, model.audio_channels, frames * _hop(model))
    assert tokens.shape == (1, model.lm.cfg.n_q, frames)
    from wavecraft.audio import convert_audio
    with torch.inference_mode():
        expected, _ = model.compression_model.encode(convert_audio(prompt, rate, model.sample_rate,
                                                                   model.audio_channels))
    assert torch.equal(tokens[..., :expected.shape[-1]], expected)


def test_two_step_uses_stored_coefficient(repo):
    model = _model(repo)
    stored = model.bundle.cfg_coef  # xp.cfg classifier_free_guidance.inference_coef
    model.set_generation_params(duration=0.3, use_sampling=False, two_step_cfg=True, cfg_coef=stored + 2.0)
    a = model.generate(["sad strings"], return_tokens=True)[1]
    model.set_generation_params(duration=0.3, use_sampling=False, two_step_cfg=True, cfg_coef=stored)
    assert torch.equal(a, model.generate(["sad strings"], return_tokens=True)[1])


def test_long_form_windows(repo, monkeypatch):
    window, stride, total = 50, 25, 125  # in frames, whatever the frame rate
    model = _model(repo)
    model.max_duration = seconds(window, model.frame_rate)
    calls = []
    real = genmodel.generate

    def spy(lm, cond, max_gen_len, **kw):
        prompt = kw.get("prompt")
        calls.append((0 if prompt is None else prompt.shape[-1], max_gen_len))
        return real(lm, cond, max_gen_len, **kw)

    monkeypatch.setattr(genmodel, "generate", spy)
    progress = []
    model.set_custom_progress_callback(lambda done, total: progress.append((done, total)))
    model.set_generation_params(duration=seconds(total, model.frame_rate),
                                extend_stride=seconds(stride, model.frame_rate), use_sampling=False)
    wav, tokens = model.generate(["rock"], return_tokens=True)
    assert tokens.shape == (1, model.lm.cfg.n_q, total) and wav.shape == (1, model.audio_channels, total * _hop(model))
    # windows of 50 frames; each keeps the last 25 frames as prompt; 125 frames: starts at 0, 25, 50, 75
    assert calls == [(0, window)] + [(window - stride, window)] * 3
    # Decoding steps of the whole generation: each window's new frames plus the delay pattern's lag.
    steps = window + 3 * stride + 4 * max(model.lm.cfg.delays)
    assert progress == [(done, steps) for done in range(1, steps + 1)]


def test_stereo_checkpoint(golden, tmp_path):
    golden_repo(golden, "stereo", tmp_path)
    model = _model(tmp_path)
    frames = 20
    model.set_generation_params(duration=seconds(frames, model.frame_rate))
    assert model.audio_channels == golden_meta(golden, "stereo")["config"]["channels"]
    assert model.generate(["warm bass"]).shape == (1, model.audio_channels, frames * _hop(model))


@pytest.mark.parametrize("call, message", [
    (lambda m: m.generate([]), "empty"),
    (lambda m: m.generate("a string"), "list"),
    (lambda m: m.generate([3]), "strings"),
    (lambda m: m.set_generation_params(duration=0), "duration"),
    (lambda m: m.set_generation_params(duration=float("nan")), "duration"),
    (lambda m: m.set_generation_params(extend_stride=m.max_duration), "extend_stride"),
    (lambda m: m.generate_continuation(torch.zeros(1, 1, 100), 0), "sample_rate"),
    (lambda m: m.generate_continuation(torch.zeros(1, 1, int(m.sample_rate * (m.duration + 1))), m.sample_rate),
     "longer"),
    (lambda m: m.generate_continuation(torch.zeros(1, 1, 3200), m.sample_rate, ["a", "b"]), "descriptions"),
])
def test_bad_input(repo, call, message):
    model = _model(repo)
    with pytest.raises(WavecraftError, match=message) as excinfo:
        call(model)
    assert "\n" not in str(excinfo.value)


def test_unknown_model_offline(tmp_path):
    import os
    import subprocess
    import sys

    code = ("from wavecraft import MusicGen\n"
            "try:\n    MusicGen.get_pretrained('facebook/musicgen-nope', device='cpu')\n"
            "except Exception as e:\n    print(type(e).__name__, '|', e)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WAVECRAFT_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("CheckpointError |") and "local folder" in out and out.count("\n") == 1, out


def test_double_cfg_reduces_to_product_for_text_only(repo):
    """Without a style condition the middle term equals the null one: CFG with coefficient cfg * beta."""
    model = _model(repo)
    model.set_generation_params(duration=0.3, use_sampling=False, cfg_coef=2.0, cfg_coef_beta=1.5)
    a = model.generate(["warm bass"], return_tokens=True)[1]
    model.set_generation_params(duration=0.3, use_sampling=False, cfg_coef=3.0)
    assert torch.equal(a, model.generate(["warm bass"], return_tokens=True)[1])


def test_save_pretrained_stereo_round_trip(golden, tmp_path):
    golden_repo(golden, "stereo", tmp_path)
    model = _model(tmp_path)
    model.set_generation_params(duration=0.3, use_sampling=False)
    expected = model.generate(["warm bass"], return_tokens=True)[1]
    model.save_pretrained(tmp_path / "saved")
    again = _model(tmp_path / "saved")
    again.set_generation_params(duration=0.3, use_sampling=False)
    assert again.audio_channels == model.audio_channels == golden_meta(golden, "stereo")["config"]["channels"]
    assert torch.equal(again.generate(["warm bass"], return_tokens=True)[1], expected)


def test_save_pretrained_over_a_loaded_checkpoint(golden, tmp_path):
    # A model loaded from safetensors maps its file: saving another model onto that folder must not change the
    # weights under the loaded one (the file is replaced, not rewritten in place), and the folder then holds the
    # new model.
    golden_repo(golden, "stereo", tmp_path)
    _model(tmp_path).save_pretrained(tmp_path / "saved")
    model = _model(tmp_path / "saved")
    before = {k: v.clone() for k, v in model.bundle.lm.state_dict().items()}
    other = _model(tmp_path)
    with torch.no_grad():
        for p in other.bundle.lm.parameters():
            p.mul_(-1.0)
    other.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]
    assert all(torch.equal(v, before[k]) for k, v in model.bundle.lm.state_dict().items())
    again = _model(tmp_path / "saved")
    assert all(torch.equal(v, -before[k]) for k, v in again.bundle.lm.state_dict().items() if v.is_floating_point())


def _spy_windows(monkeypatch) -> list[torch.Tensor | None]:
    """Record the prompt (context) of every LM window generation."""
    contexts: list[torch.Tensor | None] = []
    real = genmodel.generate

    def spy(lm, cond, max_gen_len, **kw):
        contexts.append(kw.get("prompt"))
        return real(lm, cond, max_gen_len, **kw)

    monkeypatch.setattr(genmodel, "generate", spy)
    return contexts


@pytest.mark.parametrize("with_prompt", [False, True])
def test_progress_is_monotonic_over_windows_and_ends_at_total(repo, capsys, with_prompt):
    """Across sliding windows (and after a prompt) progress counts the steps of the whole generation: 1, 2, ...
    up to a total fixed in advance, never beyond (it restarted at each window's offset, overshooting the total)."""
    model = _model(repo)
    rate, delay, hop = model.frame_rate, max(model.lm.cfg.delays), _hop(model)
    model.max_duration = seconds(15, rate)
    model.set_generation_params(duration=seconds(35, rate), extend_stride=seconds(10, rate), use_sampling=False)
    prompt = 0.2 * torch.sin(torch.arange(8 * hop) / 9.0)[None, None]  # 8 frames

    def run(progress: bool = False) -> None:
        if with_prompt:
            model.generate_continuation(prompt, model.sample_rate, ["rock"], progress=progress)
        else:
            model.generate(["rock"], progress=progress)

    # Windows of 15, 10 and 10 new frames; after the prompt's 8 frames (read in, not decoded) 7, 10 and 10.
    steps = (27 if with_prompt else 35) + 3 * delay
    reports = []
    model.set_custom_progress_callback(lambda done, total: reports.append((done, total)))
    run()
    assert reports == [(done, steps) for done in range(1, steps + 1)]
    model.set_custom_progress_callback(None)
    capsys.readouterr()
    run(progress=True)  # the built-in printout: "done / total" lines, the last one ended by a newline
    err = capsys.readouterr().err
    assert err.endswith("\n")
    shown = [tuple(map(int, part.split("/"))) for part in err.replace("\n", "\r").split("\r") if part.strip()]
    assert shown == [(done, steps) for done in range(1, steps + 1)]


def test_continuation_of_a_prompt_longer_than_max_duration(repo, monkeypatch):
    """A prompt longer than the model's window is kept whole; generation goes on in sliding windows whose first
    context is the prompt's last max_duration - extend_stride (it failed: 'longer than the generation duration')."""
    model = _model(repo)
    rate, hop = model.frame_rate, _hop(model)
    window, stride, prompt_frames, frames = 15, 10, 25, 40
    model.max_duration = seconds(window, rate)
    model.set_generation_params(duration=seconds(frames, rate), extend_stride=seconds(stride, rate),
                                use_sampling=False)
    prompt = 0.3 * torch.sin(torch.arange(prompt_frames * hop) / 11.0)[None, None]
    with torch.inference_mode():
        expected, _ = model.compression_model.encode(prompt)
    assert expected.shape[-1] == prompt_frames
    contexts = _spy_windows(monkeypatch)
    wav, tokens = model.generate_continuation(prompt, model.sample_rate, ["calm jazz"], return_tokens=True)
    assert wav.shape == (1, model.audio_channels, frames * hop) and tokens.shape[-1] == frames
    assert torch.equal(tokens[..., :prompt_frames], expected)  # the whole prompt starts the output
    # First window at frame 20: the prompt's last 5 frames as context, 10 new frames; then one at 30 (5 new).
    context = window - stride
    assert [c.shape[-1] for c in contexts] == [context, context]
    assert torch.equal(contexts[0], expected[..., prompt_frames - context:])
    assert torch.equal(contexts[1], tokens[..., 30:30 + context])

    # As long as the duration: nothing to generate, the prompt comes back; longer than it: a one-line error.
    model.set_generation_params(duration=seconds(prompt_frames, rate), extend_stride=seconds(stride, rate))
    assert torch.equal(model.generate_continuation(prompt, model.sample_rate, return_tokens=True)[1], expected)
    model.set_generation_params(duration=seconds(prompt_frames - 1, rate), extend_stride=seconds(stride, rate))
    with pytest.raises(WavecraftError, match="longer than the requested duration") as excinfo:
        model.generate_continuation(prompt, model.sample_rate)
    assert "\n" not in str(excinfo.value)


def test_float16_on_cpu_warns_once(repo, caplog):
    """float16 on a CPU is slow on most CPUs (no float16 arithmetic): one line says so, and what to use."""
    with caplog.at_level("WARNING", logger="wavecraft.models.genmodel"):
        MusicGen.get_pretrained(repo, device="cpu", dtype="float16")
    messages = [r.getMessage() for r in caplog.records if r.name == "wavecraft.models.genmodel"]
    assert len(messages) == 1 and "float16 on CPU" in messages[0] and "float32" in messages[0]
    assert "\n" not in messages[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="wavecraft.models.genmodel"):
        MusicGen.get_pretrained(repo, device="cpu", dtype="bfloat16")
    assert not [r for r in caplog.records if r.name == "wavecraft.models.genmodel"]
