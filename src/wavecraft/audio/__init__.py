"""Audio I/O and processing: read/probe/write files, normalize volume, convert rate and channels."""

from .checks import check_audio
from .convert import convert_audio, convert_audio_channels
from .io import AudioInfo, audio_info, audio_read, audio_write
from .normalize import loudness_lufs, normalize_audio, normalize_loudness

__all__ = [
    "AudioInfo",
    "audio_info",
    "audio_read",
    "audio_write",
    "check_audio",
    "convert_audio",
    "convert_audio_channels",
    "loudness_lufs",
    "normalize_audio",
    "normalize_loudness",
]
