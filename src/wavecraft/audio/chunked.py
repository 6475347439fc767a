"""Segment-wise audio I/O: reading, resampling and writing long files in memory that does not grow with them.

* :func:`open_audio_stream` decodes a file block by block, with the backend :func:`~wavecraft.audio.audio_read`
  would use (libsndfile for the formats it knows, PyAV/FFmpeg for the rest), so the blocks join up to exactly the
  samples ``audio_read`` returns.
* :class:`StreamConverter` converts blocks to another rate and channel count with soxr's streaming resampler;
  the joined output equals :func:`~wavecraft.audio.convert_audio` of the whole file sample for sample.
* :func:`open_audio_writer` writes blocks to a wav/flac/ogg/mp3 file with the encoder settings of
  :func:`~wavecraft.audio.audio_write`, all or nothing (:func:`~wavecraft.fileio.atomic_output`). Disk-full and
  similar failures are one-line :class:`AudioFileError`\\ s naming the OS error ("No space left on device").
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from ..errors import AudioFileError, InvalidAudioError
from ..fileio import atomic_output
from . import _pyav, _sndfile
from .checks import check_sample_rate
from .convert import _SOXR_QUALITY, convert_audio_channels
from .io import WRITE_FORMATS, _captured_stderr, _show, audio_info

#: Frames per block read from a file (about 1.5 s at 44.1 kHz: large enough that per-block overhead is noise).
BLOCK_FRAMES = 1 << 16


class AudioStream:
    """An open audio file read block by block: ``sample_rate``, ``channels`` and :meth:`blocks`.

    Use through :func:`open_audio_stream`; :meth:`blocks` can be iterated once.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, blocks: Iterator[np.ndarray],
                 duration: float = 0.0) -> None:
        self.path = path
        self.duration = duration  # seconds, the container's (an estimate for some formats; 0 if unknown)
        self.sample_rate = sample_rate
        self.channels = channels
        self._blocks = blocks

    def blocks(self) -> Iterator[np.ndarray]:
        """Blocks ``[C, n]`` float32 (``n >= 1``), in order; :class:`AudioFileError` if the file has no samples or
        fails to decode part way."""
        total = 0
        for block in self._blocks:
            if block.shape[1]:
                total += block.shape[1]
                yield block
        if total == 0:
            raise AudioFileError(f"audio file contains no audio samples: {_show(self.path)}")


def _sndfile_blocks(handle: sf.SoundFile, path: Path, block_frames: int) -> Iterator[np.ndarray]:
    while True:
        try:
            # each read alone: libmpg123's notes on a damaged mp3 must not reach the terminal, but a progress bar
            # drawn between two reads must
            with _captured_stderr():
                data = handle.read(block_frames, dtype="float32", always_2d=True)
        except _sndfile.ERRORS as e:
            raise AudioFileError(f"cannot decode audio file {_show(path)}: {_sndfile.error_reason(e)}") from e
        if data.shape[0] == 0:
            return
        yield np.ascontiguousarray(data.T)


def _pyav_blocks(container: Any, path: Path, block_frames: int) -> Iterator[np.ndarray]:
    """FFmpeg's frames joined into blocks of about ``block_frames``; the same samples as ``_pyav.read`` from 0."""
    stream = _pyav._audio_stream(container)
    pending: list[np.ndarray] = []
    count = 0
    frames = container.decode(stream)
    try:
        while True:
            with _captured_stderr():  # FFmpeg's warnings, per frame (see _sndfile_blocks)
                frame = next(frames, None)
            if frame is None:
                break
            data = _pyav._to_float(frame)
            pending.append(data)
            count += data.shape[1]
            if count >= block_frames:
                yield np.ascontiguousarray(np.concatenate(pending, axis=1))
                pending, count = [], 0
    except _pyav.errors() as e:
        raise AudioFileError(f"cannot decode audio file {_show(path)}: {_pyav.error_reason(e)}") from e
    if pending:
        yield np.ascontiguousarray(np.concatenate(pending, axis=1))


@contextlib.contextmanager
def open_audio_stream(path: str | os.PathLike, block_frames: int = BLOCK_FRAMES) -> Iterator[AudioStream]:
    """Open ``path`` for reading block by block (see :class:`AudioStream`); closed on exit.

    A missing, empty, unreadable or undecodable file is an :class:`AudioFileError` with the messages of
    :func:`~wavecraft.audio.audio_read`.
    """
    path = Path(path)
    info = audio_info(path)  # the checks and messages of audio_read for missing, empty and unreadable files
    if path.suffix.lower() in _sndfile.READ_SUFFIXES:
        try:
            with _captured_stderr():
                handle = sf.SoundFile(str(path))
        except _sndfile.ERRORS:
            handle = None  # PyAV may still read it, as audio_read falls back
        if handle is not None:
            with handle:
                yield AudioStream(path, int(handle.samplerate), int(handle.channels),
                                  _sndfile_blocks(handle, path, block_frames), info.duration)
            return
    import av

    try:
        with _captured_stderr():
            container = av.open(str(path))
        stream = _pyav._audio_stream(container)
    except _pyav.NoAudioStreamError:
        raise AudioFileError(f"no audio stream in file {_show(path)}") from None
    except _pyav.errors() as e:
        raise AudioFileError(f"cannot decode audio file {_show(path)}: {_pyav.error_reason(e)}") from e
    with container:
        try:
            sample_rate, channels = _pyav._stream_format(stream)
        except _pyav.BrokenStreamError as e:
            raise AudioFileError(f"cannot decode audio file {_show(path)}: {e}") from None
        yield AudioStream(path, sample_rate, channels, _pyav_blocks(container, path, block_frames),
                          info.duration)


class StreamConverter:
    """Rate and channel conversion of consecutive blocks, equal to :func:`~wavecraft.audio.convert_audio` of
    their concatenation: channels reduced first when that leaves less to resample, soxr's streaming resampler
    (same quality), then channels converted.

    ``process(block [C, n]) -> [C', m]`` for each block in order, then ``flush() -> [C', m]`` once for the
    resampler's tail. Blocks may have any length; ``m`` may be 0.
    """

    def __init__(self, from_rate: int, to_rate: int, from_channels: int, to_channels: int) -> None:
        self.from_rate = check_sample_rate(from_rate, name="from_rate")
        self.to_rate = check_sample_rate(to_rate, name="to_rate")
        self.to_channels = to_channels
        self._reduce = to_channels < from_channels
        mid_channels = to_channels if self._reduce else from_channels
        self._stream = None
        if self.from_rate != self.to_rate:
            import soxr

            self._stream = soxr.ResampleStream(self.from_rate, self.to_rate, mid_channels, dtype="float32",
                                               quality=_SOXR_QUALITY)
        self._mid_channels = mid_channels

    def _resample(self, wav: torch.Tensor, last: bool) -> torch.Tensor:
        if self._stream is None:
            return wav.to(torch.float32)
        data = np.ascontiguousarray(wav.detach().to("cpu", torch.float32).numpy().T)  # soxr takes [T, C]
        out = self._stream.resample_chunk(data, last=last)
        out = np.asarray(out, dtype=np.float32).reshape(-1, self._mid_channels)
        return torch.from_numpy(np.ascontiguousarray(out.T))

    def process(self, block: torch.Tensor, last: bool = False) -> torch.Tensor:
        """``block [C, n] -> [C', m]``; ``last`` also flushes the resampler (then do not call :meth:`flush`)."""
        if self._reduce:
            block = convert_audio_channels(block, self.to_channels)
        return convert_audio_channels(self._resample(block, last), self.to_channels)

    def flush(self) -> torch.Tensor:
        """The resampler's remaining output ``[C', m]`` after the last block."""
        return self.process(torch.zeros(self._mid_channels, 0), last=True)


class _RecordingFile(io.RawIOBase):
    """A raw file for libsndfile's virtual I/O that remembers the first OS error instead of raising it.

    An exception raised inside the C callback would be printed as a traceback and turned into a silent short
    write; this keeps the error (with its errno: ENOSPC, EFBIG, EIO...) for a one-line message afterwards.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = open(path, "r+b", buffering=0)  # noqa: SIM115 - closed in close()
        self.error: OSError | None = None

    def _fail(self, error: OSError) -> None:
        if self.error is None:
            self.error = error

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        if self.error is not None:
            return 0
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):  # a raw write may be partial
                n = self._file.write(view[done:])
                if not n:
                    raise OSError(errno.EIO, os.strerror(errno.EIO))
                done += n
        except OSError as e:
            self._fail(e)
        return done

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        try:
            return self._file.read(size) or b""
        except OSError as e:
            self._fail(e)
            return b""

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        try:
            return self._file.seek(offset, whence)
        except OSError as e:
            self._fail(e)
            return self.tell()

    def tell(self) -> int:
        try:
            return self._file.tell()
        except OSError as e:
            self._fail(e)
            return 0

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:
            self._fail(e)
        super().close()


class AudioWriter:
    """Appends blocks ``[C, n]`` (float, nominally in [-1, 1]) to the file opened by :func:`open_audio_writer`."""

    def __init__(self, path: Path, handle: sf.SoundFile, raw: _RecordingFile, subtype: str, channels: int) -> None:
        self.path = path
        self._handle = handle
        self._raw = raw
        self._subtype = subtype
        self.channels = channels
        self.frames = 0

    def _check(self, error: BaseException | None = None) -> None:
        failure = self._raw.error or error
        if failure is not None:
            raise _write_error(self.path, failure) from failure

    def write(self, wav: torch.Tensor) -> None:
        """Append ``wav [C, n]``: clipped to [-1, 1], 16-bit PCM rounded per block (:func:`_sndfile.pcm_data`)."""
        if not isinstance(wav, torch.Tensor) or wav.dim() != 2 or wav.shape[0] != self.channels:
            shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
            raise InvalidAudioError(f"audio for {_show(self.path)} must have shape [{self.channels}, T], got {shape}")
        if wav.shape[1] == 0:
            return
        if not wav.is_floating_point() or not bool(torch.isfinite(wav).all()):
            raise InvalidAudioError(f"audio for {_show(self.path)} must be finite floating-point samples")
        data = np.ascontiguousarray(wav.detach().to("cpu", torch.float32).clamp(-1, 1).numpy().T)
        try:
            self._handle.write(_sndfile.pcm_data(data, self._subtype, whole=False))
        except (AssertionError, *_sndfile.ERRORS) as e:  # soundfile asserts on a short write
            self._check(e)
        self._check()
        self.frames += data.shape[0]


def _write_error(path: Path, error: BaseException) -> AudioFileError:
    if isinstance(error, OSError) and error.strerror:
        reason = error.strerror
    elif isinstance(error, AssertionError):
        reason = "short write"
    else:
        reason = _sndfile.error_reason(error)
    return AudioFileError(f"cannot write audio file {_show(path)}: {reason}")


@contextlib.contextmanager
def open_audio_writer(path: str | os.PathLike, sample_rate: int, channels: int, format: str | None = None
                      ) -> Iterator[AudioWriter]:
    """Write an audio file block by block; it appears at ``path`` only if the ``with`` block completes.

    ``format`` (default: from the suffix) is one of ``wav``, ``flac``, ``ogg``, ``mp3``, encoded as
    :func:`~wavecraft.audio.audio_write` does (its defaults: 16-bit PCM, 320 kbps mp3, default-quality Vorbis).
    Unsupported formats, rates or channel counts are :class:`InvalidAudioError` before anything is created; any
    failure while writing (disk full, file too large, I/O error) is a one-line :class:`AudioFileError`, and
    neither a partial file nor a temporary one is left, while an existing file at ``path`` stays as it was.
    """
    path = Path(path)
    fmt = (format or path.suffix.lstrip(".") or "wav").lower()
    if fmt not in WRITE_FORMATS:
        raise InvalidAudioError(f"cannot write {_show(path)}: unknown audio format {fmt!r} "
                                f"(use {', '.join(WRITE_FORMATS)})")
    sample_rate = check_sample_rate(sample_rate)
    settings = _sndfile.encoder_settings(fmt, channels, sample_rate)
    if path.is_dir():
        raise AudioFileError(f"cannot write audio file, the path is a directory: {_show(path)}")
    in_body = False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            raw = _RecordingFile(tmp)
            try:
                try:
                    handle = sf.SoundFile(raw, "w", samplerate=sample_rate, channels=channels, **settings)
                except _sndfile.ERRORS as e:
                    raise _write_error(path, raw.error or e) from e
                writer = AudioWriter(path, handle, raw, settings.get("subtype", ""), channels)
                in_body = True
                try:
                    yield writer
                except BaseException:
                    with contextlib.suppress(*_sndfile.ERRORS):
                        handle.close()
                    raise
                in_body = False
                try:
                    handle.close()  # flushes the encoder and rewrites the header
                except _sndfile.ERRORS as e:
                    writer._check(e)
                writer._check()
            finally:
                raw.close()
            if raw.error is not None:
                raise _write_error(path, raw.error)
    except OSError as e:  # creating, syncing or renaming the file (an OSError of the caller's passes through)
        if in_body:
            raise
        raise _write_error(path, e) from e
