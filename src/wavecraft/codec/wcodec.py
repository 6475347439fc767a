"""The ``.wcodec`` file: codec tokens of one clip, bit-packed, with a self-describing header.

Layout (little endian)::

    b"WCDC" | version u8 | header length u32 | header (UTF-8 JSON) | payload | CRC-32 u32

The CRC-32 covers everything before it (version 2; version 1 files, whose CRC covers the payload only, are still
read).

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
#: Version 2: the CRC covers the whole file (prefix, header and payload); version 1's covered the payload only.
VERSION = 2
READ_VERSIONS = (1, 2)
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


#: Codes packed or unpacked per step: the bit planes take ``8 * bits`` bytes per code, so a whole long file at
#: once would need memory in proportion to its length. A multiple of 8 keeps every step on a byte boundary.
_PACK_STEP = 1 << 18


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers ``< 2**bits`` into a little-endian bit stream."""
    values = np.asarray(codes).reshape(-1)
    shifts = np.arange(bits, dtype=np.uint64)
    parts = []
    for start in range(0, values.size, _PACK_STEP):
        part = values[start:start + _PACK_STEP].astype(np.uint64)
        planes = ((part[:, None] >> shifts) & 1).astype(np.uint8)
        parts.append(np.packbits(planes.reshape(-1), bitorder="little").tobytes())
    return b"".join(parts)


def unpack_codes(data: bytes, count: int, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_codes`: ``count`` integers (int64) from the first ``count * bits`` bits."""
    raw = np.frombuffer(data, dtype=np.uint8)
    weights = (1 << np.arange(bits, dtype=np.int64))
    out = np.empty(count, dtype=np.int64)
    step_bytes = _PACK_STEP * bits // 8
    for i, start in enumerate(range(0, count, _PACK_STEP)):
        n = min(_PACK_STEP, count - start)
        flat = np.unpackbits(raw[i * step_bytes:(i + 1) * step_bytes], count=n * bits, bitorder="little")
        out[start:start + n] = flat.reshape(n, bits).astype(np.int64) @ weights
    return out


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
    body = _PREFIX.pack(MAGIC, VERSION, len(head)) + head + payload
    if path.is_dir():
        raise CodecFileError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            tmp.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    except OSError as e:  # disk full, file too large, read-only or missing folder: nothing is left behind
        raise CodecFileError(f"cannot write {path}: {e.strerror or e}") from e
    return path


#: Bounds no real file comes near; a header beyond them is corrupt (and must not size an allocation).
_LIMITS = {"sample_rate": (1, 1_000_000), "channels": (1, 64), "num_codebooks": (1, 1024),
           "frames": (0, 10**9), "cardinality": (2, 1 << 24), "length": (0, 10**12), "segment_frames": (0, 10**9)}
_MAX_HEADER = 1 << 24


def _fail(path: Path, what: str) -> CodecFileError:
    return CodecFileError(f"{path}: corrupt .wcodec header ({what})")


def _check_header(path: Path, header: object, size_left: int) -> tuple[dict, int, int, int]:
    """Every field checked against its type, its bounds, the others and the bytes that follow, before anything is
    allocated from it. Returns ``(header, K, F, bits)``."""
    if not isinstance(header, dict):
        raise _fail(path, "not an object")
    for key, (low, high) in _LIMITS.items():
        value = header.get(key, 0 if key == "segment_frames" else None)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(path, f"{key}={value!r}" if key in header or key == "segment_frames" else f"no {key}")
    if not isinstance(header.get("model"), str):
        raise _fail(path, "model")
    k, f = header["num_codebooks"], header["frames"]
    bits = header.get("bits")
    if bits != bits_per_code(header["cardinality"]):
        raise _fail(path, f"bits={bits!r} for cardinality {header['cardinality']}")
    if header["segment_frames"] > f:
        raise _fail(path, f"segment_frames={header['segment_frames']} > frames={f}")
    segments = math.ceil(f / (header["segment_frames"] or f or 1)) if f else 0
    for key, count in (("scale", None), ("levels", segments)):
        values = header.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or (count is not None and len(values) != count) or len(values) > f + 1 \
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                           for v in values):
            raise _fail(path, key)
    if math.ceil(k * f * bits / 8) + 4 != size_left:
        raise CodecFileError(f"{path}: truncated or padded .wcodec file ({k} x {f} codes of {bits} bits need "
                             f"{math.ceil(k * f * bits / 8) + 4} bytes after the header, found {size_left})")
    return header, k, f, bits


def read_wcodec(path: str | Path) -> CodecFile:
    """Read a ``.wcodec`` file (versions 1 and 2); anything malformed is a one-line :class:`CodecFileError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CodecFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CodecFileError(f"{path}: is a folder, not a .wcodec file") from None
    except OSError as e:
        raise CodecFileError(f"{path}: cannot read ({e.strerror})") from None
    if len(data) < _PREFIX.size or data[:4] != MAGIC:
        raise CodecFileError(f"{path}: not a .wcodec file")
    _, version, head_len = _PREFIX.unpack_from(data)
    if version not in READ_VERSIONS:
        raise CodecFileError(f"{path}: .wcodec format version {version} is not supported (this reader: "
                             f"{', '.join(map(str, READ_VERSIONS))})")
    if version >= 2 and zlib.crc32(data[:-4]) != struct.unpack("<I", data[-4:])[0]:
        raise CodecFileError(f"{path}: .wcodec file is corrupt (checksum mismatch)")
    start = _PREFIX.size + head_len
    if head_len > _MAX_HEADER or start > len(data):
        raise CodecFileError(f"{path}: truncated .wcodec file ({len(data)} bytes)")
    try:
        header = json.loads(data[_PREFIX.size:start])
    except (ValueError, UnicodeDecodeError):
        raise _fail(path, "not JSON") from None
    header, k, f, bits = _check_header(path, header, len(data) - start)
    payload = data[start:len(data) - 4]
    if version == 1 and struct.unpack("<I", data[-4:])[0] != zlib.crc32(payload):
        raise CodecFileError(f"{path}: .wcodec payload is corrupt (checksum mismatch)")
    codes = unpack_codes(payload, k * f, bits).reshape(k, f)
    if codes.size and int(codes.max()) >= header["cardinality"]:
        raise CodecFileError(f"{path}: .wcodec codes exceed the cardinality {header['cardinality']}")
    scale = header.get("scale")
    return CodecFile(
        model=header["model"], sample_rate=header["sample_rate"], channels=header["channels"],
        cardinality=header["cardinality"], length=header["length"], codes=torch.from_numpy(codes),
        scale=None if scale is None else torch.tensor(scale, dtype=torch.float32),
        segment_frames=header["segment_frames"], levels=header.get("levels"))
