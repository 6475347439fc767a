"""Bad arguments, corrupt files and failing disks give one-line WavecraftErrors, bounded memory and no leftovers.

Memory checks run in a child process and read its peak RSS (VmHWM) against fixed budgets.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from wavecraft.audio import audio_read, audio_write, checks, convert_audio, io, normalize_audio, normalize_loudness
from wavecraft.errors import AudioFileError, InvalidAudioError, WavecraftError

SR = 16000
NAN, INF = float("nan"), float("inf")
# A child that imports torch + wavecraft.audio peaks near 0.3 GiB; these budgets leave room for that.
CHILD_BUDGET_MB = 1024


def tone(seconds: float = 0.25, sr: int = SR, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * sr)) / sr
    return (0.5 * torch.sin(2 * math.pi * 440 * t)).repeat(channels, 1)


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def one_line(error: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(error.value)
    assert message and "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def run_child(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; it may print one JSON line (its last stdout line) for the test."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


PEAK_RSS = """
def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


@pytest.fixture
def wav_file(tmp_path: Path) -> Path:
    return audio_write(tmp_path / "clip", tone(), SR)


# ------------------------------------------------------------------------------------------------- audio_read


def test_huge_padded_read_is_refused_with_bounded_memory(wav_file: Path) -> None:
    # Before: duration=1e5 allocated 6.4 GB of zeros, 1e12 died in torch's allocator with a RuntimeError.
    code = PEAK_RSS + f"""
import json
from wavecraft.audio import audio_read
from wavecraft.errors import WavecraftError
out = {{}}
for duration in (1e5, 1e12):
    try:
        audio_read({str(wav_file)!r}, duration=duration, pad=True)
        out[str(duration)] = "read"
    except WavecraftError as e:
        out[str(duration)] = str(e)
out["peak_mb"] = peak_mb()
print(json.dumps(out))
"""
    result = run_child(code)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    for duration in ("100000.0", "1000000000000.0"):
        assert "MAX_PAD_SECONDS" in out[duration] and "\n" not in out[duration]
    assert out["peak_mb"] < CHILD_BUDGET_MB


def test_pad_limit_is_configurable(wav_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert audio_read(wav_file, duration=2.0, pad=True)[0].shape == (1, 2 * SR)
    monkeypatch.setattr(io, "MAX_PAD_SECONDS", 1.0)
    with pytest.raises(AudioFileError) as e:
        audio_read(wav_file, duration=2.0, pad=True)
    one_line(e, "pad", "clip.wav")
    # No padding needed: never refused, whatever the limit.
    assert audio_read(wav_file, duration=0.1, pad=True)[0].shape == (1, SR // 10)


def test_padding_over_available_memory_is_refused(wav_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checks, "available_memory", lambda: 1 << 20)
    with pytest.raises(AudioFileError) as e:
        audio_read(wav_file, duration=60.0, pad=True)
    one_line(e, "memory", "clip.wav")


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"seek_time": NAN}, "NaN"),
    ({"seek_time": INF}, "finite"),
    ({"seek_time": -1.0}, ">= 0"),
    ({"seek_time": "x"}, "seek_time"),
    ({"seek_time": None}, "seek_time"),
    ({"seek_time": True}, "seek_time"),
    ({"duration": NAN}, "NaN"),
    ({"duration": "1"}, "duration"),
    ({"duration": None}, "duration"),
    ({"duration": False}, "duration"),
    ({"duration": 1.0, "pad": "yes"}, "pad"),
    ({"duration": 1.0, "pad": None}, "pad"),
    ({"duration": 1.0, "pad": 2}, "pad"),
])
def test_bad_read_arguments(wav_file: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(AudioFileError) as e:
        audio_read(wav_file, **kwargs)
    one_line(e, fragment)


def test_absurd_times_do_not_overflow(wav_file: Path) -> None:
    # Before: seek_time=1e308 overflowed int(seek_time * sample_rate) (OverflowError).
    wav, _ = audio_read(wav_file, seek_time=1e308, duration=0.5, pad=True)
    assert wav.shape == (1, SR // 2) and not wav.any()
    with pytest.raises(AudioFileError) as e:
        audio_read(wav_file, seek_time=1e308)
    one_line(e, "beyond the end")
    assert audio_read(wav_file, duration=1e308)[0].shape == (1, tone().shape[1])


@pytest.mark.parametrize("path", ["a\0b.wav", b"bytes.wav", None, 3])
def test_bad_read_paths(path: object) -> None:
    with pytest.raises(AudioFileError) as e:
        audio_read(path)  # type: ignore[arg-type]
    one_line(e)


def test_lying_flac_header_reads_real_samples_with_bounded_memory(tmp_path: Path) -> None:
    """STREAMINFO claims 2**36 frames: before, libsndfile's frame count made numpy allocate 256 GiB (MemoryError)."""
    good = audio_write(tmp_path / "clip", tone(1.0), SR, format="flac")
    data = bytearray(good.read_bytes())
    total = 8 + 13  # 'fLaC', block header, then 36 bits of total samples from the low nibble of byte 13
    data[total] |= 0x0F
    data[total + 1:total + 5] = b"\xff\xff\xff\xff"
    liar = tmp_path / "liar.flac"
    liar.write_bytes(bytes(data))
    code = PEAK_RSS + f"""
import json
from wavecraft.audio import audio_read
wav, sr = audio_read({str(liar)!r})
print(json.dumps({{"shape": list(wav.shape), "peak_mb": peak_mb()}}))
"""
    result = run_child(code)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["shape"] == [1, SR] and out["peak_mb"] < CHILD_BUDGET_MB


# ------------------------------------------------------------------------------------------------ audio_write


BAD_WRITES = [
    pytest.param({"sample_rate": 10**12}, "sample_rate", id="rate-1e12"),  # was OverflowError from cffi
    pytest.param({"sample_rate": 2**31}, "sample_rate", id="rate-2**31"),
    pytest.param({"sample_rate": -8000}, "sample_rate", id="rate-negative"),
    pytest.param({"sample_rate": NAN}, "sample_rate", id="rate-nan"),
    pytest.param({"sample_rate": 1.5}, "sample_rate", id="rate-float"),
    pytest.param({"sample_rate": "16000"}, "sample_rate", id="rate-str"),
    pytest.param({"format": "mp3", "mp3_rate": 10**12}, "mp3_rate", id="mp3-rate-huge"),  # was silently 320
    pytest.param({"format": "mp3", "mp3_rate": 0}, "mp3_rate", id="mp3-rate-0"),
    pytest.param({"format": "mp3", "mp3_rate": NAN}, "mp3_rate", id="mp3-rate-nan"),
    pytest.param({"format": "mp3", "mp3_rate": "x"}, "mp3_rate", id="mp3-rate-str"),
    pytest.param({"mp3_rate": -1}, "mp3_rate", id="mp3-rate-unused-still-checked"),
    pytest.param({"format": "ogg", "ogg_rate": 10**12}, "ogg_rate", id="ogg-rate-huge"),
    pytest.param({"format": "ogg", "ogg_rate": 1}, "ogg_rate", id="ogg-rate-1"),
    pytest.param({"format": "ogg", "ogg_rate": INF}, "ogg_rate", id="ogg-rate-inf"),
    pytest.param({"format": "ogg", "ogg_rate": True}, "ogg_rate", id="ogg-rate-bool"),
    pytest.param({"format": "ogg", "wav": torch.zeros(256, 100)}, "255 channels", id="ogg-256ch"),  # was SIGSEGV
    pytest.param({"format": "wav", "wav": torch.zeros(1025, 10)}, "1024 channels", id="wav-1025ch"),
    pytest.param({"format": "flac", "wav": torch.zeros(9, 10)}, "8 channels", id="flac-9ch"),
    pytest.param({"format": "mp3", "wav": torch.zeros(3, 10)}, "2 channels", id="mp3-3ch"),
    pytest.param({"wav": torch.zeros(1, 0)}, "no samples", id="0-samples"),
    pytest.param({"wav": torch.full((1, 10), NAN)}, "NaN", id="nan-wav"),
    pytest.param({"wav": torch.zeros(1, 10, dtype=torch.complex64)}, "floating-point", id="complex-wav"),
    pytest.param({"wav": torch.zeros(1, 10, device="meta")}, "dense", id="meta-wav"),
    pytest.param({"wav": np.zeros((1, 10))}, "torch.Tensor", id="numpy-wav"),
    pytest.param({"strategy": "loudness", "loudness_headroom_db": NAN}, "loudness_headroom_db", id="loud-nan"),
    pytest.param({"strategy": "loudness", "loudness_headroom_db": 1e12}, "loudness_headroom_db", id="loud-huge"),
    pytest.param({"loudness_headroom_db": INF}, "loudness_headroom_db", id="loud-unused-inf"),
    pytest.param({"peak_clip_headroom_db": "x"}, "peak_clip_headroom_db", id="peak-str"),
    pytest.param({"peak_clip_headroom_db": None}, "peak_clip_headroom_db", id="peak-none"),
    pytest.param({"peak_clip_headroom_db": 1e12}, "peak_clip_headroom_db", id="peak-huge"),
    pytest.param({"strategy": "rms", "rms_headroom_db": -INF}, "rms_headroom_db", id="rms-inf"),
    pytest.param({"strategy": "PEAK"}, "strategy", id="strategy-case"),
    pytest.param({"strategy": None}, "strategy", id="strategy-none"),
    pytest.param({"format": None}, "format", id="format-none"),
    pytest.param({"normalize": "no"}, "normalize", id="normalize-str"),
    pytest.param({"loudness_compressor": "yes"}, "loudness_compressor", id="compressor-str"),
    pytest.param({"log_clipping": 0.5}, "log_clipping", id="log-clipping-float"),
    pytest.param({"make_parent_dir": "x"}, "make_parent_dir", id="make-parent-str"),
    pytest.param({"add_suffix": None}, "add_suffix", id="add-suffix-none"),
]


@pytest.mark.parametrize(("kwargs", "fragment"), BAD_WRITES)
def test_bad_write_arguments(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    kwargs = {"wav": tone(0.1), "sample_rate": SR, **kwargs}
    (tmp_path / "keep.txt").write_text("keep")
    with pytest.raises(InvalidAudioError) as e:
        audio_write(tmp_path / "out", **kwargs)
    one_line(e, fragment)
    assert listing(tmp_path) == ["keep.txt"]


def test_loudness_nan_headroom_no_longer_writes_minus_one(tmp_path: Path) -> None:
    good = audio_write(tmp_path / "out", tone(), SR)
    content = good.read_bytes()
    with pytest.raises(InvalidAudioError):
        audio_write(tmp_path / "out", tone(), SR, strategy="loudness", loudness_headroom_db=NAN)
    assert good.read_bytes() == content and listing(tmp_path) == ["out.wav"]


def test_wav_over_riff_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from wavecraft.audio import _sndfile

    monkeypatch.setattr(_sndfile, "WAV_MAX_DATA_BYTES", 1000)  # stands in for 4 GiB
    with pytest.raises(InvalidAudioError) as e:
        audio_write(tmp_path / "out", tone(0.1), SR)
    one_line(e, "4 GiB", "flac")
    assert audio_write(tmp_path / "out", tone(0.1), SR, format="flac").exists()
    assert listing(tmp_path) == ["out.flac"]


def test_huge_legal_sample_rate_writes(tmp_path: Path) -> None:
    path = audio_write(tmp_path / "out", tone(0.01), checks.MAX_SAMPLE_RATE)
    assert audio_read(path)[1] == checks.MAX_SAMPLE_RATE


@pytest.mark.parametrize("stem", ["nul\0name", b"bytes\0name"])
def test_nul_in_output_name(tmp_path: Path, stem: object) -> None:
    name = stem if isinstance(stem, str) else stem.decode()
    with pytest.raises(InvalidAudioError) as e:
        audio_write(os.path.join(os.fsencode(tmp_path), stem) if isinstance(stem, bytes) else tmp_path / name,
                    tone(0.1), SR)
    one_line(e, "NUL", "\\x00")
    assert listing(tmp_path) == []


def test_bytes_stem_is_a_path(tmp_path: Path) -> None:
    path = audio_write(os.fsencode(tmp_path / "b"), tone(0.1), SR)
    assert path == tmp_path / "b.wav" and listing(tmp_path) == ["b.wav"]


def test_bad_output_paths(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir.wav").mkdir()
    before = listing(tmp_path)
    cases = [
        (tmp_path / "dir", "directory"),
        (tmp_path / "file" / "sub" / "out", "not a directory"),
        (tmp_path / ("n" * 300), "file name too long"),  # was a raw OSError (ENAMETOOLONG)
    ]
    for stem, fragment in cases:
        with pytest.raises(AudioFileError) as e:
            audio_write(stem, tone(0.1), SR)
        one_line(e, fragment, str(tmp_path))
    with pytest.raises(AudioFileError) as e:
        audio_write(tmp_path / "missing" / "out", tone(0.1), SR, make_parent_dir=False)
    one_line(e, "does not exist")
    assert listing(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_unwritable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(AudioFileError) as e:
            audio_write(locked / "out", tone(0.1), SR)
        one_line(e, "permission denied", "locked")
        assert listing(locked) == []
    finally:
        locked.chmod(0o700)


def test_file_size_limit_says_file_too_large(tmp_path: Path) -> None:
    """EFBIG through RLIMIT_FSIZE: before, the message was libsndfile's bare 'System error.'."""
    code = f"""
import json, os, resource, signal
from pathlib import Path
import torch
from wavecraft.audio import audio_write
from wavecraft.errors import WavecraftError
folder = Path({str(tmp_path)!r})
wav = torch.rand(2, 3 * 48000) - 0.5  # 3 s of noise: more than 20 kB in every format
good = audio_write(folder / "out", wav[:, :100], 48000)
content = good.read_bytes()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
errors = {{}}
for fmt in ("wav", "flac", "ogg", "mp3"):
    try:
        audio_write(folder / "out", wav, 48000, format=fmt)
        errors[fmt] = None
    except WavecraftError as e:
        errors[fmt] = str(e)
print(json.dumps({{"errors": errors, "kept": good.read_bytes() == content, "files": sorted(os.listdir(folder))}}))
"""
    result = run_child(code)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    for fmt, message in out["errors"].items():
        assert message is not None and "file too large" in message and f"out.{fmt}" in message, message
        assert "\n" not in message
    assert out["kept"] and out["files"] == ["out.wav"]


def test_full_disk_says_no_space_left(tmp_path: Path) -> None:
    """ENOSPC on a tiny tmpfs (needs mount rights; skipped elsewhere, the statvfs fallback is tested below)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        good = audio_write(mnt / "out", tone(0.1), SR)
        content = good.read_bytes()
        for fmt in ("wav", "flac", "ogg", "mp3"):
            with pytest.raises(AudioFileError) as e:
                audio_write(mnt / "out", tone(30.0, channels=2), SR, format=fmt)
            one_line(e, "no space left on device", f"out.{fmt}")
        assert good.read_bytes() == content and listing(mnt) == ["out.wav"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_system_error_without_reason_falls_back_to_free_space(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from wavecraft.audio import _sndfile

    class Full:
        f_bavail, f_frsize, f_favail = 0, 4096, 100

    monkeypatch.setattr(_sndfile, "_handle_reason", lambda f: None)
    monkeypatch.setattr(_sndfile.os, "statvfs", lambda p: Full())
    real_write = _sndfile.sf.SoundFile.write

    def failing_write(self: object, data: np.ndarray) -> None:
        raise _sndfile.sf.LibsndfileError(2)

    monkeypatch.setattr(_sndfile.sf.SoundFile, "write", failing_write)
    with pytest.raises(AudioFileError) as e:
        audio_write(tmp_path / "out", tone(0.1), SR)
    one_line(e, "no space left on device")
    monkeypatch.setattr(_sndfile.sf.SoundFile, "write", real_write)
    assert listing(tmp_path) == []


# ----------------------------------------------------------------------------------- convert / normalize


@pytest.mark.parametrize(("args", "fragment"), [
    ((SR, 0, 1), "to_rate"),
    ((0, SR, 1), "from_rate"),
    ((-1, SR, 1), "from_rate"),
    ((SR, NAN, 1), "to_rate"),
    ((SR, 1.5, 1), "to_rate"),
    ((SR, "x", 1), "to_rate"),
    ((SR, 10**12, 1), "to_rate"),
    ((SR, SR, 0), "to_channels"),
    ((SR, SR, None), "to_channels"),
    ((SR, SR, 2.0), "to_channels"),
])
def test_bad_convert_arguments(args: tuple, fragment: str) -> None:
    with pytest.raises(InvalidAudioError) as e:
        convert_audio(tone(0.1), *args)
    one_line(e, fragment)


def test_convert_output_bounded_by_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: 1 s to 1e9 Hz allocated ~12 GB inside soxr; 1 Hz -> 1 MHz of 1600 samples about 20 GB.
    monkeypatch.setattr(checks, "available_memory", lambda: 1 << 30)
    for args in [(1, 768_000, 1), (SR, SR, 10**9), (SR, 2 * SR, 10**6)]:
        with pytest.raises(InvalidAudioError) as e:
            convert_audio(tone(1.0), *args)
        one_line(e, "memory")
    assert convert_audio(tone(1.0), SR, 2 * SR, 2).shape == (2, 2 * SR)


def test_convert_target_rate_is_capped() -> None:
    # Before: 1 s to 1e9 Hz was accepted when memory allowed (4 GB of output for one second of input).
    for to_rate in (10**9, 768_001):
        with pytest.raises(InvalidAudioError) as e:
            convert_audio(tone(0.01), SR, to_rate, 1)
        one_line(e, "768000 Hz")
    assert convert_audio(tone(0.01), SR, 768_000, 1).shape[-1] == round(0.01 * 768_000)


def test_convert_refuses_nan_before_resampling() -> None:
    wav = tone(0.1)
    wav[0, 5] = NAN
    with pytest.raises(InvalidAudioError) as e:
        convert_audio(wav, SR, 8000, 1)
    one_line(e, "NaN")


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"peak_clip_headroom_db": NAN}, "peak_clip_headroom_db"),
    ({"rms_headroom_db": INF}, "rms_headroom_db"),
    ({"loudness_headroom_db": NAN, "strategy": "loudness", "sample_rate": SR}, "loudness_headroom_db"),
    ({"loudness_headroom_db": -500, "strategy": "loudness", "sample_rate": SR}, "loudness_headroom_db"),
    ({"strategy": "loudness", "sample_rate": 0}, "sample_rate"),
    ({"strategy": "loudness", "sample_rate": 10**12}, "sample_rate"),
    ({"sample_rate": NAN}, "sample_rate"),
    ({"normalize": None}, "normalize"),
    ({"strategy": 3}, "strategy"),
])
def test_bad_normalize_arguments(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidAudioError) as e:
        normalize_audio(tone(0.5), **kwargs)
    one_line(e, fragment)


def test_bad_normalize_loudness_arguments() -> None:
    for kwargs in [{"loudness_headroom_db": NAN}, {"energy_floor": NAN}, {"energy_floor": -1.0},
                   {"loudness_compressor": "x"}, {"sample_rate": 1.5}]:
        with pytest.raises(InvalidAudioError) as e:
            normalize_loudness(tone(0.5), **{"sample_rate": SR, **kwargs})
        one_line(e)


@pytest.mark.parametrize("strategy", ["rms", "loudness"])
def test_absurdly_large_float64_input_normalizes_like_any_other(strategy: str) -> None:
    # Before: squares overflowed float64, so 'rms' returned silence and 'loudness' a clipped +-1 square wave.
    wav = torch.randn(1, SR, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 0.1
    expected = normalize_audio(wav, strategy=strategy, sample_rate=SR)
    torch.testing.assert_close(normalize_audio(wav * 1e300, strategy=strategy, sample_rate=SR), expected)


def test_loudness_at_a_huge_rate_is_bounded() -> None:
    # Before: a 0.4 s gating block at 2**31-1 Hz meant tiling the clip to ~860 M float64 samples (6.9 GB).
    wav = tone(0.001, sr=SR)
    out = normalize_audio(wav, strategy="loudness", sample_rate=checks.MAX_SAMPLE_RATE)
    assert out.shape == wav.shape and bool(torch.isfinite(out).all())


# ------------------------------------------------------------------------------------- corrupt files


CORRUPT_READ = """
import sys
from wavecraft.audio import audio_read
from wavecraft.errors import WavecraftError
for path in sys.argv[1:]:
    try:
        wav, sr = audio_read(path)
        print("read", tuple(wav.shape))
    except WavecraftError as e:
        print(f"wavecraft: error: {e}", file=sys.stderr)
"""


def test_corrupt_mp3_prints_only_our_line(tmp_path: Path) -> None:
    """libmpg123 (inside libsndfile) printed "Note:/warning:" lines from C on fd 2, next to our message."""
    good = audio_write(tmp_path / "good", tone(1.0), SR, format="mp3").read_bytes()
    header_only = tmp_path / "header_only.mp3"  # fails: mpg123 warned "Cannot read next header"
    header_only.write_bytes(good[:200])
    truncated = tmp_path / "truncated.mp3"  # decodes: mpg123 warned "Xing stream size off"
    truncated.write_bytes(good[: len(good) // 3])
    result = subprocess.run([sys.executable, "-c", CORRUPT_READ, str(header_only)], capture_output=True, text=True,
                            timeout=60)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wavecraft: error: cannot decode audio file"), result.stderr
    assert "header_only.mp3" in lines[0]
    result = subprocess.run([sys.executable, "-c", CORRUPT_READ, str(truncated)], capture_output=True, text=True,
                            timeout=60)
    assert result.stderr == "" and result.stdout.startswith("read"), result.stderr


def test_stderr_is_restored_after_reads(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(audio_write(tmp_path / "good", tone(1.0), SR, format="mp3").read_bytes()[:200])
    with pytest.raises(AudioFileError) as e:
        audio_read(bad)
    one_line(e, "bad.mp3")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"
    assert io._stderr_users == 0 and io._stderr_saved_fd is None


def test_concurrent_reads_share_one_redirection(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    good = audio_write(tmp_path / "good", tone(1.0), SR, format="mp3")
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(good.read_bytes()[:200])
    before = os.fstat(2)

    def read(i: int) -> str:
        try:
            audio_read(good if i % 2 else bad)
            return "ok"
        except AudioFileError as e:
            assert "\n" not in str(e)
            return "error"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(read, range(24)))
    assert outcomes.count("ok") == 12 and outcomes.count("error") == 12
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    assert io._stderr_users == 0 and io._stderr_saved_fd is None and io._stderr_sink is None


def test_corrupt_files_fuzz(tmp_path: Path) -> None:
    """Seeded truncations and byte flips of wav/flac/ogg/mp3 (and m4a where PyAV can encode aac): each read or
    probe succeeds or raises a one-line WavecraftError, and nothing reaches stderr."""
    code = PEAK_RSS + f"""
import json, random, sys
from pathlib import Path
import numpy as np
import torch
from wavecraft.audio import audio_info, audio_read, audio_write
from wavecraft.errors import WavecraftError
folder = Path({str(tmp_path)!r})
wav = torch.rand(2, 8000) - 0.5
sources = [audio_write(folder / "src", wav, 16000, format=f) for f in ("wav", "flac", "ogg", "mp3")]
try:
    import av
    m4a = folder / "src.m4a"
    with av.open(str(m4a), "w") as c:
        s = c.add_stream("aac", rate=16000, layout="stereo")
        frame = av.AudioFrame.from_ndarray(wav.numpy().astype(np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*s.encode(frame), *s.encode(None)]:
            c.mux(packet)
    sources.append(m4a)
except Exception:
    pass
rng = random.Random(1)
bad = []
for src in sources:
    data = src.read_bytes()
    for k in range(12):
        d = bytearray(data)
        if k % 3 == 0:
            d = d[: rng.randrange(1, len(d))]
        elif k % 3 == 1:
            for _ in range(rng.randrange(1, 200)):
                d[rng.randrange(len(d))] = rng.randrange(256)
        else:
            i = rng.randrange(len(d))
            d[i:i + rng.randrange(1, 500)] = bytes(rng.randrange(256) for _ in range(300))
        path = folder / f"bad{{k}}{{src.suffix}}"
        path.write_bytes(bytes(d))
        for fn in (audio_read, audio_info):
            try:
                fn(path)
            except WavecraftError as e:
                if "\\n" in str(e):
                    bad.append(str(e))
            except BaseException as e:
                bad.append(f"{{path.name}} {{fn.__name__}}: {{type(e).__name__}}: {{e}}")
print(json.dumps({{"bad": bad, "peak_mb": peak_mb(), "sources": len(sources)}}))
"""
    result = run_child(code, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr == "", result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["bad"] == [] and out["peak_mb"] < CHILD_BUDGET_MB


# --------------------------------------------------------------------------------------- argument fuzz


def test_argument_fuzz(tmp_path: Path) -> None:
    """Random odd values for every argument of the public API: success or a one-line WavecraftError, nothing
    else, with peak memory under the child budget."""
    code = PEAK_RSS + f"""
import json, random, time
from pathlib import Path
import torch
from wavecraft.audio import audio_read, audio_write, convert_audio, normalize_audio
from wavecraft.errors import WavecraftError
folder = Path({str(tmp_path)!r})
wav = (torch.rand(2, 1600) - 0.5) * 0.5
src = audio_write(folder / "src", wav, 16000)
ODD = [0, -1, float("nan"), float("inf"), -float("inf"), 1e12, 10**12, 1.5, "x", None, True, [], 2**63]
def pick(default):
    return default if rng.random() < 0.5 else rng.choice(ODD)
rng = random.Random(7)
calls = {{
    "audio_read": lambda: audio_read(pick(src), seek_time=pick(0.0), duration=pick(-1.0), pad=pick(False)),
    "audio_write": lambda: audio_write(pick(folder / "out"), pick(wav), pick(16000), format=pick("wav"),
                                       mp3_rate=pick(320), ogg_rate=pick(None), normalize=pick(True),
                                       strategy=pick("peak"), peak_clip_headroom_db=pick(1), rms_headroom_db=pick(18),
                                       loudness_headroom_db=pick(14), loudness_compressor=pick(False),
                                       log_clipping=pick(True), make_parent_dir=pick(True), add_suffix=pick(True)),
    "convert_audio": lambda: convert_audio(pick(wav), pick(16000), pick(8000), pick(1)),
    "normalize_audio": lambda: normalize_audio(pick(wav), normalize=pick(True), strategy=pick("loudness"),
                                               peak_clip_headroom_db=pick(1), rms_headroom_db=pick(18),
                                               loudness_headroom_db=pick(14), loudness_compressor=pick(False),
                                               log_clipping=pick(False), sample_rate=pick(16000)),
}}
bad, counts = [], {{}}
deadline = time.monotonic() + 60
for i in range(400):
    if time.monotonic() > deadline:
        break
    name = rng.choice(sorted(calls))
    try:
        calls[name]()
        outcome = "ok"
    except WavecraftError as e:
        outcome = "error"
        if "\\n" in str(e) or not str(e):
            bad.append(f"{{name}}: multi-line or empty: {{e!r}}")
    except BaseException as e:
        outcome = "bad"
        bad.append(f"{{name}}: {{type(e).__name__}}: {{e}}"[:300])
    counts[f"{{name}}:{{outcome}}"] = counts.get(f"{{name}}:{{outcome}}", 0) + 1
leftovers = [p.name for p in folder.iterdir() if ".tmp-" in p.name]
print(json.dumps({{"bad": bad, "counts": counts, "leftovers": leftovers, "peak_mb": peak_mb()}}))
"""
    result = run_child(code, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["bad"] == [], out["bad"][:10]
    assert out["leftovers"] == [] and out["peak_mb"] < CHILD_BUDGET_MB
    assert any(k.endswith(":ok") for k in out["counts"]) and any(k.endswith(":error") for k in out["counts"])


def test_wavecraft_error_is_the_base() -> None:
    assert issubclass(AudioFileError, WavecraftError) and issubclass(InvalidAudioError, WavecraftError)
