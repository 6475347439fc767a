"""Reading, probing and writing audio files.

soundfile (libsndfile) handles the formats it knows (wav, flac, ogg, mp3, aiff...); PyAV (FFmpeg) handles the
rest (m4a, aac, opus, mp4...) and any file libsndfile fails on. Every problem with a file raises
:class:`AudioFileError` and every unusable tensor or argument :class:`InvalidAudioError`, with one-line messages.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import torch

from ..errors import AudioFileError, InvalidAudioError, WavecraftError
from ..fileio import atomic_output
from . import _pyav, _sndfile
from .checks import (
    as_channels_first,
    check_flag,
    check_float_audio,
    check_memory,
    check_number,
    check_sample_rate,
    frame_span,
    short_repr,
)
from .normalize import normalize_audio

WRITE_FORMATS = ("wav", "flac", "ogg", "mp3")

# audio_read(pad=True) refuses to produce a padded result longer than this (seconds): padding allocates
# ``duration * sample_rate`` samples up front, so a typo such as duration=1e5 would otherwise take gigabytes.
# Raise it (wavecraft.audio.io.MAX_PAD_SECONDS = ...) for legitimately longer padded reads.
MAX_PAD_SECONDS = 3600.0

PathLike = str | os.PathLike

# Reasons for OS errors while writing, in words that name the fix rather than the C symbol.
_OS_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large",
    errno.ENAMETOOLONG: "file name too long",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a parent of the path is not a directory",
    errno.EISDIR: "the path is a directory",
    errno.ENOENT: "its directory does not exist",
}
# How much of the C libraries' stderr chatter is kept for an error message.
_CHATTER_BYTES = 4096


@dataclass(frozen=True)
class AudioInfo:
    """What :func:`audio_info` reports about an audio file."""

    sample_rate: int
    duration: float  # seconds
    channels: int


def _show(path: Path) -> str:
    """The path for an error message, kept on one line and printable whatever bytes the name holds."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


class _StderrCapture:
    """What the C libraries wrote to fd 2 while one :func:`_captured_stderr` block ran (see ``text``)."""

    def __init__(self) -> None:
        self.text = ""


_stderr_lock = threading.Lock()
_stderr_users = 0
_stderr_saved_fd: int | None = None
_stderr_sink: IO[bytes] | None = None
_av_saved_level: int | None = None


def _sink_fd() -> int | None:
    return _stderr_sink.fileno() if _stderr_sink is not None else None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for a few system calls, so that a Ctrl-C (or the CLI's SIGTERM handler, which
    raises KeyboardInterrupt) cannot land between redirecting fd 2 and recording it, leaving stderr lost for good."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    old = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, old)


def _redirect_stderr() -> None:
    global _stderr_saved_fd, _stderr_sink, _av_saved_level
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        sink: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by _restore_stderr
    except OSError:  # no writable temp dir (e.g. a full disk): still silence, keep nothing
        sink = open(os.devnull, "wb")  # noqa: SIM115
    try:
        saved: int | None = os.dup(2)
    except OSError:  # fd 2 is closed: nothing to silence
        saved = None
    if saved is not None:
        os.dup2(sink.fileno(), 2)
    _stderr_saved_fd, _stderr_sink = saved, sink
    av_logging = sys.modules.get("av.logging")
    if av_logging is not None:
        with contextlib.suppress(Exception):
            _av_saved_level = av_logging.get_level()
            if _av_saved_level is not None:
                av_logging.set_level(None)


def _restore_stderr() -> None:
    global _stderr_saved_fd, _stderr_sink, _av_saved_level
    if _stderr_saved_fd is not None:
        os.dup2(_stderr_saved_fd, 2)
        os.close(_stderr_saved_fd)
    if _stderr_sink is not None:
        with contextlib.suppress(OSError):
            _stderr_sink.close()
    _stderr_saved_fd, _stderr_sink = None, None
    av_logging = sys.modules.get("av.logging")
    if av_logging is not None and _av_saved_level is not None:
        with contextlib.suppress(Exception):
            av_logging.set_level(_av_saved_level)
    _av_saved_level = None


@contextlib.contextmanager
def _captured_stderr() -> Iterator[_StderrCapture]:
    """Send fd 2 to a temporary file while libsndfile/libmpg123/FFmpeg run, so their notes ("Note: Illegal Audio-MPEG
    header", "big_values too large!") never reach the user, whose only message is ours; ``capture.text`` holds what
    they said, for the error message when decoding fails.

    They write straight to fd 2 from C, so ``sys.stderr`` cannot catch them. fd 2 is per process: concurrent blocks
    (threads) share one redirection, counted under a lock, and it is restored when the last one ends. Anything
    other threads write to stderr meanwhile is dropped as well. FFmpeg's log, if someone turned it on through PyAV,
    is switched off for the same span.
    """
    global _stderr_users
    capture = _StderrCapture()
    with _signals_deferred(), _stderr_lock:
        if _stderr_users == 0:
            _redirect_stderr()
        _stderr_users += 1
        start = _tell(_sink_fd())
    try:
        yield capture
    finally:
        with _signals_deferred(), _stderr_lock:
            fd = _sink_fd()
            end = _tell(fd)
            if fd is not None and end > start:
                with contextlib.suppress(OSError):
                    offset = max(start, end - _CHATTER_BYTES)
                    capture.text = os.pread(fd, end - offset, offset).decode("utf-8", "replace")
            _stderr_users -= 1
            if _stderr_users == 0:
                _restore_stderr()


def _tell(fd: int | None) -> int:
    if fd is None:
        return 0
    try:
        return os.fstat(fd).st_size
    except OSError:
        return 0


# libmpg123 prefixes its notes with the source location: "[src/libmpg123/parse.c:do_readahead():1083] warning: ".
_SOURCE_PREFIX = re.compile(r"^\[[^\]]*\]\s*")


def _chatter(capture: _StderrCapture) -> str:
    """The last thing the C libraries said, on one short line, or '' if they said nothing."""
    lines = [_SOURCE_PREFIX.sub("", " ".join(line.split())) for line in capture.text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    last = "".join(c if c.isprintable() else "?" for c in lines[-1])
    return last if len(last) <= 160 else last[:157] + "..."


def _input_file(path: PathLike) -> Path:
    """Return ``path`` as a Path if it is a readable, non-empty regular file; raise AudioFileError otherwise."""
    try:
        path = Path(path)
    except TypeError:
        raise AudioFileError(f"audio path must be a str or os.PathLike, got {type(path).__name__}") from None
    if "\0" in str(path):
        raise AudioFileError(f"audio path contains a NUL byte: {_show(path)}")
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


def _decode_error(path: Path, error: BaseException, capture: _StderrCapture | None = None) -> AudioFileError:
    said = _chatter(capture) if capture is not None else ""
    detail = f" (decoder: {said})" if said else ""
    return AudioFileError(f"cannot decode audio file {_show(path)}: {_pyav.error_reason(error)}{detail}")


def _no_stream_error(path: Path) -> AudioFileError:
    return AudioFileError(f"no audio stream in file {_show(path)}")


def _probe(path: Path) -> AudioInfo:
    with _captured_stderr() as capture:
        if _use_soundfile(path):
            try:
                sample_rate, channels, frames = _sndfile.probe(path)
                if sample_rate > 0:
                    return AudioInfo(sample_rate, frames / sample_rate, channels)
            except _sndfile.ERRORS:
                pass  # PyAV may still read it (e.g. a misnamed m4a)
        try:
            sample_rate, channels, duration = _pyav.probe(path)
        except _pyav.NoAudioStreamError:
            raise _no_stream_error(path) from None
        except (*_pyav.errors(), OverflowError, MemoryError) as e:
            error = e
        else:
            error = None
    if error is not None:
        raise _decode_error(path, error, capture) from error
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
    with _captured_stderr() as capture:
        if _use_soundfile(path):
            try:
                return _sndfile.read(path, seek_time, duration)
            except _sndfile.ERRORS:
                pass  # fall back to FFmpeg, which reports the error if it cannot decode the file either
        try:
            return _pyav.read(path, seek_time, duration)
        except _pyav.NoAudioStreamError:
            raise _no_stream_error(path) from None
        except (*_pyav.errors(), OverflowError, MemoryError) as e:
            error = e
    # Raised outside the capture so that the error text can include what the decoder printed.
    raise _decode_error(path, error, capture) from error


def _seconds(value: object, name: str, path: Path) -> float:
    try:
        return check_number(value, name)
    except InvalidAudioError:
        pass
    if isinstance(value, float) or (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()
                                    and math.isnan(float(value))):
        raise AudioFileError(f"{name} is NaN, reading {_show(path)}")
    raise AudioFileError(f"{name} must be a number of seconds, got {short_repr(value)}, reading {_show(path)}")


def audio_read(
    path: PathLike, seek_time: float = 0.0, duration: float = -1.0, pad: bool = False
) -> tuple[torch.Tensor, int]:
    """Decode an audio file to ``(wav [C, T] float32, sample_rate)`` at its own rate and channel count.

    Reading starts at sample ``int(seek_time * sample_rate)`` (floored, as in AudioCraft). ``duration > 0`` reads
    at most ``int(duration * sample_rate)`` samples, and with ``pad`` the result is zero-padded to exactly that
    many (also when ``seek_time`` is past the end). Without ``pad``, seeking to or past the end raises
    :class:`AudioFileError`, as do a missing, empty, corrupt or sample-less file and a negative ``seek_time``. A
    file truncated inside its audio data (e.g. an interrupted download) yields the samples that are there, as most
    decoders do. A padded result longer than :data:`MAX_PAD_SECONDS`, or one that would not fit in the available
    memory, raises :class:`AudioFileError` instead of allocating it; C decoders' notes on stderr are suppressed.
    """
    path = _input_file(path)
    seek_time = _seconds(seek_time, "seek_time", path)
    duration = _seconds(duration, "duration", path)
    try:
        pad = check_flag(pad, "pad")
    except InvalidAudioError as e:
        raise AudioFileError(f"{e}, reading {_show(path)}") from None
    if seek_time < 0:
        raise AudioFileError(f"seek_time must be >= 0, got {seek_time:g} s, reading {_show(path)}")
    if math.isinf(seek_time):
        raise AudioFileError(f"seek_time must be finite, got {seek_time:g}, reading {_show(path)}")

    data, sample_rate = _decode(path, seek_time, duration)
    if data.ndim != 2 or data.shape[0] == 0 or sample_rate <= 0:
        raise AudioFileError(f"audio has no channels or no sample rate in file {_show(path)}")
    _, target = frame_span(sample_rate, seek_time, duration)
    padding = pad and target > 0
    if padding and data.shape[1] < target:
        _check_padding(path, target, data.shape[0], sample_rate)
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


def _check_padding(path: Path, target: int, channels: int, sample_rate: int) -> None:
    """Refuse a padded read of ``target`` frames that is longer than MAX_PAD_SECONDS or cannot fit in memory."""
    seconds = target / sample_rate
    if seconds > MAX_PAD_SECONDS:
        raise AudioFileError(f"duration {seconds:g} s with pad=True is longer than the padding limit of "
                             f"{MAX_PAD_SECONDS:g} s (wavecraft.audio.io.MAX_PAD_SECONDS), reading {_show(path)}")
    try:
        check_memory(target * channels * 4, f"padding to {seconds:g} s x {channels} channels")
    except InvalidAudioError as e:
        raise AudioFileError(f"{e}, reading {_show(path)}") from None


def _output_path(stem_name: PathLike, format: str, add_suffix: bool) -> Path:
    try:
        stem = os.fspath(stem_name)
    except TypeError:
        raise InvalidAudioError(f"stem_name must be a str or os.PathLike, got {type(stem_name).__name__}") from None
    if isinstance(stem, bytes):
        stem = os.fsdecode(stem)
    if "\0" in stem:
        raise InvalidAudioError(f"stem_name contains a NUL byte: {_show(Path(stem))}")
    return Path(f"{stem}.{format}") if add_suffix else Path(stem)


def _write_reason(error: BaseException) -> str:
    """One-line reason for a failed write, in words (errno names the problem better than libsndfile does)."""
    if isinstance(error, _sndfile.WriteError):
        return str(error.strerror)
    if isinstance(error, OSError):
        if error.errno in _OS_REASONS:
            return _OS_REASONS[error.errno]
        if error.strerror:
            return " ".join(error.strerror.split())
    return _sndfile.error_reason(error)


def _check_output(path: Path, make_parent_dir: bool) -> None:
    """Raise AudioFileError, before anything is encoded, if ``path`` clearly cannot be written."""
    fail = f"cannot write audio file {_show(path)}"
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX") if path.parent.is_dir() else 255
    except (OSError, ValueError):
        limit = 255
    if len(os.fsencode(path.name)) > limit:
        raise AudioFileError(f"{fail}: file name too long ({len(os.fsencode(path.name))} bytes, the limit is {limit})")
    try:
        if path.is_dir():
            raise AudioFileError(f"cannot write audio file, the path is a directory: {_show(path)}")
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise AudioFileError(f"{fail}: {_show(parent)} is a file, not a directory")
                break
        if not path.parent.is_dir():
            if not make_parent_dir:
                raise AudioFileError(f"cannot write audio file, its directory does not exist: {_show(path)}")
            path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise AudioFileError(f"{fail}: permission denied (directory {_show(path.parent)} is not writable)")
    except OSError as e:
        raise AudioFileError(f"{fail}: {_write_reason(e)}") from e


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

    ``format`` is 'wav' (at most 1024 channels) or 'flac' (at most 8; both 16-bit PCM, rounded to nearest as
    AudioCraft's ``i16_pcm``: see :func:`_sndfile.pcm16`), 'ogg' (Vorbis, at most 255 channels and 200 kHz,
    ``ogg_rate`` 32-500 kbps nominal if given) or 'mp3' (constant ``mp3_rate`` kbps in 8-320, snapped to a
    standard bitrate of the MPEG version; sample rates 8000-48000 of the MPEG family only, at most 2 channels).
    ``sample_rate`` is an integer in [1, 2**31 - 1]. ``add_suffix`` appends ``.{format}`` to ``stem_name``. The
    normalization arguments mean what they mean for :func:`normalize_audio`; flags must be real booleans.

    The file is written to a hidden temporary file in the same directory and renamed over the target, so a failed
    write leaves neither a partial file nor a temporary one, and an existing file stays as it was. Bad tensors or
    arguments (every one is checked, used by the format or not) raise :class:`InvalidAudioError` before anything
    touches the disk; I/O failures raise :class:`AudioFileError` with the reason in words ("no space left on
    device", "file too large", "file name too long", "permission denied"...).
    """
    add_suffix = check_flag(add_suffix, "add_suffix")
    if not isinstance(format, str) or format.lower() not in WRITE_FORMATS:
        where = _show(_output_path(stem_name, "", False))
        raise InvalidAudioError(f"unknown audio format {short_repr(format)} for {where}; "
                                f"expected one of {', '.join(WRITE_FORMATS)}")
    format = format.lower()
    path = _output_path(stem_name, format, add_suffix)
    name = f"audio for {_show(path)}"
    wav = check_float_audio(as_channels_first(wav, name=name), name=name)
    sample_rate = check_sample_rate(sample_rate)
    make_parent_dir = check_flag(make_parent_dir, "make_parent_dir")
    # mp3_rate/ogg_rate are range-checked whatever the format, so a typo is not ignored just because it is unused.
    _sndfile.check_kbps(mp3_rate, "mp3_rate", _sndfile.MP3_KBPS_RANGE)
    if ogg_rate is not None:
        _sndfile.check_kbps(ogg_rate, "ogg_rate", _sndfile.OGG_KBPS_RANGE)
    settings = _sndfile.encoder_settings(format, wav.shape[0], sample_rate, mp3_rate, ogg_rate, frames=wav.shape[1])
    wav = normalize_audio(wav, normalize, strategy, peak_clip_headroom_db, rms_headroom_db, loudness_headroom_db,
                          loudness_compressor, log_clipping=log_clipping, sample_rate=sample_rate,
                          stem_name=_show(path))
    # Clamp so no encoder sees out-of-range input ('peak'/'clip' with a negative headroom can exceed 1).
    data = np.ascontiguousarray(wav.detach().to("cpu", torch.float32).clamp(-1, 1).numpy().T)

    _check_output(path, make_parent_dir)
    try:
        with atomic_output(path) as tmp, _captured_stderr():
            _sndfile.write(tmp, data, sample_rate, settings)
    except WavecraftError:
        raise
    except (*_sndfile.ERRORS, OverflowError, MemoryError) as e:
        raise AudioFileError(f"cannot write audio file {_show(path)}: {_write_reason(e)}") from e
    return path
