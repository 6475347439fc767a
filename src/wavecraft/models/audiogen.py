"""AudioGen: text-to-sound (16 kHz codec, T5-large conditioning)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints.lm import load_lm_bundle
from ..codec.compression import CompressionModel
from ..lm.quantize import check_quantize, quantize_int8
from .genmodel import BaseGenModel
from .musicgen import _default_device

DEFAULT_MODEL = "facebook/audiogen-medium"


class AudioGen(BaseGenModel):
    """Text-to-sound generation with AudioCraft's API and defaults (5 s clips, max 10 s windows)."""

    default_duration = 5.0
    default_extend_stride = 2.0

    @classmethod
    def get_pretrained(cls, name: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None,
                       quantize: str | None = None) -> AudioGen:
        """Load LM + codec; ``quantize='int8'`` as for :meth:`MusicGen.get_pretrained`."""
        device = _default_device(device)
        check_quantize(quantize, device)
        bundle = load_lm_bundle(name)
        location = Path(name).parent if Path(name).is_file() else name
        codec = CompressionModel.get_pretrained(location)
        bundle.to(device)
        if quantize == "int8":
            quantize_int8(bundle.lm)
        return cls(str(name), codec.to(device), bundle)
