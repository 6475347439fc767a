"""The codec and compress/decompress under bad input and faults (issue 21): any length from one sample, one-line
errors for bad bandwidths and codes, streaming in bounded memory with the whole-file path's output, and disk-full
or oversized writes that leave nothing behind."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavecraft.audio import audio_read, audio_write, convert_audio
from wavecraft.audio.chunked import StreamConverter, open_audio_stream, open_audio_writer
from wavecraft.cli import main
from wavecraft.codec import EnCodec
from wavecraft.codec.compression import CompressionModel, InterleaveStereoCompressionModel
from wavecraft.codec.wcodec import pack_codes, read_wcodec, unpack_codes
from wavecraft.errors import AudioFileError, CodecFileError, InvalidAudioError, WavecraftError
from wavecraft.models.compression import compress_file, decompress_file, level_gain

LENGTHS = (1, 10, 100, 2048)


@pytest.fixture(scope="module")
def shipped() -> CompressionModel:
    return CompressionModel.get_pretrained("wavecraft-small").eval()


@pytest.fixture(scope="module")
def debug_codec(tmp_path_factory) -> Path:
    """A tiny random EnCodec saved to disk (for the long-file tests: fast, and its memory is the streaming's)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("debug_codec")
    EnCodec.from_config("debug").eval().save_pretrained(folder)
    return folder


def _tone(seconds: float, sr: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    n = max(1, round(seconds * sr))
    t = np.arange(n) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * t)[:, None] * (1 + 0.1 * np.arange(channels)) \
        + 0.01 * rng.standard_normal((n, channels))
    return x.astype(np.float32)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("wavecraft: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# -- item 1: any length >= 1 sample ---------------------------------------------------------------------------------
def _models(shipped: CompressionModel) -> dict[str, CompressionModel]:
    torch.manual_seed(0)
    models = {name: EnCodec.from_config(name).eval()
              for name in ("encodec_32khz", "encodec_16khz", "encodec_24khz", "encodec_48khz", "debug")}
    models["shipped"] = shipped
    models["stereo-shipped"] = InterleaveStereoCompressionModel(shipped)
    return models


def test_every_length_from_one_sample_encodes_and_decodes(shipped):
    for name, model in _models(shipped).items():
        for length in LENGTHS:
            wav = torch.randn(2, model.channels, length) * 0.1
            with torch.inference_mode():
                codes, scale = model.encode(wav)
                out = model.decode(codes, scale)
            assert codes.shape[-1] >= 1 and out.shape[:2] == (2, model.channels), (name, length)
            assert out.shape[-1] >= length and bool(torch.isfinite(out).all()), (name, length)


def test_oscillator_analysis_unchanged_on_long_inputs(shipped):
    """The short-input padding reproduces torch.stft's own centring exactly where that one works."""
    enc = shipped.encoder
    for length in (enc.n_fft // 2 + 1, 5000, 32011):
        wav = torch.randn(2, 1, length)
        frames = -(-length // enc.hop)
        spec = torch.stft(wav.reshape(2, -1), enc.n_fft, enc.hop // 2, window=enc.window, center=True,
                          return_complex=True)
        energy = torch.log(enc.bands @ spec.abs().pow(2) + 1e-6)[..., :2 * frames]
        energy = torch.nn.functional.pad(energy, (0, 2 * frames - energy.shape[-1]), value=math.log(1e-6))
        n = energy.shape[1]
        expected = energy.reshape(2, n, frames, 2).permute(0, 3, 1, 2).reshape(2, 2 * n, frames)
        assert torch.equal(enc.band_energies(wav), expected), length


@pytest.mark.parametrize("length", [47521, 47680, 47840, 48000, 95041, 95520])
def test_48khz_chunking_decodes_at_every_length(length):
    """Lengths whose last two chunks are both short used to fail (scale count, overlap-add size)."""
    torch.manual_seed(0)
    model = EnCodec.from_config("encodec_48khz").eval()
    model.set_bandwidth(3.0)
    with torch.inference_mode():
        codes, scale = model.encode(torch.randn(1, 2, length) * 0.1)
        out = model.decode(codes, scale)
    assert out.shape[-1] >= length and bool(torch.isfinite(out).all())
    if length == 48000:  # exactly 1 s keeps AudioCraft's / transformers' two chunks (1 + 0.01 s)
        assert codes.shape[-1] == 152 and scale.shape == (1, 2)


def test_cli_short_and_odd_length_files(tmp_path, capsys):
    """A 30.01 s file (a 10 ms last segment) and files of 1, 10, 100 and 2048 samples round-trip."""
    cases = {"30.01s": _tone(30.01, 32000)} | {f"{n}": _tone(n / 32000, 32000) for n in LENGTHS}
    for label, audio in cases.items():
        src, mid, out = tmp_path / f"{label}.wav", tmp_path / f"{label}.wcodec", tmp_path / f"{label}.out.wav"
        sf.write(src, audio, 32000)
        assert main(["compress", str(src), str(mid), "--no-progress"]) == 0, capsys.readouterr().err
        assert main(["decompress", str(mid), str(out), "--no-progress"]) == 0, capsys.readouterr().err
        back, sr = sf.read(out)
        assert sr == 32000 and back.shape[0] == audio.shape[0], label


# -- item 2: bandwidth, codes and scales ------------------------------------------------------------------------------
@pytest.mark.parametrize("kbps", [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, "2", True, None])
def test_set_bandwidth_refuses_non_finite_and_non_positive(shipped, kbps):
    with pytest.raises(InvalidAudioError) as excinfo:
        shipped.set_bandwidth(kbps)
    message = str(excinfo.value)
    assert "\n" not in message and "0.45, 0.9, 1.35, 1.8 kbps" in message


def test_set_bandwidth_picks_codebooks_as_audiocraft(shipped):
    model = EnCodec.from_config("encodec_24khz")
    assert [model.set_bandwidth(b) for b in (1.5, 3.0, 6.0, 12.0, 24.0)] == [2, 4, 8, 16, 32]
    assert model.set_bandwidth(0.1) == 1  # below one codebook: one (AudioCraft's max(1, floor))
    with pytest.raises(InvalidAudioError, match="0.75 to 24 kbps in steps of 0.75"):
        model.set_bandwidth(30.0)
    stereo = InterleaveStereoCompressionModel(shipped)
    assert stereo.set_bandwidth(1.4) == 2 and stereo.set_bandwidth(0.1) == 2  # whole pairs only
    for n in (0, 3, 1.5, "2"):
        with pytest.raises(InvalidAudioError):
            stereo.set_num_codebooks(n)
    for n in (0, 5, 2.0, True):
        with pytest.raises(InvalidAudioError):
            shipped.set_num_codebooks(n)
    shipped.set_num_codebooks(4)


def test_decode_zero_frames_is_empty_audio(shipped):
    for model in (shipped, InterleaveStereoCompressionModel(shipped), EnCodec.from_config("encodec_48khz")):
        k = model.num_codebooks
        out = model.decode(torch.zeros(2, k, 0, dtype=torch.long))
        assert out.shape == (2, model.channels, 0)


@pytest.mark.parametrize("codes", [torch.zeros(1, 0, 5, dtype=torch.long), torch.zeros(1, 4, 5),
                                   torch.zeros(1, 4, 5, dtype=torch.bool), torch.full((1, 4, 5), 512),
                                   torch.full((1, 4, 5), -1), torch.zeros(4, 5, dtype=torch.long), [[0]]])
def test_decode_bad_codes_one_line_error(shipped, codes):
    with pytest.raises(InvalidAudioError) as excinfo:
        shipped.decode(codes)
    assert "\n" not in str(excinfo.value)


def test_decode_bad_scale_one_line_error():
    model = EnCodec.from_config("encodec_48khz").eval()
    codes = torch.zeros(1, 2, 300, dtype=torch.long)
    for scale in (torch.ones(1, 3), torch.ones(2, 2), torch.tensor([[1.0, float("nan")]]), torch.ones(1, 2).long()):
        with pytest.raises(InvalidAudioError):
            model.decode(codes, scale)
    with pytest.raises(InvalidAudioError):
        InterleaveStereoCompressionModel(EnCodec.from_config("debug")).decode(torch.zeros(1, 2, 3, dtype=torch.long),
                                                                              torch.ones(1, 1))


@pytest.mark.parametrize("bandwidth", ["nan", "inf", "-inf", "-1", "0"])
def test_cli_bad_bandwidth(tmp_path, capsys, bandwidth):
    sf.write(tmp_path / "in.wav", _tone(0.2, 32000), 32000)
    out = tmp_path / "x.wcodec"
    assert main(["compress", str(tmp_path / "in.wav"), str(out), f"--bandwidth={bandwidth}", "--no-progress"]) == 1
    assert "bandwidth" in _one_line_error(capsys) and not out.exists()


def test_compress_file_checks_its_arguments(tmp_path):
    sf.write(tmp_path / "in.wav", _tone(0.2, 32000), 32000)
    for kwargs in ({"segment_seconds": float("nan")}, {"segment_seconds": float("inf")}, {"bandwidth": 99.0}):
        with pytest.raises(InvalidAudioError):
            compress_file(tmp_path / "in.wav", tmp_path / "x.wcodec", **kwargs)
    assert not (tmp_path / "x.wcodec").exists()


# -- item 3: streaming equals the whole-file path -------------------------------------------------------------------
@pytest.mark.parametrize(("from_rate", "to_rate", "channels", "to_channels"),
                         [(44100, 32000, 2, 1), (48000, 32000, 1, 1), (22050, 24000, 1, 2), (32000, 32000, 2, 1),
                          (16000, 48000, 2, 2)])
def test_stream_converter_equals_convert_audio(from_rate, to_rate, channels, to_channels):
    wav = torch.from_numpy(_tone(2.3, from_rate, channels).T.copy())
    expected = convert_audio(wav, from_rate, to_rate, to_channels)
    for block in (1000, 4097, 65536):
        conv = StreamConverter(from_rate, to_rate, channels, to_channels)
        parts = [conv.process(wav[:, i:i + block]) for i in range(0, wav.shape[-1], block)] + [conv.flush()]
        assert torch.equal(torch.cat(parts, dim=-1), expected), block


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".ogg", ".mp3", ".weird"])
def test_stream_reader_equals_audio_read(tmp_path, suffix):
    """The blocks join to audio_read's samples, with either backend (``.weird``: FFmpeg, as audio_read)."""
    path = tmp_path / f"in{suffix}"
    audio = _tone(3.1, 32000, 2)
    if suffix == ".weird":
        sf.write(tmp_path / "in.wav", audio, 32000)
        shutil.copy(tmp_path / "in.wav", path)
    else:
        sf.write(path, audio, 32000)
    expected, sr = audio_read(path)
    with open_audio_stream(path, block_frames=5000) as stream:
        got = np.concatenate(list(stream.blocks()), axis=1)
    assert stream.sample_rate == sr and np.array_equal(got, expected.numpy())


def _whole_file_compress(src: Path, model: CompressionModel, segment_seconds: float) -> tuple[torch.Tensor, list]:
    """The former whole-file compress: decode all, convert all, code in segments."""
    wav, sr = audio_read(src)
    wav = convert_audio(wav, sr, model.sample_rate, model.channels)
    step = int(segment_seconds * model.frame_rate) * round(model.sample_rate / model.frame_rate)
    codes, levels = [], []
    with torch.inference_mode():
        for start in range(0, wav.shape[-1], step):
            codes.append(model.encode(wav[None, :, start:start + step])[0][0])
            levels.append(float(wav[:, start:start + step].double().pow(2).mean().sqrt()))
    return torch.cat(codes, dim=-1), levels


def test_streamed_compress_and_decompress_equal_whole_file(tmp_path, shipped):
    src = tmp_path / "in.wav"
    sf.write(src, _tone(3.3, 44100, 2), 44100)  # resampled and downmixed, 4 segments of 1 s
    item = compress_file(src, tmp_path / "x.wcodec", model=shipped, segment_seconds=1.0)
    codes, levels = _whole_file_compress(src, shipped, 1.0)
    assert item.segment_frames == 50 and torch.equal(item.codes, codes)
    assert np.allclose(item.levels, levels, rtol=1e-12, atol=0)
    back = read_wcodec(tmp_path / "x.wcodec")
    assert torch.equal(back.codes, codes) and back.length == item.length

    # The former decompress: decode every segment, restore its level, concatenate, one audio_write.
    wavs = []
    with torch.inference_mode():
        for i, piece in enumerate(back.codes.split(back.segment_frames, dim=-1)):
            out = shipped.decode(piece[None])[0][..., : back.length - i * back.segment_frames * 640]
            wavs.append(out * level_gain(out, back.levels[i]))
    whole = torch.cat(wavs, dim=-1)
    for fmt in ("wav", "flac"):
        expected = audio_write(tmp_path / f"ref_{fmt}", whole, 32000, format=fmt, normalize=False, strategy="clip",
                               peak_clip_headroom_db=0)
        got = decompress_file(tmp_path / "x.wcodec", tmp_path / f"out.{fmt}", model=shipped)
        a, _ = sf.read(got, dtype="int16")
        b, _ = sf.read(expected, dtype="int16")
        assert a.shape == b.shape and np.abs(a.astype(int) - b).max() <= 1  # PCM rounding of a whole-clip rescale
    for fmt in ("ogg", "mp3"):
        data, sr = sf.read(decompress_file(tmp_path / "x.wcodec", tmp_path / f"out.{fmt}", model=shipped))
        assert sr == 32000 and abs(data.shape[0] - back.length) < 3000 and np.abs(data).max() > 0.01


def test_pack_codes_in_steps_matches_one_shot():
    rng = np.random.default_rng(0)
    for bits in (1, 9, 11):
        codes = rng.integers(0, 2**bits, size=(1 << 18) * 2 + 13)
        planes = ((codes.astype(np.uint64)[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
        one_shot = np.packbits(planes.reshape(-1), bitorder="little").tobytes()
        assert pack_codes(codes, bits) == one_shot
        assert np.array_equal(unpack_codes(one_shot, codes.size, bits), codes)


_PEAK = textwrap.dedent("""
    import sys
    from wavecraft.models.compression import compress_file, decompress_file
    if sys.argv[1] == "compress":
        compress_file(sys.argv[2], sys.argv[3], model=sys.argv[4], segment_seconds=10.0)
    else:
        decompress_file(sys.argv[2], sys.argv[3], model=sys.argv[4])
    print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")))
""")


def _peak_mb(*args: str) -> float:
    done = subprocess.run([sys.executable, "-c", _PEAK, *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split()[-1]) / 1024


def _write_long(path: Path, seconds: float, sr: int, channels: int) -> None:
    block = _tone(60.0, sr, channels)
    with sf.SoundFile(path, "w", sr, channels, "PCM_16") as f:
        for _ in range(int(seconds // 60)):
            f.write(block)


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_length(tmp_path, debug_codec):
    """Compress 2 and 12 min of 44.1 kHz stereo (read, downmix, resample, code) and decompress the results: the
    peaks differ by a small constant (the whole-file path held every stage of the file at once: hundreds of MB)."""
    peaks = {}
    for minutes in (2, 12):
        src, mid, out = (tmp_path / f"{minutes}{s}" for s in (".wav", ".wcodec", ".out.wav"))
        _write_long(src, minutes * 60, 44100, 2)
        peaks["compress", minutes] = _peak_mb("compress", src, mid, debug_codec)
        peaks["decompress", minutes] = _peak_mb("decompress", mid, out, debug_codec)
        assert sf.info(out).frames == read_wcodec(mid).length
        src.unlink()
    assert peaks["compress", 12] - peaks["compress", 2] < 60, peaks
    assert peaks["decompress", 12] - peaks["decompress", 2] < 60, peaks


# -- item 4: disk full, oversized and unwritable outputs ------------------------------------------------------------
_LIMITED = textwrap.dedent("""
    import resource, signal, sys
    from wavecraft.cli import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    sys.exit(main(sys.argv[2:]))
""")


def _no_temporaries(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if ".tmp-" in p.name]


def test_file_size_limit_one_line_error_and_nothing_lost(tmp_path, debug_codec):
    """RLIMIT_FSIZE makes every write past the limit fail with EFBIG, as a real system limit does."""
    sf.write(tmp_path / "in.wav", _tone(20.0, 32000), 32000)
    assert main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "x.wcodec"), "--model", str(debug_codec),
                 "--no-progress"]) == 0
    (tmp_path / "keep.wav").write_bytes(b"old contents")
    (tmp_path / "keep.wcodec").write_bytes(b"old contents")
    for args in (["decompress", tmp_path / "x.wcodec", tmp_path / "keep.wav"],
                 ["compress", tmp_path / "in.wav", tmp_path / "keep.wcodec"]):
        done = subprocess.run([sys.executable, "-c", _LIMITED, "1000", *map(str, args), "--model", str(debug_codec),
                               "--no-progress"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("wavecraft: error:") and done.stderr.count("\n") == 1, done.stderr
        assert "File too large" in done.stderr
    assert (tmp_path / "keep.wav").read_bytes() == b"old contents"
    assert (tmp_path / "keep.wcodec").read_bytes() == b"old contents"
    _no_temporaries(tmp_path)


_TMPFS = textwrap.dedent("""
    set -e
    mount -t tmpfs -o size=4k tmpfs "$DIR"
    "$@" || echo "rc=$?" >&2
    ls -A "$DIR"
""")


def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
                          capture_output=True, timeout=30)
    return done.returncode == 0


@pytest.mark.skipif(not _unshare_works(), reason="needs unprivileged user+mount namespaces for a tiny tmpfs")
def test_disk_full_one_line_error_and_nothing_left(tmp_path, debug_codec):
    """A real ENOSPC: the output folder is a 4 KiB tmpfs (in a private mount namespace)."""
    sf.write(tmp_path / "in.wav", _tone(20.0, 32000), 32000)
    assert main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "x.wcodec"), "--model", str(debug_codec),
                 "--no-progress"]) == 0
    small = tmp_path / "small"
    small.mkdir()
    # 20 s: 1.3 MB of wav; with the shipped codec 4.5 KB of .wcodec
    for args in (["decompress", tmp_path / "x.wcodec", small / "out.wav", "--model", debug_codec],
                 ["compress", tmp_path / "in.wav", small / "out.wcodec"]):
        command = [sys.executable, "-m", "wavecraft.cli", *map(str, args), "--no-progress"]
        done = subprocess.run(["unshare", "-rm", "sh", "-c", _TMPFS, "sh", *command], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "DIR": str(small)})
        lines = done.stderr.splitlines()
        assert done.returncode == 0 and "rc=1" in lines, done.stderr
        errors = [line for line in lines if line.startswith("wavecraft: error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr
        assert "Traceback" not in done.stderr and done.stdout.strip() == "", done.stdout  # the folder is empty


def test_unwritable_output_one_line_error(tmp_path, debug_codec):
    sf.write(tmp_path / "in.wav", _tone(0.5, 32000), 32000)
    item = compress_file(tmp_path / "in.wav", tmp_path / "x.wcodec", model=debug_codec)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(CodecFileError, match="cannot write"):
        compress_file(tmp_path / "in.wav", tmp_path / "file" / "x.wcodec", model=debug_codec)
    with pytest.raises(AudioFileError, match="cannot write"):
        decompress_file(tmp_path / "x.wcodec", tmp_path / "file" / "y.wav", model=debug_codec)
    with pytest.raises(InvalidAudioError), open_audio_writer(tmp_path / "y.mp3", 96000, 1):  # refused up front
        pass
    assert item.length == 16000 and not (tmp_path / "y.mp3").exists()
    _no_temporaries(tmp_path)


def test_decompress_failure_midway_leaves_nothing(tmp_path, debug_codec, monkeypatch):
    """An error after some segments were written (here: a decode failure) removes the partial output."""
    sf.write(tmp_path / "in.wav", _tone(3.0, 32000), 32000)
    compress_file(tmp_path / "in.wav", tmp_path / "x.wcodec", model=debug_codec, segment_seconds=1.0)
    model = EnCodec.from_pretrained(debug_codec)
    calls = []

    def failing(codes, scale=None):
        calls.append(1)
        if len(calls) == 2:
            raise InvalidAudioError("boom")
        return EnCodec.decode(model, codes, scale)

    monkeypatch.setattr(model, "decode", failing)
    (tmp_path / "y.wav").write_bytes(b"old")
    with pytest.raises(WavecraftError, match="boom"):
        decompress_file(tmp_path / "x.wcodec", tmp_path / "y.wav", model=model)
    assert (tmp_path / "y.wav").read_bytes() == b"old"
    _no_temporaries(tmp_path)


def test_zero_frame_wcodec_is_refused(tmp_path, shipped):
    from wavecraft.codec.wcodec import CodecFile, write_wcodec

    write_wcodec(tmp_path / "z.wcodec", CodecFile(model="wavecraft-small", sample_rate=32000, channels=1,
                                                  cardinality=512, length=0,
                                                  codes=torch.zeros(4, 0, dtype=torch.long)))
    with pytest.raises(CodecFileError, match="0 frames"):
        decompress_file(tmp_path / "z.wcodec", tmp_path / "z.wav", model=shipped)
    assert not (tmp_path / "z.wav").exists() and math.isfinite(1.0)
