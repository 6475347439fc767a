"""User-facing models and pipelines.

AudioCraft's ``from audiocraft.models import MusicGen, AudioGen, CompressionModel, EnCodec`` works here as
``from wavecraft.models import ...``: the names resolve, on first use, to the very classes of
:mod:`wavecraft.models.musicgen`, :mod:`wavecraft.models.audiogen` and :mod:`wavecraft.codec`, so importing one
submodule (e.g. ``wavecraft.models.streaming``) does not import the others.
"""

from __future__ import annotations

from .._lazy import lazy_getattr

_LAZY = {
    "MusicGen": ("wavecraft.models.musicgen", "MusicGen"),
    "AudioGen": ("wavecraft.models.audiogen", "AudioGen"),
    "CompressionModel": ("wavecraft.codec", "CompressionModel"),
    "EnCodec": ("wavecraft.codec", "EnCodec"),
}

__all__ = list(_LAZY)


__getattr__ = lazy_getattr(__name__, _LAZY, globals())


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
