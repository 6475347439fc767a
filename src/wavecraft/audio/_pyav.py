"""PyAV (FFmpeg) backend: probing and decoding of formats libsndfile does not handle (m4a, aac, opus, mp4...).

``av`` is imported inside the functions: it is heavy and only needed for these formats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .checks import frame_span

# Seek this much before the requested time and drop the excess: right after a seek, decoders produce damaged
# audio until their state settles. mp3 (bit reservoir) needs ~0.1 s; Opus needed 0.3 s here to decode the
# same samples as a read from the start, so use a margin that covers both.
_SEEK_MARGIN_S = 0.5

# Integer sample formats and the scale that maps them to [-1, 1).
_INT_SCALE = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31, np.dtype(np.int64): 2.0**63}


class NoAudioStreamError(Exception):
    """The container opened but holds no audio stream."""


class BrokenStreamError(ValueError):
    """The audio stream's parameters are missing or unusable (a damaged header)."""


def _stream_format(stream: Any) -> tuple[int, int]:
    """``(sample_rate, channels)`` of ``stream``, or :class:`BrokenStreamError` when a damaged header lacks them
    (PyAV then has no codec context and raises AttributeError for every field)."""
    try:
        sample_rate, channels = int(stream.sample_rate or 0), int(stream.channels or 0)
    except (AttributeError, TypeError, ValueError, OverflowError):
        raise BrokenStreamError("the audio stream has no usable sample rate or channel count") from None
    if sample_rate <= 0 or channels <= 0:
        raise BrokenStreamError(f"the audio stream has {sample_rate} Hz and {channels} channels")
    return sample_rate, channels


def errors() -> tuple[type[BaseException], ...]:
    """Exceptions PyAV raises for unreadable or undecodable files."""
    import av

    return (av.FFmpegError, OSError, EOFError, ValueError)


def error_reason(error: BaseException) -> str:
    """The reason part of a PyAV error (without errno and file name), on one line."""
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return " ".join(str(reason).split())


def _audio_stream(container: Any) -> Any:
    if not container.streams.audio:
        raise NoAudioStreamError
    return container.streams.audio[0]


def _start_offset(stream: Any) -> float:
    """Timestamp (s) of the first sample: e.g. mp3 streams start after the encoder delay, not at 0."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def probe(path: Path) -> tuple[int, int, float]:
    """Return ``(sample_rate, channels, duration_s)``; decodes the stream when the container has no duration."""
    import av

    with av.open(str(path)) as container:
        stream = _audio_stream(container)
        sample_rate, channels = _stream_format(stream)
        if stream.duration is not None and stream.time_base is not None:
            return sample_rate, channels, float(stream.duration * stream.time_base)
        if container.duration is not None:
            return sample_rate, channels, container.duration / av.time_base
        samples = sum(frame.samples for frame in container.decode(stream))
        return sample_rate, channels, samples / sample_rate if sample_rate else 0.0


def _to_float(frame: Any) -> np.ndarray:
    """Decoded frame -> ``wav [C, n]`` float32, whatever FFmpeg's sample format (planar or packed, int or float)."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        data = data.reshape(-1, channels).T  # packed [1, n * C] is interleaved
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype in _INT_SCALE:
        return (data / _INT_SCALE[data.dtype]).astype(np.float32)
    return data.astype(np.float32, copy=False)


def _decode(container: Any, stream: Any, start: int, num_frames: int, seek: bool) -> list[np.ndarray] | None:
    """Decode ``num_frames`` (all if negative) from sample ``start``; ``None`` if the seek landed past ``start``."""
    sample_rate = stream.sample_rate
    origin = _start_offset(stream)
    if seek:
        target = max(0.0, start / sample_rate - _SEEK_MARGIN_S) + origin
        container.seek(int(target / stream.time_base), stream=stream)
    chunks: list[np.ndarray] = []
    got = 0
    position = 0  # sample index of the next frame, for frames without timestamps
    first = True
    for frame in container.decode(stream):
        if frame.time is not None:
            position = round((frame.time - origin) * sample_rate)
        if first and seek and position > start:
            return None
        first = False
        data = _to_float(frame)
        skip = start - position
        position += data.shape[1]
        if skip >= data.shape[1]:
            continue
        if skip > 0:
            data = data[:, skip:]
        if num_frames >= 0:
            data = data[:, : num_frames - got]
        chunks.append(data)
        got += data.shape[1]
        if 0 <= num_frames <= got:
            break
    return chunks


def read(path: Path, seek_time: float, duration: float) -> tuple[np.ndarray, int]:
    """Read ``duration`` s (all if not > 0) from ``seek_time`` s: ``(wav [C, T] float32, sample_rate)``.

    Seeks a little before ``seek_time`` and drops the extra samples. If the container cannot seek, or lands past the
    requested time, decoding restarts from the beginning. An empty result means ``start`` is past the end.
    """
    import av

    with av.open(str(path)) as container:
        stream = _audio_stream(container)
        sample_rate, channels = _stream_format(stream)
        start, num_frames = frame_span(sample_rate, seek_time, duration)
        chunks = None
        if start > 0:
            try:
                chunks = _decode(container, stream, start, num_frames, seek=True)
            except (av.FFmpegError, OverflowError, TypeError, ZeroDivisionError):
                chunks = None  # not seekable: fall through to a plain decode
    if chunks is None:
        with av.open(str(path)) as container:
            stream = _audio_stream(container)
            chunks = _decode(container, stream, start, num_frames, seek=False)
    if not chunks:
        return np.zeros((channels, 0), dtype=np.float32), sample_rate
    return np.ascontiguousarray(np.concatenate(chunks, axis=1)), sample_rate
