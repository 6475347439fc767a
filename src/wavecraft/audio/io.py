"""Reading, probing and writing audio files.

soundfile (libsndfile) handles the formats it knows (wav, flac, ogg, mp3, aiff...); PyAV (FFmpeg) handles the
rest (m4a, aac, opus, mp4...) and any file libsndfile fails on. Every problem with a file raises
:class:`AudioFileError` and every unusable tensor or argument :class:`InvalidAudioError`, with one-line messages.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import AudioFileError, InvalidAudioError
from ..fileio import atomic_output
from . import _pyav, _sndfile
from .checks import as_channels_first, check_float_audio, check_sample_rate, frame_span
from .normalize import normalize_audio

WRITE_FORMATS = ("wav", "flac", "ogg", "mp3")

PathLike = str | os.PathLike


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`audio_info` reports about an audio file."""

    sample_rate: int
    duration: float  # seconds
    channels: int


def _show(path: Path) -> str:
    """The path for an error message, kept on one line even if the name has line breaks."""
    return str(path).replace("\r", "\\r").replace("\n", "\\n")


def _input_file(path: PathLike) -> Path:
    """Return ``path`` as a Path if it is a readable, non-empty regular file; raise AudioFileError otherwise."""
    try:
        path = Path(path)
    except TypeError:
        raise AudioFileError(f"audio path must be a str or os.PathLike, got {type(path).__name__}") from None
    try:
        if not path.exists():
            raise AudioFileError(f"audio file not found: {_show(path)}")
        if path.is_dir():
            raise AudioFileError(f"audio path is a directory, not a file: {_show(path)}")
        if not path.is_file():
            raise AudioFileError(f"audio path is not a regular file: {_show(path)}")
        if path.stat().st_size == 0:
            raise AudioFileError(f"audio file is empty (0 bytes): {_show(path)}")
    except OSError as e:
        raise AudioFileError(f"cannot access audio file {_show(path)}: {e.strerror or e}") from e
    if not os.access(path, os.R_OK):
        raise AudioFileError(f"cannot read audio file (permission denied): {_show(path)}")
    return path


def _use_soundfile(path: Path) -> bool:
    return path.suffix.lower() in _sndfile.READ_SUFFIXES


def _decode_error(path: Path, error: BaseException) -> AudioFileError:
    return AudioFileError(f"cannot decode audio file {_show(path)}: {_pyav.error_reason(error)}")


def _no_stream_error(path: Path) -> AudioFileError:
    return AudioFileError(f"no audio stream in file {_show(path)}")


def _probe(path: Path) -> AudioInfo:
    if _use_soundfile(path):
        try:
            sample_rate, channels, frames = _sndfile.probe(path)
            return AudioInfo(sample_rate, frames / sample_rate, channels)
        except _sndfile.ERRORS:
            pass  # PyAV may still read it (e.g. a misnamed m4a)
    try:
        sample_rate, channels, duration = _pyav.probe(path)
    except _pyav.NoAudioStreamError:
        raise _no_stream_error(path) from None
    except _pyav.errors() as e:
        raise _decode_error(path, e) from e
    if sample_rate <= 0 or channels <= 0:
        raise AudioFileError(f"audio stream has no sample rate or no channels in file {_show(path)}")
    return AudioInfo(sample_rate, duration, channels)


def audio_info(path: PathLike) -> AudioInfo:
    """Sample rate, duration (seconds) and channel count of an audio file, without decoding it where possible.

    The duration comes from the container; for some formats (raw ADTS aac, VBR mp3 without a header) it is the
    container's estimate. A file with a header but no samples reports duration 0.
    """
    return _probe(_input_file(path))


def _decode(path: Path, seek_time: float, duration: float) -> tuple[np.ndarray, int]:
    if _use_soundfile(path):
        try:
            return _sndfile.read(path, seek_time, duration)
        except _sndfile.ERRORS:
            pass  # fall back to FFmpeg, which reports the error if it cannot decode the file either
    try:
        return _pyav.read(path, seek_time, duration)
    except _pyav.NoAudioStreamError:
        raise _no_stream_error(path) from None
    except _pyav.errors() as e:
        raise _decode_error(path, e) from e


def _seconds(value: object, name: str, path: Path) -> float:
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AudioFileError(f"{name} must be a number of seconds, got {value!r}, reading {_show(path)}") from None
    if math.isnan(seconds):
        raise AudioFileError(f"{name} is NaN, reading {_show(path)}")
    return seconds


def audio_read(
    path: PathLike, seek_time: float = 0.0, duration: float = -1.0, pad: bool = False
) -> tuple[torch.Tensor, int]:
    """Decode an audio file to ``(wav [C, T] float32, sample_rate)`` at its own rate and channel count.

    Reading starts at sample ``int(seek_time * sample_rate)`` (floored, as in AudioCraft). ``duration > 0`` reads
    at most ``int(duration * sample_rate)`` samples, and with ``pad`` the result is zero-padded to exactly that
    many (also when ``seek_time`` is past the end). Without ``pad``, seeking to or past the end raises
    :class:`AudioFileError`, as do a missing, empty, corrupt or sample-less file and a negative ``seek_time``. A
    file truncated inside its audio data (e.g. an interrupted download) yields the samples that are there, as most
    decoders do.
    """
    path = _input_file(path)
    seek_time = _seconds(seek_time, "seek_time", path)
    duration = _seconds(duration, "duration", path)
    if seek_time < 0:
        raise AudioFileError(f"seek_time must be >= 0, got {seek_time:g} s, reading {_show(path)}")
    if math.isinf(seek_time):
        raise AudioFileError(f"seek_time must be finite, got {seek_time:g}, reading {_show(path)}")

    data, sample_rate = _decode(path, seek_time, duration)
    if data.shape[0] == 0 or sample_rate <= 0:
        raise AudioFileError(f"audio has no channels or no sample rate in file {_show(path)}")
    _, target = frame_span(sample_rate, seek_time, duration)
    padding = pad and target > 0
    if data.shape[1] == 0:
        # Empty read: tell a file without samples apart from a seek past the end (which pad may fill).
        total = 0.0 if seek_time == 0 else _probe(path).duration
        if total <= 0:
            raise AudioFileError(f"audio file contains no audio samples: {_show(path)}")
        if not padding:
            raise AudioFileError(f"seek_time {seek_time:g} s is at or beyond the end of audio file {_show(path)} "
                                 f"(duration {total:.3f} s)")
    wav = torch.from_numpy(data)
    if padding and wav.shape[1] < target:
        wav = torch.nn.functional.pad(wav, (0, target - wav.shape[1]))
    return wav, sample_rate


def _output_path(stem_name: PathLike, format: str, add_suffix: bool) -> Path:
    try:
        stem = os.fspath(stem_name)
    except TypeError:
        raise InvalidAudioError(f"stem_name must be a str or os.PathLike, got {type(stem_name).__name__}") from None
    return Path(f"{stem}.{format}") if add_suffix else Path(stem)


def _check_rate_kbps(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < float("inf"):
        raise InvalidAudioError(f"{name} must be a positive number of kbps, got {value!r}")


def audio_write(
    stem_name: PathLike,
    wav: torch.Tensor,
    sample_rate: int,
    format: str = "wav",
    mp3_rate: int = 320,
    ogg_rate: int | None = None,
    normalize: bool = True,
    strategy: str = "peak",
    peak_clip_headroom_db: float = 1,
    rms_headroom_db: float = 18,
    loudness_headroom_db: float = 14,
    loudness_compressor: bool = False,
    log_clipping: bool = True,
    make_parent_dir: bool = True,
    add_suffix: bool = True,
) -> Path:
    """Normalize ``wav [C, T]`` (or ``[T]``) with :func:`normalize_audio` and write it; returns the file's path.

    ``format`` is 'wav' or 'flac' (16-bit PCM, rounded to nearest as AudioCraft's ``i16_pcm``: see
    :func:`_sndfile.pcm16`), 'ogg' (Vorbis, ``ogg_rate`` kbps nominal if given) or 'mp3' (constant ``mp3_rate``
    kbps, snapped to a standard bitrate; sample rates 8000-48000 of the MPEG family only, at most 2 channels).
    ``add_suffix`` appends ``.{format}`` to ``stem_name``. The normalization arguments mean
    what they mean for :func:`normalize_audio`.

    The file is written to a hidden temporary file in the same directory and renamed over the target, so a failed
    write leaves neither a partial file nor a temporary one, and an existing file stays as it was. Bad tensors or
    arguments raise :class:`InvalidAudioError` before anything touches the disk; I/O failures raise
    :class:`AudioFileError`.
    """
    if not isinstance(format, str) or format.lower() not in WRITE_FORMATS:
        raise InvalidAudioError(f"unknown audio format {format!r} for {_show(_output_path(stem_name, '', False))}; "
                                f"expected one of {', '.join(WRITE_FORMATS)}")
    format = format.lower()
    path = _output_path(stem_name, format, add_suffix)
    name = f"audio for {_show(path)}"
    wav = check_float_audio(as_channels_first(wav, name=name), name=name)
    sample_rate = check_sample_rate(sample_rate)
    _check_rate_kbps(mp3_rate, "mp3_rate")
    if ogg_rate is not None:
        _check_rate_kbps(ogg_rate, "ogg_rate")
    settings = _sndfile.encoder_settings(format, wav.shape[0], sample_rate, mp3_rate, ogg_rate)
    wav = normalize_audio(wav, normalize, strategy, peak_clip_headroom_db, rms_headroom_db, loudness_headroom_db,
                          loudness_compressor, log_clipping=log_clipping, sample_rate=sample_rate,
                          stem_name=_show(path))
    # Clamp so no encoder sees out-of-range input ('peak'/'clip' with a negative headroom can exceed 1).
    data = np.ascontiguousarray(wav.detach().to("cpu", torch.float32).clamp(-1, 1).numpy().T)

    if path.is_dir():
        raise AudioFileError(f"cannot write audio file, the path is a directory: {_show(path)}")
    try:
        if make_parent_dir:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.parent.is_dir():
            raise AudioFileError(f"cannot write audio file, its directory does not exist: {_show(path)}")
        with atomic_output(path) as tmp:
            _sndfile.write(tmp, data, sample_rate, settings)
    except _sndfile.ERRORS as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else _sndfile.error_reason(e)
        raise AudioFileError(f"cannot write audio file {_show(path)}: {reason}") from e
    return path
