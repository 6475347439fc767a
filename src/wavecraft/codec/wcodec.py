"""The ``.wcodec`` file: codec tokens of one clip, bit-packed, with a self-describing header.

Layout (little endian)::

    b"WCDC" | version u8 | header length u32 | header (UTF-8 JSON) | payload | CRC-32 of payload u32

The header names the codec (``model``), ``sample_rate``, ``channels``, ``num_codebooks``, ``frames``,
``cardinality``, ``bits`` per code, the original ``length`` in samples, ``scale`` (per-chunk renormalisation
gains or null), ``segment_frames`` (frames per independently coded segment, 0 = one segment) and ``levels`` (the
input's RMS per segment, which decoding restores, or null; absent in files of older writers). The payload
holds the ``[K, F]`` codes row-major, each code in ``bits = ceil(log2(cardinality))`` bits.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CodecFileError
from ..fileio import atomic_output

MAGIC = b"WCDC"
VERSION = 1
_PREFIX = struct.Struct("<4sBI")


@dataclass
class CodecFile:
    """Decoded contents of a ``.wcodec`` file. ``codes [K, F]`` long; ``scale [n_scales]`` float or None."""

    model: str
    sample_rate: int
    channels: int
    cardinality: int
    length: int
    codes: torch.Tensor
    scale: torch.Tensor | None = None
    segment_frames: int = 0
    levels: list[float] | None = None


def bits_per_code(cardinality: int) -> int:
    return max(1, math.ceil(math.log2(cardinality)))


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers ``< 2**bits`` into a little-endian bit stream."""
    values = codes.astype(np.uint64).reshape(-1)
    planes = ((values[:, None] >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_codes(data: bytes, count: int, bits: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little")
    weights = (1 << np.arange(bits, dtype=np.int64))
    return flat.reshape(count, bits).astype(np.int64) @ weights


def write_wcodec(path: str | Path, item: CodecFile) -> Path:
    """Write ``item`` to ``path`` atomically; returns the path."""
    codes = item.codes.detach().cpu()
    if codes.dim() != 2:
        raise CodecFileError(f"codes must be [K, F], got {tuple(codes.shape)}")
    bits = bits_per_code(item.cardinality)
    header = {
        "model": item.model, "sample_rate": item.sample_rate, "channels": item.channels,
        "num_codebooks": codes.shape[0], "frames": codes.shape[1], "cardinality": item.cardinality, "bits": bits,
        "length": item.length, "segment_frames": item.segment_frames,
        "scale": None if item.scale is None else [float(s) for s in item.scale.reshape(-1).tolist()],
        "levels": None if item.levels is None else [float(v) for v in item.levels],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    payload = pack_codes(codes.numpy(), bits)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_bytes(_PREFIX.pack(MAGIC, VERSION, len(head)) + head + payload
                        + struct.pack("<I", zlib.crc32(payload)))
    return path


def read_wcodec(path: str | Path) -> CodecFile:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CodecFileError(f"{path}: no such file") from None
    except OSError as e:
        raise CodecFileError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        raise CodecFileError(f"{path}: not a .wcodec file")
    _, version, head_len = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise CodecFileError(f"{path}: .wcodec format version {version} is not supported (this reader: {VERSION})")
    try:
        header = json.loads(data[_PREFIX.size:_PREFIX.size + head_len])
        k, f, bits = int(header["num_codebooks"]), int(header["frames"]), int(header["bits"])
    except (ValueError, KeyError, TypeError):
        raise CodecFileError(f"{path}: corrupt .wcodec header") from None
    start = _PREFIX.size + head_len
    size = math.ceil(k * f * bits / 8)
    payload, crc = data[start:start + size], data[start + size:start + size + 4]
    if len(payload) != size or len(crc) != 4:
        raise CodecFileError(f"{path}: truncated .wcodec file ({len(data)} bytes)")
    if struct.unpack("<I", crc)[0] != zlib.crc32(payload):
        raise CodecFileError(f"{path}: .wcodec payload is corrupt (checksum mismatch)")
    codes = torch.from_numpy(unpack_codes(payload, k * f, bits).reshape(k, f))
    scale = header.get("scale")
    levels = header.get("levels")
    segments = math.ceil(f / int(header.get("segment_frames") or f or 1)) if f else 0
    if levels is not None and (not isinstance(levels, list) or len(levels) != segments
                               or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                                          for v in levels)):
        raise CodecFileError(f"{path}: corrupt .wcodec header (levels)")
    return CodecFile(
        model=str(header["model"]), sample_rate=int(header["sample_rate"]), channels=int(header["channels"]),
        cardinality=int(header["cardinality"]), length=int(header["length"]), codes=codes,
        scale=None if scale is None else torch.tensor(scale, dtype=torch.float32),
        segment_frames=int(header.get("segment_frames", 0)), levels=levels)
