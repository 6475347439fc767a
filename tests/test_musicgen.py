"""MusicGen / AudioGen model API on AudioCraft-format checkpoints (golden tiny weights, stand-in T5)."""

from __future__ import annotations

import pytest
import torch

import wavecraft.models.genmodel as genmodel
from conftest import golden_repo
from textenc import tiny_t5
from wavecraft import MusicGen
from wavecraft.errors import WavecraftError


@pytest.fixture(scope="module")
def repo(golden, tmp_path_factory):
    """A local 'hub repo' folder: LM state_dict.bin + codec compression_state_dict.bin."""
    folder = tmp_path_factory.mktemp("musicgen-tiny")
    golden_repo(golden, "musicgen", folder)
    return folder


def _model(path, **kwargs) -> MusicGen:
    model = MusicGen.get_pretrained(path, device="cpu")
    tokenizer, encoder = tiny_t5()
    model.bundle.conditioners["description"].set_encoder(tokenizer, encoder)
    if kwargs:
        model.max_duration = kwargs["max_duration"]
    return model


def test_defaults_and_shapes(repo):
    model = _model(repo)
    assert (model.sample_rate, model.frame_rate, model.audio_channels) == (32000, 50, 1)
    assert model.duration == 15 and model.max_duration == 30
    model.set_generation_params(duration=0.5, seed=0)
    wav, tokens = model.generate(["slow piano waltz", "upbeat rock with drums"], return_tokens=True)
    assert wav.shape == (2, 1, 16000) and tokens.shape == (2, 4, 25)
    assert model.generate_unconditional(3).shape == (3, 1, 16000)


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
    model.set_generation_params(duration=0.6, use_sampling=False)
    prompt = torch.sin(torch.arange(4800) / 10.0)[None, None] * 0.3  # 0.3 s at 16 kHz -> resampled to 32 kHz
    wav, tokens = model.generate_continuation(prompt, 16000, ["bright synth pop"], return_tokens=True)
    assert wav.shape == (1, 1, 19200) and tokens.shape == (1, 4, 30)
    from wavecraft.audio import convert_audio
    with torch.inference_mode():
        expected, _ = model.compression_model.encode(convert_audio(prompt, 16000, 32000, 1))
    assert torch.equal(tokens[..., :expected.shape[-1]], expected)


def test_two_step_uses_stored_coefficient(repo):
    model = _model(repo)
    model.set_generation_params(duration=0.3, use_sampling=False, two_step_cfg=True, cfg_coef=5.0)
    a = model.generate(["sad strings"], return_tokens=True)[1]
    model.set_generation_params(duration=0.3, use_sampling=False, two_step_cfg=True, cfg_coef=3.0)
    assert torch.equal(a, model.generate(["sad strings"], return_tokens=True)[1])


def test_long_form_windows(repo, monkeypatch):
    model = _model(repo, max_duration=1.0)
    calls = []
    real = genmodel.generate

    def spy(lm, cond, max_gen_len, **kw):
        prompt = kw.get("prompt")
        calls.append((0 if prompt is None else prompt.shape[-1], max_gen_len))
        return real(lm, cond, max_gen_len, **kw)

    monkeypatch.setattr(genmodel, "generate", spy)
    progress = []
    model.set_custom_progress_callback(lambda done, total: progress.append((done, total)))
    model.set_generation_params(duration=2.5, extend_stride=0.5, use_sampling=False)
    wav, tokens = model.generate(["rock"], return_tokens=True)
    assert tokens.shape == (1, 4, 125) and wav.shape == (1, 1, 80000)
    # windows of 1 s (50 frames); each keeps the last 0.5 s (25 frames) as prompt
    assert calls == [(0, 50), (25, 50), (25, 50), (25, 50)]
    assert progress[-1][1] == 125


def test_stereo_checkpoint(golden, tmp_path):
    golden_repo(golden, "stereo", tmp_path)
    model = _model(tmp_path)
    model.set_generation_params(duration=0.4)
    assert model.audio_channels == 2
    assert model.generate(["warm bass"]).shape == (1, 2, 12800)


@pytest.mark.parametrize("call, message", [
    (lambda m: m.generate([]), "empty"),
    (lambda m: m.generate("a string"), "list"),
    (lambda m: m.generate([3]), "strings"),
    (lambda m: m.set_generation_params(duration=0), "duration"),
    (lambda m: m.set_generation_params(duration=float("nan")), "duration"),
    (lambda m: m.set_generation_params(extend_stride=30), "extend_stride"),
    (lambda m: m.generate_continuation(torch.zeros(1, 1, 100), 0), "sample_rate"),
    (lambda m: m.generate_continuation(torch.zeros(1, 1, 32000 * 20), 32000), "longer"),
    (lambda m: m.generate_continuation(torch.zeros(1, 1, 3200), 32000, ["a", "b"]), "descriptions"),
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
    assert again.audio_channels == 2
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
