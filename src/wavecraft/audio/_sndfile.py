"""soundfile (libsndfile) backend: probing, reading with seeking, and encoder settings for writing."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from ..errors import InvalidAudioError
from .checks import check_memory, check_number, frame_span

# Extensions libsndfile 1.2 reads natively; anything else goes straight to PyAV.
READ_SUFFIXES = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf", ".w64",
    ".rf64", ".sd2", ".voc", ".ircam", ".sf", ".htk", ".nist", ".sph", ".mat4", ".mat5", ".paf", ".pvf", ".xi",
    ".avr", ".svx", ".wve",
})

# Everything soundfile raises for files it cannot open or decode.
ERRORS: tuple[type[BaseException], ...] = (sf.SoundFileError, RuntimeError, OSError, ValueError)

# LAME bitrate range (kbps) per MPEG version, chosen by the sample rate.
_MP3_RATES: dict[int, tuple[int, int]] = {
    **dict.fromkeys((32000, 44100, 48000), (32, 320)),  # MPEG-1
    **dict.fromkeys((16000, 22050, 24000), (8, 160)),  # MPEG-2
    **dict.fromkeys((8000, 11025, 12000), (8, 64)),  # MPEG-2.5
}
# libvorbis nominal bitrate (kbps) at 44.1 kHz for quality 0.0, 0.1, ..., 1.0 (measured with libsndfile 1.2.2).
_VORBIS_KBPS_STEREO = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)
_VORBIS_KBPS_MONO = (48, 60, 70, 80, 86, 96, 110, 120, 140, 160, 240)
# libvorbis (through libsndfile 1.2.2) crashes the process above this rate, so refuse it up front.
_VORBIS_MAX_RATE = 200_000
_FLAC_MAX_CHANNELS = 8
_FLAC_MAX_RATE = 655_350
# libsndfile's SF_MAX_CHANNELS (wav refuses more with "Format not recognised"); libvorbis through libsndfile 1.2.2
# crashes the process (segfault) above 255 channels, so both are refused up front.
_WAV_MAX_CHANNELS = 1024
# RIFF sizes are 32-bit: a longer wav would be written with wrapped sizes that readers truncate (lost audio).
WAV_MAX_DATA_BYTES = 2**32 - 1 - 4096
_VORBIS_MAX_CHANNELS = 255
# Bitrates (kbps) accepted at all: LAME's full range over the MPEG versions (each version then clamps to its own
# range, so the default 320 also works at 16 kHz), and the span of Vorbis' nominal bitrates.
MP3_KBPS_RANGE = (8, 320)
OGG_KBPS_RANGE = (32, 500)
# A file whose header claims more decoded bytes than this many times its size is read in blocks, so a lying (or
# highly compressed) header cannot make us allocate for samples that are not there.
_PLAUSIBLE_EXPANSION = 64
_READ_BLOCK_FRAMES = 1 << 20
_SFE_SYSTEM = 2  # libsndfile's error code for a failed system call (write, seek...)


def error_reason(error: BaseException) -> str:
    """The reason part of a soundfile error, on one line (libsndfile messages may span lines)."""
    reason = getattr(error, "error_string", None) or str(error) or type(error).__name__
    return " ".join(str(reason).split())


class WriteError(OSError):
    """libsndfile could not write a file; ``strerror`` says why in plain words (e.g. 'no space left on device')."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.EIO, reason)


def check_kbps(value: object, name: str, kbps_range: tuple[int, int]) -> float:
    """``value`` as a float if it is a bitrate in ``kbps_range`` (kbps), else :class:`InvalidAudioError`."""
    return check_number(value, f"{name} (kbps)", *kbps_range)


def probe(path: Path) -> tuple[int, int, int]:
    """Return ``(sample_rate, channels, frames)`` of a file libsndfile can open."""
    info = sf.info(str(path))
    return int(info.samplerate), int(info.channels), int(info.frames)


def read(path: Path, seek_time: float, duration: float) -> tuple[np.ndarray, int]:
    """Read ``duration`` s (all if not > 0) from ``seek_time`` s: ``(wav [C, T] float32, sample_rate)``.

    An empty result means ``seek_time`` is at or past the end of the file.
    """
    with sf.SoundFile(str(path)) as f:
        sample_rate, channels = int(f.samplerate), int(f.channels)
        start, num_frames = frame_span(sample_rate, seek_time, duration)
        if start >= f.frames:
            return np.zeros((channels, 0), dtype=np.float32), sample_rate
        if start > 0:
            f.seek(start)
        wanted = f.frames - start if num_frames < 0 else min(num_frames, f.frames - start)
        claimed = wanted * channels * 4
        if claimed <= _PLAUSIBLE_EXPANSION * max(os.path.getsize(path), 1):
            check_memory(2 * claimed, f"decoding {wanted} frames x {channels} channels")  # read + transposed copy
            data = f.read(wanted, dtype="float32", always_2d=True)
        else:
            data = _read_blocks(f, wanted, channels)
    return np.ascontiguousarray(data.T), sample_rate


def _read_blocks(f: sf.SoundFile, wanted: int, channels: int) -> np.ndarray:
    """Read up to ``wanted`` frames block by block: memory follows the samples really decoded, not the header."""
    blocks: list[np.ndarray] = []
    got = 0
    while got < wanted:
        block = f.read(min(_READ_BLOCK_FRAMES, wanted - got), dtype="float32", always_2d=True)
        if block.shape[0] == 0:
            break
        got += block.shape[0]
        check_memory(3 * got * channels * 4, f"decoding {got} frames x {channels} channels")
        blocks.append(block)
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), dtype=np.float32)


def _mp3_settings(channels: int, sample_rate: int, mp3_rate: float) -> dict[str, Any]:
    mp3_rate = check_kbps(mp3_rate, "mp3_rate", MP3_KBPS_RANGE)
    if channels > 2:
        raise InvalidAudioError(f"mp3 supports at most 2 channels, got {channels}")
    if sample_rate not in _MP3_RATES:
        raise InvalidAudioError(f"mp3 does not support sample rate {sample_rate} Hz; use one of "
                                f"{', '.join(str(r) for r in sorted(_MP3_RATES))}")
    low, high = _MP3_RATES[sample_rate]
    # libsndfile maps compression_level linearly from the highest (0.0) to the lowest (1.0) bitrate of the
    # MPEG version, and LAME snaps to the nearest standard bitrate. 1.0 itself is rejected by libsndfile.
    level = min(max((high - mp3_rate) / (high - low), 0.0), 0.99)
    return {"format": "MP3", "subtype": "MPEG_LAYER_III", "bitrate_mode": "CONSTANT", "compression_level": level}


def _ogg_settings(channels: int, sample_rate: int, ogg_rate: float | None) -> dict[str, Any]:
    if ogg_rate is not None:
        ogg_rate = check_kbps(ogg_rate, "ogg_rate", OGG_KBPS_RANGE)
    if channels > _VORBIS_MAX_CHANNELS:
        raise InvalidAudioError(f"ogg/vorbis supports at most {_VORBIS_MAX_CHANNELS} channels, got {channels}")
    if sample_rate > _VORBIS_MAX_RATE:
        raise InvalidAudioError(f"ogg/vorbis supports sample rates up to {_VORBIS_MAX_RATE} Hz, got {sample_rate}")
    settings: dict[str, Any] = {"format": "OGG", "subtype": "VORBIS"}
    if ogg_rate is not None:
        # Vorbis is VBR with a quality knob; pick the quality whose nominal bitrate matches ogg_rate.
        table = _VORBIS_KBPS_MONO if channels == 1 else _VORBIS_KBPS_STEREO
        quality = float(np.interp(ogg_rate, table, np.linspace(0.0, 1.0, len(table))))
        settings["compression_level"] = 1.0 - quality
    return settings


def encoder_settings(
    format: str, channels: int, sample_rate: int, mp3_rate: float = 320, ogg_rate: float | None = None,
    frames: int | None = None,
) -> dict[str, Any]:
    """``soundfile.write`` keyword arguments for ``format``, or :class:`InvalidAudioError` if it cannot be written.

    wav and flac are 16-bit PCM. mp3 is constant bitrate near ``mp3_rate`` kbps (clamped to what the MPEG
    version allows, snapped to a standard bitrate). ogg is Vorbis; ``ogg_rate`` (kbps) picks the Vorbis quality
    whose nominal 44.1 kHz bitrate is closest, else libvorbis' default quality (~128 kbps stereo). Bitrates
    outside ``MP3_KBPS_RANGE`` / ``OGG_KBPS_RANGE`` and channel counts or rates the format cannot hold are errors,
    as is a wav of ``frames`` frames (when given) too long for RIFF's 32-bit sizes.
    """
    if format == "wav":
        if channels > _WAV_MAX_CHANNELS:
            raise InvalidAudioError(f"wav supports at most {_WAV_MAX_CHANNELS} channels, got {channels}")
        if frames is not None and frames * channels * 2 > WAV_MAX_DATA_BYTES:
            raise InvalidAudioError(f"{frames} frames x {channels} channels of 16-bit audio exceed the 4 GiB a wav "
                                    f"file can hold; write flac instead")
        return {"format": "WAV", "subtype": "PCM_16"}
    if format == "flac":
        if channels > _FLAC_MAX_CHANNELS:
            raise InvalidAudioError(f"flac supports at most {_FLAC_MAX_CHANNELS} channels, got {channels}")
        # libFLAC's streamable subset: any rate up to 65535 Hz, above that only multiples of 10 Hz.
        if sample_rate > 65535 and (sample_rate % 10 or sample_rate > _FLAC_MAX_RATE):
            raise InvalidAudioError(f"flac does not support sample rate {sample_rate} Hz (above 65535 Hz it must be a "
                                    f"multiple of 10 Hz, at most {_FLAC_MAX_RATE} Hz)")
        return {"format": "FLAC", "subtype": "PCM_16"}
    if format == "mp3":
        return _mp3_settings(channels, sample_rate, mp3_rate)
    if format == "ogg":
        return _ogg_settings(channels, sample_rate, ogg_rate)
    raise InvalidAudioError(f"unknown audio format {format!r}; expected 'wav', 'flac', 'ogg' or 'mp3'")


def pcm16(data: np.ndarray, whole: bool = True) -> np.ndarray:
    """Float samples (nominally in [-1, 1]) -> int16, rounded to nearest as AudioCraft's ``i16_pcm`` does.

    Each sample becomes ``round(x * 2**15)`` (half to even, like ``torch.round``), so there is no DC offset and
    ``k / 2**15`` maps exactly to ``k``. If some sample would reach ``2**15`` (at or just below +1), AudioCraft
    scales the whole clip by ``2**15 - 1`` instead so that nothing clips; ``whole=True`` does the same. A chunk of a
    stream (``whole=False``) cannot rescale what was written before it, so its values are clipped to
    [-32768, 32767] instead (+1 -> 32767, -1 -> -32768). Values beyond [-1, 1] are clipped in both cases.
    """
    data = np.asarray(data, dtype=np.float32)
    candidate = np.round(data * np.float32(2**15))
    if whole and candidate.size and candidate.max() >= 2**15:
        candidate = np.round(data * np.float32(2**15 - 1))
    return np.clip(candidate, -(2**15), 2**15 - 1).astype(np.int16)


def pcm_data(data: np.ndarray, subtype: str, whole: bool = True) -> np.ndarray:
    """``data`` as the encoder of ``subtype`` should get it: int16 from :func:`pcm16` for 16-bit PCM (libsndfile's
    own float -> int16 conversion truncates), float32 unchanged for the lossy codecs.

    Streaming writers (one ``soundfile.SoundFile`` written chunk by chunk) should pass each chunk through this with
    ``whole=False`` and their file's ``subtype``.
    """
    if str(subtype).upper() == "PCM_16":
        return pcm16(data, whole=whole)
    return data


def _handle_reason(f: sf.SoundFile) -> str | None:
    """libsndfile's own message for the last error on ``f``: for a failed system call it holds the OS reason
    ("System error : File too large."), which the generic error soundfile raises ("System error.") lacks."""
    try:
        handle = f._file  # soundfile keeps no public accessor for the SNDFILE*
        if handle is None:
            return None
        text = sf._ffi.string(sf._snd.sf_strerror(handle)).decode("utf-8", "replace")
    except (AttributeError, TypeError, ValueError):
        return None
    text = " ".join(text.split()).rstrip(".")
    prefix = "System error :"
    if not text.startswith(prefix):
        return None
    text = text[len(prefix):].strip()
    return text[:1].lower() + text[1:] if text else None


def _system_reason(path: Path, num_bytes: int) -> str:
    """Why writing ``num_bytes`` to ``path`` failed with a bare system error, judged from the file system."""
    try:
        stats = os.statvfs(path.parent)
        if stats.f_bavail * stats.f_frsize < num_bytes or stats.f_favail == 0:
            return "no space left on device"
    except OSError:
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
        if soft != resource.RLIM_INFINITY:
            return f"file too large (the process file size limit is {soft} bytes)"
    except (ImportError, OSError, ValueError):
        pass
    return "system error while writing (disk full or I/O error?)"


def write(path: Path, data: np.ndarray, sample_rate: int, settings: dict[str, Any]) -> None:
    """Write ``data [T, C]`` float32 in [-1, 1] to ``path`` with ``settings`` from :func:`encoder_settings`.

    16-bit PCM (wav, flac) is rounded with :func:`pcm16` over the whole clip. A failed system call (full disk,
    file size limit) raises :class:`WriteError` whose ``strerror`` says so in words.
    """
    samples = pcm_data(data, settings.get("subtype", ""))
    f = sf.SoundFile(str(path), "w", sample_rate, samples.shape[1], **settings)
    try:
        f.write(samples)
        f.close()
    except sf.LibsndfileError as e:
        if e.code != _SFE_SYSTEM:
            raise
        reason = _handle_reason(f) or _system_reason(path, samples.nbytes)
        raise WriteError(reason) from e
    finally:
        if not f.closed:
            with contextlib.suppress(sf.LibsndfileError):  # the first error is the one to report
                f.close()
