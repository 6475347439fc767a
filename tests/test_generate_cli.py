"""`wavecraft generate` / `wavecraft sfx` end to end on tiny checkpoints, and AudioGen loading."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import golden_meta, golden_repo, seconds
from textenc import tiny_t5
from wavecraft import AudioGen
from wavecraft.checkpoints.safe_load import load_torch_file
from wavecraft.cli import main
from wavecraft.codec import CodecConfig, EnCodec


def _save_t5(folder, d_model):
    tokenizer, encoder = tiny_t5(d_model)
    tokenizer.save_pretrained(folder)
    encoder.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def music_repo(golden, tmp_path_factory):
    folder = tmp_path_factory.mktemp("musicgen")
    golden_repo(golden, "musicgen", folder)
    return folder


PROJ = "condition_provider.conditioners.description.output_proj.weight"


@pytest.fixture(scope="module")
def codec_cfg(golden):
    """The golden codec's sizes (``sample_rate``, ``hop_length``, ...): what the musicgen repo generates with."""
    return golden_meta(golden, "encodec")["config"]


@pytest.fixture(scope="module")
def t5_base(golden, tmp_path_factory):
    """A tiny T5 as wide as the golden checkpoint's T5 (the input width of its projection)."""
    width = load_torch_file(golden / "musicgen" / "state_dict.bin")["best_state"][PROJ].shape[1]
    return _save_t5(tmp_path_factory.mktemp("t5-base"), width)


@pytest.fixture(scope="module")
def sfx_repo(golden, tmp_path_factory):
    """An AudioGen-shaped checkpoint: T5-large projection, 10 s windows, 16 kHz codec (hop 320)."""
    folder = tmp_path_factory.mktemp("audiogen")
    package = load_torch_file(golden / "musicgen" / "state_dict.bin")
    state = dict(package["best_state"])
    state[PROJ] = torch.randn(state[PROJ].shape[0], 1024) * 0.05  # T5-large is 1024 wide
    package["best_state"] = state
    t5_name = golden_meta(golden, "musicgen")["config"]["t5_name"]
    xp_cfg, n = re.subn(rf"(\n\s+name: ){re.escape(t5_name)}\n", r"\g<1>t5-large\n", package["xp.cfg"])
    xp_cfg, m = re.subn(r"(\ndataset:\n(?:  .*\n)*?  segment_duration: )\S+\n", r"\g<1>10\n", xp_cfg)
    assert n == m == 1
    package["xp.cfg"] = xp_cfg
    package.pop("version", None)  # the first exports had no version key
    torch.save(package, folder / "state_dict.bin")
    codec = EnCodec(CodecConfig(sample_rate=16000, ratios=(8, 5, 4, 2), n_filters=4, dimension=32, bins=128,
                                lstm_layers=1))
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer._codebook.embed.normal_()
    codec.save_pretrained(folder)
    return folder


def test_generate_two_prompts(music_repo, codec_cfg, t5_base, tmp_path):
    out = tmp_path / "song.wav"
    frames = 15
    code = main(["generate", "slow piano waltz", "upbeat rock", "--model", str(music_repo), "--text-encoder",
                 t5_base, "--duration", repr(seconds(frames, codec_cfg["frame_rate"])), "--seed", "1", "-o", str(out),
                 "--no-progress"])
    assert code == 0
    for i in range(2):
        data, sr = sf.read(tmp_path / f"song_{i}.wav")
        assert sr == codec_cfg["sample_rate"] and data.shape[0] == frames * codec_cfg["hop_length"]
        assert np.abs(data).max() > 0


def test_generate_prompts_file_continuation_and_format(music_repo, codec_cfg, t5_base, tmp_path):
    (tmp_path / "prompts.txt").write_text("calm jazz\n\n")
    sf.write(tmp_path / "start.wav", 0.2 * np.sin(np.arange(3200) / 7.0), 32000)  # 0.1 s at 32 kHz: any rate
    frames = 20
    code = main(["generate", "--prompts-file", str(tmp_path / "prompts.txt"), "--model", str(music_repo),
                 "--text-encoder", t5_base, "--duration", repr(seconds(frames, codec_cfg["frame_rate"])),
                 "--continue-from", str(tmp_path / "start.wav"), "-o", str(tmp_path / "cont"), "--format", "flac",
                 "--greedy", "--no-progress"])
    assert code == 0
    data, sr = sf.read(tmp_path / "cont.flac")
    assert data.shape[0] == frames * codec_cfg["hop_length"]


def test_sfx_with_audiogen_checkpoint(sfx_repo, tmp_path):
    model = AudioGen.get_pretrained(sfx_repo, device="cpu")
    assert (model.sample_rate, model.frame_rate, model.duration, model.max_duration) == (16000, 50, 5, 10)
    t5_large = _save_t5(tmp_path / "t5-large", 1024)
    code = main(["sfx", "dog barking", "--model", str(sfx_repo), "--text-encoder", t5_large, "--duration", "0.2",
                 "-o", str(tmp_path / "bark.wav"), "--no-progress"])
    assert code == 0
    data, sr = sf.read(tmp_path / "bark.wav")
    assert sr == 16000 and data.shape == (3200,)


@pytest.mark.parametrize("extra, message", [
    ([], "no prompt"),
    (["x", "--duration", "0"], "duration"),
    (["x", "--duration", "nan"], "duration"),
    (["x", "--extend-stride", "40"], "extend_stride"),
    (["x", "--continue-from", "/nonexistent.wav"], "not found"),
    (["x", "--format", "wav", "-o", "{tmp}/a.xyz"], None),
])
def test_generate_bad_input(music_repo, t5_base, tmp_path, capsys, extra, message):
    extra = [a.format(tmp=tmp_path) for a in extra]
    code = main(["generate", *extra, "--model", str(music_repo), "--text-encoder", t5_base, "--no-progress",
                 *([] if "-o" in extra else ["-o", str(tmp_path / "o.wav")])])
    err = capsys.readouterr().err
    if message is None:  # an explicit --format wins over an odd suffix
        assert code == 0
        assert sf.info(tmp_path / "a.xyz.wav").format == "WAV"
        return
    assert code == 1 and err.startswith("wavecraft: error:") and err.count("\n") == 1 and message in err, err
    assert not list(tmp_path.iterdir())


def test_batch_size_keeps_order(music_repo, t5_base, tmp_path):
    """Prompts in batches of 2 give the same clips, in the same order, as one batch (greedy decoding).

    The prompts have equal token counts: AudioCraft-layout models attend to text padding, so a different batch
    composition could otherwise legitimately change the result. Audio may differ by float noise of batched convs.
    """
    prompts = ["slow piano waltz", "upbeat rock beat", "calm jazz drums"]
    common = ["--model", str(music_repo), "--text-encoder", t5_base, "--duration", "0.2", "--greedy", "--no-progress"]
    assert main(["generate", *prompts, *common, "-o", str(tmp_path / "one.wav")]) == 0
    assert main(["generate", *prompts, *common, "--batch-size", "2", "-o", str(tmp_path / "two.wav")]) == 0
    for i in range(3):
        a, _ = sf.read(tmp_path / f"one_{i}.wav")
        b, _ = sf.read(tmp_path / f"two_{i}.wav")
        np.testing.assert_allclose(a, b, atol=2e-3)
    assert main(["generate", "x", *common, "--batch-size", "0", "-o", str(tmp_path / "z.wav")]) == 1


def test_progress_real_time_factor_counts_steps_since_the_clock_started(monkeypatch):
    """The bar's clock starts at the first report: its steps are not counted over the microseconds since."""
    from types import SimpleNamespace

    from wavecraft.models import progress

    clock = iter([10.0, 10.0 + 1e-6, 12.0])
    monkeypatch.setattr(progress, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    bar = progress.GenerationProgress(frame_rate=50.0)
    bar(1, 100)  # the clock starts at 10.0: nothing to rate yet
    assert not bar.bar.postfix
    bar(51, 100)  # 50 steps, 1 s of audio, in 2 s
    assert bar.bar.postfix == "0.50x real time"
    bar.close()


def test_progress_bar_starts_over_for_the_next_batch_and_ends_full():
    """A report below the last one is the next generation (the next --batch-size batch): a fresh bar, not one that
    jumps back; each bar ends at its total."""
    from wavecraft.models.progress import GenerationProgress

    bar = GenerationProgress(frame_rate=50.0)
    for done in range(1, 11):
        bar(done, 10)
    first = bar.bar
    assert first.n == first.total == 10
    bar(1, 10)
    assert bar.bar is not first and bar.bar.n == 1 and first.disable  # closed
    bar.close()


def test_continue_a_recording_longer_than_the_shipped_model_window(tmp_path, capsys):
    """`--continue-from` a 12 s recording with `--duration 16` on the shipped model (6 s windows): 16 s that start
    with the whole recording (it failed: 'prompt of 12.00 s is longer than the generation duration (6 s)')."""
    from wavecraft import MusicGen

    model = MusicGen.get_pretrained(device="cpu")
    assert model.max_duration < 12
    rate = model.sample_rate
    t = np.arange(12 * rate) / rate
    sf.write(tmp_path / "song.wav", 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2, rate)
    out = tmp_path / "more.wav"
    assert main(["generate", "a gentle piano waltz", "--continue-from", str(tmp_path / "song.wav"), "--duration",
                 "16", "--seed", "0", "-o", str(out)]) == 0
    assert "after the prompt" in capsys.readouterr().out
    assert sf.info(out).frames == 16 * rate

    code = main(["generate", "a gentle piano waltz", "--continue-from", str(tmp_path / "song.wav"), "--duration",
                 "10", "-o", str(tmp_path / "short.wav"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "prompt of 12.00 s is longer than the requested duration (10 s)" in err
    assert not (tmp_path / "short.wav").exists()
