"""wavecraft: text-to-music, text-to-sound and neural audio compression.

Heavy pieces are imported on first use so that ``import wavecraft`` stays fast.
"""

from __future__ import annotations

from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'wavecraft' has no attribute {name!r}")
