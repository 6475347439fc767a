"""MusicGen: text-to-music (mono and stereo checkpoints)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints.lm import load_lm_bundle
from ..codec.compression import CompressionModel
from .genmodel import BaseGenModel

DEFAULT_MODEL = "facebook/musicgen-small"
_SHORT_NAMES = {"small", "medium", "large", "melody", "melody-large", "stereo-small", "stereo-medium",
                "stereo-large", "stereo-melody", "stereo-melody-large"}


def resolve_name(name: str | Path) -> str | Path:
    """Legacy short names (``small``) stand for ``facebook/musicgen-small``."""
    return f"facebook/musicgen-{name}" if isinstance(name, str) and name in _SHORT_NAMES else name


def _default_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


class MusicGen(BaseGenModel):
    """Text-to-music generation with AudioCraft's API and defaults (15 s clips, top-k 250, CFG 3).

    >>> model = MusicGen.get_pretrained("facebook/musicgen-small")
    >>> model.set_generation_params(duration=8)
    >>> wav = model.generate(["lofi hip hop with a mellow piano"])   # [1, 1, 8 * 32000]
    """

    default_duration = 15.0

    @classmethod
    def get_pretrained(cls, name: str | Path = DEFAULT_MODEL, device: str | torch.device | None = None
                       ) -> MusicGen:
        """Load LM + codec from a hub repo, a local directory, or an AudioCraft ``state_dict.bin``.

        The codec is read from the same place (``compression_state_dict.bin``).
        """
        name = resolve_name(name)
        bundle = load_lm_bundle(name)
        location = Path(name).parent if Path(name).is_file() else name
        codec = CompressionModel.get_pretrained(location)
        device = _default_device(device)
        model = cls(str(name), codec.to(device), bundle.to(device))
        return model
