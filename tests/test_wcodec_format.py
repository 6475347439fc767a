"""The .wcodec reader under damaged and hostile files (issue 21, item 3): every header field is validated against
the others and the file size before anything is allocated; the version-2 CRC covers the header."""

from __future__ import annotations

import json
import random
import struct
import zlib
from pathlib import Path

import pytest
import torch

from wavecraft.codec.wcodec import _PREFIX, MAGIC, CodecFile, bits_per_code, pack_codes, read_wcodec, write_wcodec
from wavecraft.errors import CodecFileError


def _item(k: int = 3, f: int = 20, card: int = 1000) -> CodecFile:
    g = torch.Generator().manual_seed(0)
    return CodecFile(model="wavecraft-small", sample_rate=32000, channels=1, cardinality=card, length=f * 640,
                     codes=torch.randint(0, card, (k, f), generator=g), segment_frames=8, levels=[0.1, 0.2, 0.3])


def _raw(header: dict, payload: bytes, version: int = 2) -> bytes:
    head = json.dumps(header).encode()
    body = _PREFIX.pack(MAGIC, version, len(head)) + head + payload
    return body + struct.pack("<I", zlib.crc32(body if version == 2 else payload))


def _header(item: CodecFile) -> dict:
    k, f = item.codes.shape
    return {"model": item.model, "sample_rate": item.sample_rate, "channels": item.channels, "num_codebooks": k,
            "frames": f, "cardinality": item.cardinality, "bits": bits_per_code(item.cardinality),
            "length": item.length, "segment_frames": item.segment_frames, "scale": None, "levels": item.levels}


def test_round_trip_and_version_1_still_reads(tmp_path: Path) -> None:
    item = _item()
    back = read_wcodec(write_wcodec(tmp_path / "a.wcodec", item))
    assert torch.equal(back.codes, item.codes) and back.levels == item.levels and back.segment_frames == 8
    v1 = tmp_path / "v1.wcodec"
    v1.write_bytes(_raw(_header(item), pack_codes(item.codes.numpy(), 10), version=1))
    assert torch.equal(read_wcodec(v1).codes, item.codes)


@pytest.mark.parametrize("change", [
    {"bits": 0, "frames": 10**8}, {"frames": 10**12}, {"bits": 0}, {"bits": 64}, {"num_codebooks": 0},
    {"cardinality": 1}, {"frames": -1}, {"frames": 1.5}, {"frames": "20"}, {"segment_frames": 10**6},
    {"levels": [1.0]}, {"levels": [float("nan")] * 3}, {"scale": "x"}, {"sample_rate": 0}, {"model": None},
    {"channels": True}, {"length": -5},
])
def test_hostile_headers_are_one_line_errors(tmp_path: Path, change: dict) -> None:
    item = _item()
    header = {**_header(item), **change}
    path = tmp_path / "h.wcodec"
    path.write_bytes(_raw(header, pack_codes(item.codes.numpy(), 10)))  # a valid CRC: the fields must be checked
    with pytest.raises(CodecFileError) as err:
        read_wcodec(path)
    assert "\n" not in str(err.value)


def test_missing_key_and_codes_beyond_cardinality(tmp_path: Path) -> None:
    item = _item()
    header = _header(item)
    del header["model"]
    path = tmp_path / "m.wcodec"
    path.write_bytes(_raw(header, pack_codes(item.codes.numpy(), 10)))
    with pytest.raises(CodecFileError, match="model"):
        read_wcodec(path)
    codes = item.codes.clone()
    codes[0, 0] = 1023  # fits in 10 bits, beyond 1000 codes
    path.write_bytes(_raw(_header(item), pack_codes(codes.numpy(), 10)))
    with pytest.raises(CodecFileError, match="cardinality"):
        read_wcodec(path)


def test_header_bit_flips_are_caught(tmp_path: Path) -> None:
    """"model" -> "iodel" and segment_frames 8 -> 9 passed version 1's payload-only CRC."""
    path = write_wcodec(tmp_path / "a.wcodec", _item())
    data = path.read_bytes()
    for old, new in ((b'"model"', b'"iodel"'), (b'"segment_frames":8', b'"segment_frames":9')):
        assert old in data
        path.write_bytes(data.replace(old, new))
        with pytest.raises(CodecFileError, match="checksum"):
            read_wcodec(path)


def test_fuzz_flips_and_truncations(tmp_path: Path) -> None:
    """Random bit flips and truncations: a one-line CodecFileError or the original codes, never another error."""
    item = _item(k=4, f=50, card=2048)
    good = write_wcodec(tmp_path / "g.wcodec", item).read_bytes()
    rng = random.Random(0)
    path = tmp_path / "f.wcodec"
    outcomes = {"error": 0, "same": 0}
    for trial in range(400):
        data = bytearray(good)
        if trial % 4 == 0:
            data = data[:rng.randrange(len(data))]
        else:
            for _ in range(rng.randint(1, 3)):
                pos = rng.randrange(len(data))
                data[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:
            back = read_wcodec(path)
        except CodecFileError as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
        else:
            assert torch.equal(back.codes, item.codes)
            outcomes["same"] += 1
    assert outcomes["error"] >= 390
