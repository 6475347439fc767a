"""AudioGen: text-to-sound (16 kHz codec, T5-large conditioning)."""

from __future__ import annotations

from pathlib import Path

import torch

from .genmodel import BaseGenModel

DEFAULT_MODEL = "facebook/audiogen-medium"


class AudioGen(BaseGenModel):
    """Text-to-sound generation with AudioCraft's API and defaults (5 s clips, max 10 s windows)."""

    default_duration = 5.0
    default_extend_stride = 2.0

    @classmethod
    def get_pretrained(cls, name: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
                       quantize: str | None = None, dtype: str | None = None) -> AudioGen:
        """Load LM + codec; ``quantize='int8'`` and ``dtype`` as for :meth:`MusicGen.get_pretrained`."""
        return cls._load(name, device, quantize, dtype)
