"""AudioGen: text-to-sound (16 kHz codec, T5-large conditioning)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints.shipped import shipped_folder
from .genmodel import BaseGenModel, GenerationError

#: AudioCraft's default; it needs the hub (or a cached copy), so wavecraft asks for the name explicitly.
DEFAULT_MODEL = "facebook/audiogen-medium"


class AudioGen(BaseGenModel):
    """Text-to-sound generation with AudioCraft's API and defaults (5 s clips, max 10 s windows)."""

    default_duration = 5.0
    default_extend_stride = 2.0

    @classmethod
    def get_pretrained(cls, name: str | Path | None = None, device: str | torch.device | None = None,
                       quantize: str | None = None, dtype: str | None = None) -> AudioGen:
        """Load LM + codec; ``quantize='int8'`` and ``dtype`` as for :meth:`MusicGen.get_pretrained`.

        No sound-effects model ships with wavecraft yet, so a name is required (AudioCraft's default,
        ``facebook/audiogen-medium``, needs the hub or a cached copy); without one this fails at once.
        """
        if name is None:
            raise GenerationError(f"no sound-effects model ships with wavecraft yet: pass a model, e.g. "
                                  f"AudioGen.get_pretrained({DEFAULT_MODEL!r}) (hub or HF cache) or a local folder")
        folder = shipped_folder(name, "sfx")
        return cls._load(folder or name, device, quantize, dtype)
