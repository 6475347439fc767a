"""Tests for wavecraft.audio: file I/O, normalization, and rate/channel conversion."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavecraft.audio import (
    AudioInfo,
    _sndfile,
    audio_info,
    audio_read,
    audio_write,
    check_audio,
    convert_audio,
    convert_audio_channels,
    loudness_lufs,
    normalize_audio,
    normalize_loudness,
)
from wavecraft.errors import AudioFileError, InvalidAudioError

SR = 44100
PEAK_1DB = 10 ** (-1 / 20)
LSB = 1 / 32768


def tone(freq: float = 440.0, seconds: float = 1.0, sr: int = SR, amp: float = 0.5, channels: int = 1) -> torch.Tensor:
    """wav [C, T]: a sine per channel (frequency shifted per channel so channels differ)."""
    t = torch.arange(int(seconds * sr), dtype=torch.float64) / sr
    return torch.stack([amp * torch.sin(2 * math.pi * freq * (1 + 0.5 * c) * t) for c in range(channels)]).float()


def music(seconds: float = 1.0, sr: int = SR, channels: int = 2, noise: float = 0.02) -> torch.Tensor:
    """wav [C, T]: a few harmonics plus a little (seeded) noise, peak around 0.5."""
    gen = torch.Generator().manual_seed(0)
    wav = tone(220, seconds, sr, 0.25, channels) + tone(330, seconds, sr, 0.15, channels)
    return wav + noise * torch.randn(wav.shape, generator=gen)


def listing(directory: Path) -> list[str]:
    """Every entry of ``directory``, hidden ones (temporary files) included."""
    return sorted(os.listdir(directory))


def assert_one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert message and "\n" not in message and "\r" not in message
    for fragment in fragments:
        assert fragment in message


def corr(a: np.ndarray, b: np.ndarray) -> float:
    n = min(a.shape[-1], b.shape[-1])
    return float(np.corrcoef(a[..., :n].ravel(), b[..., :n].ravel())[0, 1])


def rms_db(x: np.ndarray) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))))


def write_pyav(path: Path, wav: torch.Tensor, sr: int, codec: str) -> None:
    """Encode ``wav [C, T]`` to ``path`` with PyAV (used for formats soundfile cannot write)."""
    av = pytest.importorskip("av")
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - any failure means this FFmpeg build lacks the encoder
        pytest.skip(f"PyAV has no {codec} encoder")
    layout = "mono" if wav.shape[0] == 1 else "stereo"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sr, layout=layout)
        stream.bit_rate = 192_000
        frame = av.AudioFrame.from_ndarray(wav.numpy().astype(np.float32), format="fltp", layout=layout)
        frame.sample_rate = sr
        frame.pts = 0
        resampler = av.AudioResampler(format=stream.codec_context.codec.audio_formats[0].name, layout=layout, rate=sr)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))


# ---------------------------------------------------------------------------------------------------- writing


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_lossless_round_trip(tmp_path: Path, fmt: str) -> None:
    wav = music(0.5)
    path = audio_write(tmp_path / "x", wav, SR, format=fmt, strategy="none")
    assert path == tmp_path / f"x.{fmt}"
    back, sr = audio_read(path)
    assert sr == SR and back.dtype == torch.float32 and back.shape == wav.shape
    torch.testing.assert_close(back, wav, atol=2 * LSB, rtol=0)
    assert listing(tmp_path) == [f"x.{fmt}"]


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_written_peak_respects_headroom(tmp_path: Path, fmt: str) -> None:
    wav = 3.0 * music(0.5)  # way above full scale
    back, _ = audio_read(audio_write(tmp_path / "x", wav, SR, format=fmt))
    peak = float(back.abs().max())
    if fmt in ("wav", "flac"):
        assert abs(peak - PEAK_1DB) <= LSB
    else:  # lossy codecs add some overshoot; they must still be near the target and far from clipping
        assert PEAK_1DB - 0.05 < peak < 1.0


@pytest.mark.parametrize("fmt", ["ogg", "mp3"])
def test_lossy_round_trip(tmp_path: Path, fmt: str) -> None:
    wav = music(1.0)
    path = audio_write(tmp_path / "x", wav, SR, format=fmt, strategy="none")
    back, sr = audio_read(path)
    assert sr == SR and back.shape[0] == 2
    assert abs(back.shape[1] - wav.shape[1]) <= 2 * 1152  # encoder delay/padding, at most a couple of frames
    assert corr(back.numpy(), wav.numpy()) > 0.9
    assert abs(rms_db(back.numpy()) - rms_db(wav.numpy())) < 1.0
    info = audio_info(path)
    assert info.sample_rate == SR and info.channels == 2 and abs(info.duration - 1.0) < 0.06


def test_mp3_bitrate_is_constant_and_close_to_requested(tmp_path: Path) -> None:
    av = pytest.importorskip("av")
    for rate, sr, expected in [(320, SR, 320), (128, SR, 128), (64, 22050, 64)]:
        path = audio_write(tmp_path / f"x{rate}_{sr}", music(0.5, sr), sr, format="mp3", mp3_rate=rate)
        with av.open(str(path)) as container:
            assert container.streams.audio[0].bit_rate == expected * 1000


def test_ogg_rate_changes_size(tmp_path: Path) -> None:
    small = audio_write(tmp_path / "small", music(1.0), SR, format="ogg", ogg_rate=64)
    large = audio_write(tmp_path / "large", music(1.0), SR, format="ogg", ogg_rate=320)
    assert small.stat().st_size < large.stat().st_size


def test_write_mono_1d_and_suffix_options(tmp_path: Path) -> None:
    path = audio_write(tmp_path / "sub" / "dir" / "take.1", tone(seconds=0.1)[0], SR)
    assert path == tmp_path / "sub" / "dir" / "take.1.wav"
    assert audio_info(path) == AudioInfo(SR, 0.1, 1)
    raw = audio_write(tmp_path / "plain.bin", tone(seconds=0.1), SR, format="flac", add_suffix=False)
    assert raw == tmp_path / "plain.bin" and sf.info(str(raw)).format == "FLAC"
    with pytest.raises(AudioFileError) as e:
        audio_write(tmp_path / "missing" / "x", tone(seconds=0.1), SR, make_parent_dir=False)
    assert_one_line(e, "missing")
    assert not (tmp_path / "missing").exists()


BAD_WRITES = [
    pytest.param(torch.full((1, 100), float("nan")), {}, id="nan"),
    pytest.param(torch.tensor([[0.0, float("inf"), 0.0]]), {}, id="inf"),
    pytest.param(torch.zeros(2, 0), {}, id="no-samples"),
    pytest.param(torch.zeros(1, 2, 100), {}, id="3d"),
    pytest.param(torch.tensor(0.5), {}, id="0d"),
    pytest.param(torch.zeros(1, 100, dtype=torch.int16), {}, id="int"),
    pytest.param(torch.zeros(1, 100), {"format": "aac"}, id="bad-format"),
    pytest.param(torch.zeros(1, 100), {"strategy": "loud"}, id="bad-strategy"),
    pytest.param(torch.full((1, 100), 1.5), {"strategy": "none"}, id="none-over-1"),
    pytest.param(torch.zeros(3, 100), {"format": "mp3"}, id="mp3-3ch"),
    pytest.param(torch.zeros(1, 100), {"format": "mp3", "sample_rate": 12345}, id="mp3-rate"),
    pytest.param(torch.zeros(1, 100), {"format": "ogg", "sample_rate": 384000}, id="ogg-rate"),
    pytest.param(torch.zeros(9, 100), {"format": "flac"}, id="flac-9ch"),
    pytest.param(torch.zeros(1, 100), {"sample_rate": 0}, id="rate-0"),
    pytest.param(torch.zeros(1, 100), {"sample_rate": 16000.0}, id="rate-float"),
    pytest.param(torch.zeros(1, 100), {"format": "mp3", "mp3_rate": -5}, id="mp3-rate-neg"),
]


@pytest.mark.parametrize(("wav", "kwargs"), BAD_WRITES)
def test_bad_write_raises_and_leaves_nothing(tmp_path: Path, wav: torch.Tensor, kwargs: dict) -> None:
    kwargs = {"sample_rate": SR, **kwargs}
    (tmp_path / "existing.txt").write_text("keep")
    before = listing(tmp_path)
    with pytest.raises(InvalidAudioError) as e:
        audio_write(tmp_path / "out", wav, **kwargs)
    assert_one_line(e)
    assert listing(tmp_path) == before


def test_failed_write_keeps_existing_file(tmp_path: Path) -> None:
    good = audio_write(tmp_path / "out", tone(seconds=0.2), SR)
    content = good.read_bytes()
    with pytest.raises(InvalidAudioError):
        audio_write(tmp_path / "out", torch.full((1, 100), float("nan")), SR)
    assert good.read_bytes() == content
    assert listing(tmp_path) == ["out.wav"]


@pytest.mark.parametrize("exc", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_encoder_failure_removes_partial_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   exc: BaseException) -> None:
    good = audio_write(tmp_path / "out", tone(seconds=0.2), SR)
    content = good.read_bytes()
    seen: list[Path] = []

    def broken_write(path: Path, data: np.ndarray, sample_rate: int, settings: dict) -> None:
        seen.append(path)
        path.write_bytes(b"RIFF partial")  # a half-written file, then the encoder dies
        raise exc

    monkeypatch.setattr(_sndfile, "write", broken_write)
    expected = AudioFileError if isinstance(exc, Exception) else type(exc)
    with pytest.raises(expected) as e:
        audio_write(tmp_path / "out", tone(seconds=0.3), SR)
    if expected is AudioFileError:
        assert_one_line(e, "out.wav", "disk full")
    assert seen and seen[0].parent == tmp_path and seen[0].name.startswith(".out.wav.tmp-")
    assert listing(tmp_path) == ["out.wav"] and good.read_bytes() == content


def test_write_onto_directory_fails(tmp_path: Path) -> None:
    (tmp_path / "out.wav").mkdir()
    with pytest.raises(AudioFileError) as e:
        audio_write(tmp_path / "out", tone(seconds=0.1), SR)
    assert_one_line(e, "directory")
    assert listing(tmp_path) == ["out.wav"]


def test_rms_clipping_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wav = tone(seconds=0.2, amp=0.01)
    wav[0, 100] = 0.5  # one spike: scaling the RMS up to -5 dBFS sends it far above 1
    with caplog.at_level(logging.WARNING, logger="wavecraft.audio.normalize"):
        path = audio_write(tmp_path / "x", wav, SR, strategy="rms", rms_headroom_db=5)
    assert any("Clipping" in r.getMessage() and "x.wav" in r.getMessage() for r in caplog.records)
    assert float(audio_read(path)[0].abs().max()) <= 1.0


# ---------------------------------------------------------------------------------------------------- reading


def test_seek_duration_pad(tmp_path: Path) -> None:
    wav = music(1.0, sr=8000)
    path = audio_write(tmp_path / "x", wav, 8000, strategy="none")
    full, sr = audio_read(path)
    assert sr == 8000 and full.shape == (2, 8000)

    part, _ = audio_read(path, seek_time=0.25, duration=0.5)
    torch.testing.assert_close(part, full[:, 2000:6000])
    tail, _ = audio_read(path, seek_time=0.75, duration=0.5)  # runs off the end: shorter without pad
    torch.testing.assert_close(tail, full[:, 6000:])
    padded, _ = audio_read(path, seek_time=0.75, duration=0.5, pad=True)
    assert padded.shape == (2, 4000)
    torch.testing.assert_close(padded[:, :2000], full[:, 6000:])
    assert not padded[:, 2000:].any()
    rest, _ = audio_read(path, seek_time=0.5)
    torch.testing.assert_close(rest, full[:, 4000:])
    beyond, _ = audio_read(path, seek_time=5.0, duration=0.1, pad=True)
    assert beyond.shape == (2, 800) and not beyond.any()
    odd, _ = audio_read(path, duration=0.29, pad=True)
    assert odd.shape[1] == int(0.29 * 8000)
    with pytest.raises(AudioFileError) as e:
        audio_read(path, seek_time=5.0)
    assert_one_line(e, "beyond the end", "x.wav")
    with pytest.raises(AudioFileError) as e:
        audio_read(path, seek_time=1.0, duration=0.5)
    assert_one_line(e, "x.wav")
    with pytest.raises(AudioFileError) as e:
        audio_read(path, seek_time=-0.1)
    assert_one_line(e, "seek_time", "x.wav")


@pytest.mark.parametrize("fmt", ["flac", "ogg", "mp3"])
def test_seek_matches_full_decode(tmp_path: Path, fmt: str) -> None:
    path = audio_write(tmp_path / "x", music(2.0), SR, format=fmt)
    full, _ = audio_read(path)
    start = int(1.3 * SR)
    part, _ = audio_read(path, seek_time=1.3, duration=0.4)
    assert part.shape == (2, int(0.4 * SR))
    torch.testing.assert_close(part, full[:, start: start + part.shape[1]], atol=1e-4, rtol=0)


@pytest.mark.parametrize(("suffix", "codec", "sr"), [("m4a", "aac", SR), ("opus", "libopus", 48000)])
def test_pyav_formats(tmp_path: Path, suffix: str, codec: str, sr: int) -> None:
    # No noise: FFmpeg's AAC codes noise with PNS, which the decoder re-synthesizes differently after a seek.
    wav = music(1.0, sr=sr, noise=0.0)
    path = tmp_path / f"x.{suffix}"
    write_pyav(path, wav, sr, codec)
    info = audio_info(path)
    assert info.sample_rate == sr and info.channels == 2 and abs(info.duration - 1.0) < 0.05
    back, got_sr = audio_read(path)
    assert got_sr == sr and back.dtype == torch.float32 and back.shape[0] == 2
    assert abs(back.shape[1] - wav.shape[1]) <= 2048
    assert corr(back.numpy(), wav.numpy()) > 0.9
    part, _ = audio_read(path, seek_time=0.5, duration=0.25)
    assert part.shape == (2, int(0.25 * sr))
    torch.testing.assert_close(part, back[:, int(0.5 * sr): int(0.5 * sr) + part.shape[1]], atol=1e-3, rtol=0)
    padded, _ = audio_read(path, seek_time=0.9, duration=0.5, pad=True)
    assert padded.shape == (2, int(0.5 * sr)) and not padded[:, -int(0.3 * sr):].any()
    with pytest.raises(AudioFileError) as e:
        audio_read(path, seek_time=3.0)
    assert_one_line(e, "beyond the end")


def test_audio_info(tmp_path: Path) -> None:
    path = audio_write(tmp_path / "x", tone(seconds=0.5, sr=16000, channels=3), 16000, format="flac")
    assert audio_info(path) == AudioInfo(sample_rate=16000, duration=0.5, channels=3)
    assert audio_info(str(path)).channels == 3


def test_misnamed_file_falls_back_to_pyav(tmp_path: Path) -> None:
    path = tmp_path / "actually_m4a.wav"
    write_pyav(tmp_path / "x.m4a", music(0.5), SR, "aac")
    (tmp_path / "x.m4a").rename(path)
    wav, sr = audio_read(path)
    assert sr == SR and wav.shape[0] == 2 and wav.shape[1] > 0.4 * SR
    assert audio_info(path).sample_rate == SR


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    good = audio_write(tmp_path / "good", music(1.0), SR, format="flac")
    files = {
        "missing": tmp_path / "missing.wav",
        "directory": tmp_path / "dir.wav",
        "empty": tmp_path / "empty.wav",
        "garbage-wav": tmp_path / "garbage.wav",
        "garbage-m4a": tmp_path / "garbage.m4a",
        "garbage-mp3": tmp_path / "garbage.mp3",
        "truncated-header": tmp_path / "header.wav",
        "truncated-flac": tmp_path / "truncated.flac",
        "no-frames": tmp_path / "noframes.wav",
    }
    files["directory"].mkdir()
    files["empty"].write_bytes(b"")
    for key in ("garbage-wav", "garbage-m4a", "garbage-mp3"):
        files[key].write_bytes(b"this is not audio at all\n" * 40)
    files["truncated-header"].write_bytes(audio_write(tmp_path / "h", tone(seconds=0.1), SR).read_bytes()[:20])
    files["truncated-flac"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    sf.write(str(files["no-frames"]), np.zeros((0, 2), np.float32), SR)
    return files


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "garbage-wav", "garbage-m4a", "garbage-mp3",
                                  "truncated-header", "truncated-flac", "no-frames"])
def test_bad_files_raise_audio_file_error(tmp_path: Path, case: str) -> None:
    path = _bad_files(tmp_path)[case]
    with pytest.raises(AudioFileError) as e:
        audio_read(path)
    assert_one_line(e, path.name)
    if case not in ("no-frames", "truncated-flac"):  # an intact header is enough for audio_info
        with pytest.raises(AudioFileError) as e:
            audio_info(path)
        assert_one_line(e, path.name)


def test_no_frames_info(tmp_path: Path) -> None:
    path = _bad_files(tmp_path)["no-frames"]
    assert audio_info(path) == AudioInfo(SR, 0.0, 2)
    with pytest.raises(AudioFileError) as e:
        audio_read(path, duration=1.0, pad=True)
    assert_one_line(e, "no audio samples")


# ---------------------------------------------------------------------------------------------------- normalization


def test_peak_strategy() -> None:
    wav = music(0.5)
    out = normalize_audio(wav, strategy="peak")
    assert float(out.abs().max()) == pytest.approx(PEAK_1DB, rel=1e-6)
    quiet = 0.1 * wav
    assert normalize_audio(quiet, normalize=False) is quiet  # only scaled down without normalize
    loud = 4 * wav
    assert float(normalize_audio(loud, normalize=False).abs().max()) == pytest.approx(PEAK_1DB, rel=1e-6)
    assert float(normalize_audio(wav, peak_clip_headroom_db=6).abs().max()) == pytest.approx(10 ** (-6 / 20), rel=1e-6)


def test_clip_strategy() -> None:
    wav = 2 * music(0.5)
    out = normalize_audio(wav, strategy="clip")
    assert float(out.abs().max()) == pytest.approx(PEAK_1DB)
    small = wav.abs() < PEAK_1DB
    torch.testing.assert_close(out[small], wav[small])


def test_rms_strategy() -> None:
    wav = music(0.5)
    out = normalize_audio(wav, strategy="rms", rms_headroom_db=18)
    mono_rms = float(out.mean(dim=0).pow(2).mean().sqrt())
    assert 20 * math.log10(mono_rms) == pytest.approx(-18, abs=1e-3)
    assert float(normalize_audio(wav, strategy="rms", rms_headroom_db=-20).abs().max()) <= 1.0


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("seconds", [2.0, 0.2])  # 0.2 s is shorter than a BS.1770 gating block
def test_loudness_strategy(channels: int, seconds: float) -> None:
    wav = 0.05 * music(seconds, channels=channels)
    out = normalize_audio(wav, strategy="loudness", sample_rate=SR)
    assert loudness_lufs(out, SR) == pytest.approx(-14, abs=0.5)
    out = normalize_audio(wav, strategy="loudness", sample_rate=SR, loudness_headroom_db=23)
    assert loudness_lufs(out, SR) == pytest.approx(-23, abs=0.5)


def test_loudness_compressor_and_clamp() -> None:
    wav = music(1.0)
    squashed = normalize_loudness(wav, SR, loudness_headroom_db=0, loudness_compressor=True)
    assert float(squashed.abs().max()) < 1.0
    out = normalize_audio(wav, strategy="loudness", sample_rate=SR, loudness_headroom_db=0)
    assert float(out.abs().max()) <= 1.0


def test_loudness_lufs_reference_level() -> None:
    # BS.1770: a 997 Hz full-scale sine in one channel (of a stereo signal) reads -3.01 LUFS.
    wav = torch.zeros(2, 48000)
    wav[0] = tone(997, 1.0, 48000, 1.0)[0]
    assert loudness_lufs(wav, 48000) == pytest.approx(-3.01, abs=0.1)
    assert loudness_lufs(torch.zeros(1, 48000), 48000) == float("-inf")
    assert math.isfinite(loudness_lufs(tone(300, 1.0, 2000), 2000))  # low rates are upsampled first
    with pytest.raises(InvalidAudioError):
        loudness_lufs(torch.zeros(6, 48000), 48000)


@pytest.mark.parametrize("strategy", ["peak", "clip", "rms", "loudness", "none", ""])
def test_silence_is_unchanged(strategy: str) -> None:
    out = normalize_audio(torch.zeros(2, 1000), strategy=strategy, sample_rate=SR)
    assert torch.isfinite(out).all() and not out.any()


def test_near_silence_loudness_unchanged() -> None:
    wav = 1e-4 * music(0.5)
    assert normalize_loudness(wav, SR) is wav


def test_normalize_does_not_modify_input() -> None:
    wav = 3 * music(0.5)
    copy = wav.clone()
    for strategy in ["peak", "clip", "rms", "loudness"]:
        normalize_audio(wav, strategy=strategy, sample_rate=SR)
    torch.testing.assert_close(wav, copy)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"strategy": "loudest"}, "unknown normalization strategy"),
    ({"strategy": "none", "wav": torch.full((1, 10), 1.2)}, "above 1"),
    ({"strategy": "loudness"}, "sample_rate"),
    ({"wav": torch.tensor([[float("nan")]])}, "NaN"),
    ({"wav": torch.zeros(1, 0)}, "no samples"),
])
def test_normalize_errors(kwargs: dict, fragment: str) -> None:
    kwargs = {"wav": music(0.1), **kwargs}
    with pytest.raises(InvalidAudioError) as e:
        normalize_audio(**kwargs, stem_name="song")
    assert_one_line(e, fragment)


# ---------------------------------------------------------------------------------------------------- conversion


def test_convert_audio_resamples() -> None:
    wav = tone(1000, 1.0, 44100)
    out = convert_audio(wav, 44100, 32000, 1)
    assert out.dtype == torch.float32 and out.shape[0] == 1
    assert abs(out.shape[-1] - 44100 * 32000 / 44100) <= 1
    spectrum = np.abs(np.fft.rfft(out[0].numpy()))
    peak_hz = np.argmax(spectrum) * 32000 / out.shape[-1]
    assert peak_hz == pytest.approx(1000, abs=2)
    assert float(out.abs().max()) == pytest.approx(0.5, abs=0.01)


def test_convert_audio_batch_and_channels() -> None:
    wav = music(0.25, sr=16000, channels=2).expand(3, 2, -1).contiguous()
    out = convert_audio(wav, 16000, 24000, 1)
    assert out.shape == (3, 1, 6000)
    stereo = convert_audio(wav[:, :1], 16000, 8000, 2)
    assert stereo.shape == (3, 2, 2000)
    torch.testing.assert_close(stereo[:, 0], stereo[:, 1])
    same = convert_audio(wav.double(), 16000, 16000, 2)
    assert same.dtype == torch.float32
    torch.testing.assert_close(same, wav)


@pytest.mark.parametrize(("from_rate", "to_rate"), [(0, 16000), (16000, -1), (16000.0, 8000), (True, 8000)])
def test_convert_audio_bad_rates(from_rate: object, to_rate: object) -> None:
    with pytest.raises(InvalidAudioError) as e:
        convert_audio(music(0.1), from_rate, to_rate, 2)  # type: ignore[arg-type]
    assert_one_line(e, "rate")


def test_convert_audio_channels_rules() -> None:
    stereo = music(0.1, channels=2)
    assert convert_audio_channels(stereo, 2) is stereo
    torch.testing.assert_close(convert_audio_channels(stereo, 1), stereo.mean(dim=0, keepdim=True))
    mono = stereo[:1]
    up = convert_audio_channels(mono, 3)
    assert up.shape == (3, stereo.shape[1]) and all(torch.equal(up[c], mono[0]) for c in range(3))
    three = music(0.1, channels=3)
    torch.testing.assert_close(convert_audio_channels(three, 2), three[:2])
    batch = stereo.expand(4, 2, -1)
    assert convert_audio_channels(batch, 1).shape == (4, 1, stereo.shape[1])
    with pytest.raises(InvalidAudioError) as e:
        convert_audio_channels(stereo, 3)
    assert_one_line(e, "upmix")
    for bad in (0, -1, 1.5):
        with pytest.raises(InvalidAudioError):
            convert_audio_channels(stereo, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidAudioError):
        convert_audio_channels(torch.zeros(100), 1)


def test_check_audio() -> None:
    wav = music(0.1)
    assert check_audio(wav) is wav
    for bad, fragment in [(torch.tensor([0.0, float("nan")]), "NaN"), (torch.tensor([float("-inf")]), "NaN"),
                          (torch.zeros(2, 0), "no samples"), (torch.tensor(1.0), "no samples")]:
        with pytest.raises(InvalidAudioError) as e:
            check_audio(bad, name="prompt")
        assert_one_line(e, "prompt", fragment)


def test_import_is_light() -> None:
    src = Path(__file__).resolve().parents[1] / "src"
    code = ("import sys, wavecraft.audio; "
            "heavy = [m for m in ('av', 'soxr', 'pyloudnorm') if m in sys.modules]; "
            "assert not heavy, heavy")
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# ---------------------------------------------------------------------------------- AudioCraft sample alignment

RAMP_SR = 16000


def _ramp(n: int = RAMP_SR) -> torch.Tensor:
    """``wav [1, n]`` of distinct, exactly representable 16-bit values, so a read's offset shows in its samples."""
    return ((torch.arange(n, dtype=torch.float32) - n // 2) / 32768)[None]


def _write_ramp(tmp_path: Path, suffix: str) -> Path:
    path = tmp_path / f"ramp.{suffix}"
    if suffix == "wav":
        sf.write(str(path), _ramp().numpy().T, RAMP_SR, subtype="PCM_16")
    else:  # lossless ALAC in an mp4 container: decoded by PyAV, bit-exact
        write_pyav(path, _ramp(), RAMP_SR, "alac")
    return path


@pytest.mark.parametrize("suffix", ["wav", "m4a"])  # soundfile reader, PyAV reader
@pytest.mark.parametrize("frames", [1.7, 3.5, 11200.96, 8000.6])  # where round() and floor() differ
def test_seek_and_duration_floor_like_audiocraft(tmp_path: Path, suffix: str, frames: float) -> None:
    path = _write_ramp(tmp_path, suffix)
    assert (f".{suffix}" in _sndfile.READ_SUFFIXES) == (suffix == "wav")
    ramp = _ramp()
    seek_time = frames / RAMP_SR
    start = int(seek_time * RAMP_SR)  # AudioCraft: frame_offset = int(seek_time * sr)
    assert start == math.floor(frames) and start != round(frames)
    part, sr = audio_read(path, seek_time=seek_time, duration=100.7 / RAMP_SR)
    assert sr == RAMP_SR and part.shape == (1, 100)  # num_frames = int(duration * sr)
    torch.testing.assert_close(part, ramp[:, start: start + 100], atol=0, rtol=0)
    rest, _ = audio_read(path, seek_time=seek_time)
    torch.testing.assert_close(rest, ramp[:, start:], atol=0, rtol=0)


# ------------------------------------------------------------------------------------------- 16-bit PCM writes


def _int16(path: Path) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return data[:, 0]


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_pcm16_write_rounds_to_nearest(tmp_path: Path, fmt: str) -> None:
    k = np.arange(-200, 200)
    offsets = np.array([0.4, -0.4, 0.6, -0.6, 0.0, 0.49, -0.49, 0.3, -0.3])
    values = (k[:, None] + offsets[None]).ravel()  # k + fraction, in LSBs
    wav = torch.from_numpy((values / 32768).astype(np.float32))
    path = audio_write(tmp_path / "x", wav, 8000, format=fmt, strategy="none")
    got = _int16(path)
    np.testing.assert_array_equal(got, np.round(values).astype(np.int16))
    # No DC offset: the error of rounding is symmetric, unlike truncation (which is off by -0.5 LSB on average).
    assert abs(float(np.mean(got - values))) < 0.01


def test_pcm16_full_scale_like_audiocraft_i16_pcm(tmp_path: Path) -> None:
    # AudioCraft's i16_pcm: round(x * 2**15); if a sample would reach 2**15, the whole clip is scaled by 2**15 - 1.
    neg = audio_write(tmp_path / "neg", torch.tensor([-1.0, -0.5, 0.25, 0.0]), 8000, strategy="none")
    np.testing.assert_array_equal(_int16(neg), [-32768, -16384, 8192, 0])
    both = audio_write(tmp_path / "both", torch.tensor([1.0, -1.0, 0.5, 0.0]), 8000, strategy="none")
    np.testing.assert_array_equal(_int16(both), [32767, -32767, 16384, 0])  # round(0.5 * 32767) = 16384 (even)
    over = audio_write(tmp_path / "over", torch.tensor([1.5, -2.0, 0.25]), 8000, strategy="clip",
                       peak_clip_headroom_db=0)
    np.testing.assert_array_equal(_int16(over), [32767, -32767, 8192])  # round(0.25 * 32767) = 8192
    # A chunk of a stream cannot rescale what came before it: clipped to the int16 range instead.
    chunk = np.array([1.0, -1.0, 32767.6 / 32768, 0.6 / 32768, 2.0, -2.0], dtype=np.float32)
    np.testing.assert_array_equal(_sndfile.pcm16(chunk, whole=False), [32767, -32768, 32767, 1, 32767, -32768])
    assert _sndfile.pcm_data(chunk, "VORBIS") is chunk
