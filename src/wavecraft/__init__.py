"""wavecraft: text-to-music, text-to-sound and neural audio compression.

Heavy pieces are imported on first use so that ``import wavecraft`` stays fast.
"""

from __future__ import annotations

from ._lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "MusicGen": ("wavecraft.models.musicgen", "MusicGen"),
    "AudioGen": ("wavecraft.models.audiogen", "AudioGen"),
    "EnCodec": ("wavecraft.codec", "EnCodec"),
    "CompressionModel": ("wavecraft.codec", "CompressionModel"),
    "audio_write": ("wavecraft.audio", "audio_write"),
    "audio_read": ("wavecraft.audio", "audio_read"),
    "WavecraftError": ("wavecraft.errors", "WavecraftError"),
}

__all__ = [*_LAZY, "__version__"]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
