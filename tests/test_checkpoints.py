"""Checkpoint loading: layouts, safety, clear errors for bad files, hub cache resolution."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import golden_meta
from wavecraft.checkpoints.safe_load import load_torch_file
from wavecraft.checkpoints.xp_config import parse_xp_config, section
from wavecraft.codec import EnCodec
from wavecraft.errors import CheckpointError, UnsafeCheckpointError


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


@pytest.fixture(scope="module")
def golden_package(golden):
    return load_torch_file(golden / "encodec" / "compression_state_dict.bin")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"best_state": {}, "xp.cfg": "", "payload": _Exploit(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as excinfo:
        EnCodec.from_pretrained(path)
    assert "refused" in _one_line(excinfo)
    assert not marker.exists()


def test_config_not_matching_weights(golden, golden_package, tmp_path):
    n_filters = golden_meta(golden, "encodec")["config"]["n_filters"]
    bad = dict(golden_package)
    bad["xp.cfg"] = golden_package["xp.cfg"].replace(f"n_filters: {n_filters}", f"n_filters: {2 * n_filters}")
    assert bad["xp.cfg"] != golden_package["xp.cfg"]
    path = tmp_path / "compression_state_dict.bin"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as excinfo:
        EnCodec.from_pretrained(path)
    assert "do not match" in _one_line(excinfo)


def test_missing_weight_is_reported(golden_package, tmp_path):
    bad = dict(golden_package)
    dropped = [k for k in golden_package["best_state"] if k.startswith("decoder.")][-1]  # e.g. the last conv's bias
    bad["best_state"] = {k: v for k, v in golden_package["best_state"].items() if k != dropped}
    path = tmp_path / "c.bin"
    torch.save(bad, path)
    with pytest.raises(CheckpointError) as excinfo:
        EnCodec.from_pretrained(path)
    assert "missing" in _one_line(excinfo)


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 10])
def test_empty_or_corrupt_file(tmp_path, content):
    path = tmp_path / "compression_state_dict.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as excinfo:
        EnCodec.from_pretrained(path)
    _one_line(excinfo)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError) as excinfo:
        EnCodec.from_pretrained(tmp_path / "nope" / "model.bin")
    assert "not found" in _one_line(excinfo)


def test_directory_without_codec(tmp_path):
    with pytest.raises(CheckpointError) as excinfo:
        EnCodec.from_pretrained(tmp_path)
    _one_line(excinfo)


def test_save_pretrained_round_trip(golden, tmp_path):
    model = EnCodec.from_pretrained(golden / "encodec" / "compression_state_dict.bin")
    model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]
    again = EnCodec.from_pretrained(tmp_path / "saved")
    assert again.cfg == model.cfg
    wav = torch.randn(1, model.channels, 7000) * 0.2  # any length
    with torch.inference_mode():
        assert torch.equal(again.encode(wav)[0], model.encode(wav)[0])
    # the safetensors file alone (config.json beside it) works too
    assert EnCodec.from_pretrained(tmp_path / "saved" / "model.safetensors").cfg == model.cfg


def test_pointer_package(golden, tmp_path):
    model = EnCodec.from_pretrained(golden / "encodec" / "compression_state_dict.bin")
    model.save_pretrained(tmp_path / "target")
    path = tmp_path / "compression_state_dict.bin"
    torch.save({"pretrained": str(tmp_path / "target"), "exported": True, "version": "1"}, path)
    assert EnCodec.from_pretrained(path).cfg == model.cfg


def test_training_checkpoint_layout(golden_package, tmp_path):
    package = {"xp.cfg": golden_package["xp.cfg"], "best_state": {"model": golden_package["best_state"]}}
    torch.save(package, tmp_path / "checkpoint.th")
    EnCodec.from_pretrained(tmp_path / "checkpoint.th")


def test_xp_config_resolves_only_needed_sections():
    root = parse_xp_config(textwrap.dedent("""
        sample_rate: 16000
        dora:
          dir: /checkpoint/${oc.env:USER}/x
        encodec:
          sample_rate: ${sample_rate}
          causal: false
          name: sr=${sample_rate}
        seanet:
          causal: ${encodec.causal}
    """))
    assert section(root, "encodec") == {"sample_rate": 16000, "causal": False, "name": "sr=16000"}
    assert section(root, "seanet") == {"causal": False}
    with pytest.raises(CheckpointError):
        section(root, "dora")


def _run_offline(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **env_extra}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_hub_name_offline_uses_cache(golden, tmp_path):
    """A repo id resolves from the HF cache layout under $WAVECRAFT_CACHE_DIR with HF_HUB_OFFLINE=1."""
    snapshot = tmp_path / "cache" / "models--facebook--musicgen-tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("abc123")
    (snapshot / "compression_state_dict.bin").write_bytes(
        (golden / "encodec" / "compression_state_dict.bin").read_bytes())
    code = ("from wavecraft.codec import EnCodec; m = EnCodec.from_pretrained('facebook/musicgen-tiny'); "
            "print(m.cfg.n_filters, m.name_or_path)")
    result = _run_offline(code, {"WAVECRAFT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    n_filters = golden_meta(golden, "encodec")["config"]["n_filters"]
    assert result.stdout.split() == [str(n_filters), "facebook/musicgen-tiny"]


def test_hub_name_offline_not_cached(tmp_path):
    code = ("from wavecraft.codec import EnCodec\n"
            "try:\n    EnCodec.from_pretrained('facebook/encodec_32khz')\n"
            "except Exception as e:\n    print(type(e).__name__, '|', e)")
    result = _run_offline(code, {"WAVECRAFT_CACHE_DIR": str(tmp_path / "empty")})
    assert result.stdout.startswith("CheckpointError |"), result.stdout + result.stderr
    assert "offline" in result.stdout and result.stdout.count("\n") == 1


def test_saved_files_follow_the_umask(tmp_path):
    """Exported model.safetensors was 0600 while config.json was 0644 (issue 21)."""
    import os
    import stat

    from wavecraft.codec import EnCodec
    from wavecraft.codec.config import CodecConfig

    model = EnCodec(CodecConfig(dimension=8, n_filters=2, ratios=(2, 2), n_q=2, bins=16, lstm_layers=0))
    old = os.umask(0o027)
    try:
        folder = model.save_pretrained(tmp_path / "codec")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {"model.safetensors": 0o640, "config.json": 0o640}
