"""The .wcodec format and the compress/decompress command line, including bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from wavecraft.cli import main
from wavecraft.codec import EnCodec
from wavecraft.codec.wcodec import CodecFile, pack_codes, read_wcodec, unpack_codes, write_wcodec
from wavecraft.errors import CodecFileError


@pytest.fixture(scope="module")
def codec_path(golden):
    return str(golden / "encodec" / "compression_state_dict.bin")


@pytest.fixture(scope="module")
def codec(codec_path):
    """The golden codec: the expected sizes below follow from its rate, hop and codebooks."""
    return EnCodec.from_pretrained(codec_path)


def _music(seconds: float, sr: int = 32000, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t)
    return np.stack([tone * (0.8 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.mark.parametrize("bits", [1, 7, 10, 11])
def test_bit_packing_round_trip(bits):
    codes = np.random.default_rng(bits).integers(0, 2**bits, size=1001)
    packed = pack_codes(codes, bits)
    assert len(packed) == -(-1001 * bits // 8)
    assert np.array_equal(unpack_codes(packed, 1001, bits), codes)


def _item(**kw):
    base = dict(model="m", sample_rate=32000, channels=1, cardinality=2048, length=12345,
                codes=torch.randint(0, 2048, (4, 20)), scale=torch.tensor([0.5, 1e-3]))
    base.update(kw)
    return CodecFile(**base)


def test_file_round_trip_and_size(tmp_path):
    item = _item()
    write_wcodec(tmp_path / "a.wcodec", item)
    back = read_wcodec(tmp_path / "a.wcodec")
    assert torch.equal(back.codes, item.codes) and torch.equal(back.scale, item.scale)
    assert (back.model, back.sample_rate, back.length, back.cardinality) == ("m", 32000, 12345, 2048)
    payload = -(-4 * 20 * 11 // 8)
    assert (tmp_path / "a.wcodec").stat().st_size < payload + 300


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "version"])
def test_damaged_files_are_rejected(tmp_path, damage):
    path = write_wcodec(tmp_path / "a.wcodec", _item())
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-10]
    elif damage == "flip":
        data[-6] ^= 0xFF
    elif damage == "magic":
        data[:4] = b"RIFF"
    else:
        data[4] = 99
    path.write_bytes(bytes(data))
    with pytest.raises(CodecFileError) as excinfo:
        read_wcodec(path)
    assert "\n" not in str(excinfo.value)


def test_cli_round_trip(tmp_path, codec_path, codec, capsys):
    rate = codec.sample_rate
    music = _music(1.234, sr=rate, channels=codec.channels)  # at the codec's rate: encoded as is
    sf.write(tmp_path / "in.wav", music, rate)
    assert main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "x.wcodec"), "--model", codec_path,
                 "--no-progress"]) == 0
    item = read_wcodec(tmp_path / "x.wcodec")
    length = music.shape[0]
    assert item.codes.shape == (codec.num_codebooks, -(-length // codec.hop_length)) and item.length == length
    wav = torch.from_numpy(music.T)[None]
    with torch.inference_mode():
        assert torch.equal(item.codes, codec.encode(wav)[0][0])
    assert main(["decompress", str(tmp_path / "x.wcodec"), str(tmp_path / "out.flac"), "--no-progress"]) == 0
    out, sr = sf.read(tmp_path / "out.flac")
    assert sr == rate and out.shape[0] == length


def test_cli_bandwidth_and_stereo_downmix(tmp_path, codec_path, codec):
    from wavecraft.audio import convert_audio

    music = _music(0.5, sr=44100, channels=2)  # another rate and channel count than the (mono) codec's
    sf.write(tmp_path / "in.wav", music, 44100)
    n_q = min(2, codec.total_codebooks)
    kbps = n_q * codec.frame_rate * math.log2(codec.cardinality) / 1000  # the bitrate of n_q codebooks
    assert main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "x.wcodec"), "--model", codec_path,
                 "--bandwidth", repr(kbps), "--no-progress"]) == 0
    item = read_wcodec(tmp_path / "x.wcodec")
    length = convert_audio(torch.from_numpy(music.T), 44100, codec.sample_rate, codec.channels).shape[-1]
    assert item.codes.shape[0] == n_q and item.channels == codec.channels and item.length == length


def test_long_file_in_segments(tmp_path, codec_path, codec):
    from wavecraft.models.compression import compress_file, decompress_file

    # 2.5 segments of 1 s (segments are whole frames: the rate is a multiple of the hop in the codecs used here)
    frame_rate, hop = codec.frame_rate, codec.hop_length
    assert frame_rate * hop == codec.sample_rate
    sf.write(tmp_path / "in.wav", _music(2.5, sr=codec.sample_rate), codec.sample_rate)
    item = compress_file(tmp_path / "in.wav", tmp_path / "x.wcodec", model=codec_path, segment_seconds=1.0)
    frames = int(2.5 * frame_rate)
    assert item.segment_frames == frame_rate and item.codes.shape == (codec.num_codebooks, frames)
    out = decompress_file(tmp_path / "x.wcodec", tmp_path / "y.wav")
    data, _ = sf.read(out)
    assert data.shape[0] == frames * hop and np.abs(data).max() > 0.01


def _bad_inputs(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "missing.wav"
    (tmp_path / "empty.wav").write_bytes(b"")
    cases["empty file"] = tmp_path / "empty.wav"
    sf.write(tmp_path / "full.wav", _music(1.0), 32000)
    (tmp_path / "truncated.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    cases["truncated"] = tmp_path / "truncated.wav"
    (tmp_path / "garbage.mp3").write_bytes(np.random.default_rng(0).bytes(4000))
    cases["corrupt"] = tmp_path / "garbage.mp3"
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), dtype=np.float32), 32000)
    cases["zero length"] = tmp_path / "zero.wav"
    nan = _music(0.5)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 32000, subtype="FLOAT")
    cases["nan"] = tmp_path / "nan.wav"
    return cases


def test_cli_bad_input_one_line_error_and_no_output(tmp_path, codec_path, capsys):
    for label, path in _bad_inputs(tmp_path).items():
        out = tmp_path / f"out-{label.replace(' ', '_')}.wcodec"
        code = main(["compress", str(path), str(out), "--model", codec_path, "--no-progress"])
        err = capsys.readouterr().err
        assert code == 1, label
        assert err.startswith("wavecraft: error:") and err.count("\n") == 1, (label, err)
        assert not out.exists(), label
    assert not list(tmp_path.glob(".*tmp*")), "temporary files left behind"


def test_cli_bad_checkpoint_and_mismatched_model(tmp_path, codec_path, codec, capsys):
    sf.write(tmp_path / "in.wav", _music(0.3), 32000)
    (tmp_path / "bad.bin").write_bytes(b"not a checkpoint")
    assert main(["compress", str(tmp_path / "in.wav"), str(tmp_path / "x.wcodec"), "--model",
                 str(tmp_path / "bad.bin")]) == 1
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "x.wcodec").exists()
    other = codec.sample_rate // 2  # a file of another rate than the codec's
    write_wcodec(tmp_path / "y.wcodec", _item(sample_rate=other, cardinality=codec.cardinality, scale=None,
                                              codes=torch.zeros(codec.num_codebooks, 5, dtype=torch.long)))
    assert main(["decompress", str(tmp_path / "y.wcodec"), str(tmp_path / "y.wav"), "--model", codec_path]) == 1
    assert f"{other} Hz" in capsys.readouterr().err and not (tmp_path / "y.wav").exists()
