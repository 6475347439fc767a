"""MusicGen: text-to-music (mono and stereo checkpoints)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..audio import convert_audio
from ..conditioning.chroma import ChromaConditioner
from .genmodel import BaseGenModel, GenerationError
from .shipped import SHIPPED_NAME, is_shipped_name, shipped_model_dir

DEFAULT_MODEL = SHIPPED_NAME  # ships inside the package: works offline
_SHORT_NAMES = {"small", "medium", "large", "melody", "melody-large", "stereo-small", "stereo-medium",
                "stereo-large", "stereo-melody", "stereo-melody-large"}


def resolve_name(name: str | Path) -> str | Path:
    """Legacy short names (``small``) stand for ``facebook/musicgen-small``."""
    return f"facebook/musicgen-{name}" if isinstance(name, str) and name in _SHORT_NAMES else name


class MusicGen(BaseGenModel):
    """Text-to-music generation with AudioCraft's API and defaults (15 s clips, top-k 250, CFG 3).

    >>> model = MusicGen.get_pretrained("facebook/musicgen-small")
    >>> model.set_generation_params(duration=8)
    >>> wav = model.generate(["lofi hip hop with a mellow piano"])   # [1, 1, 8 * 32000]
    """

    default_duration = 15.0

    @classmethod
    def get_pretrained(cls, name: str | Path | None = None, device: str | torch.device | None = None,
                       quantize: str | None = None, dtype: str | None = None) -> MusicGen:
        """Load LM + codec from a hub repo, a local directory, or an AudioCraft ``state_dict.bin``; with no name
        (or ``"wavecraft-small"``), the small model that ships inside the package (no download).

        The codec is read from the same place (``compression_state_dict.bin``). ``quantize='int8'`` stores the
        transformer's linear weights in int8 for faster CPU decoding (:mod:`wavecraft.lm.quantize`).
        ``dtype='float16'`` (or ``'bfloat16'``) runs the transformer layers and KV cache in half precision, with
        embeddings, output norm and heads in float32 as the reference's autocast does: meant for GPUs.
        """
        name = shipped_model_dir(name) if is_shipped_name(name) else resolve_name(name)  # type: ignore[arg-type]
        return cls._load(name, device, quantize, dtype)

    @property
    def has_melody(self) -> bool:
        return any(isinstance(c, ChromaConditioner) for c in self.bundle.conditioners.values())

    def melody_seconds(self) -> float:
        """Seconds of a melody that a generation of the current ``duration`` can use: every window reads the
        melody from its start for ``max_duration`` seconds, plus half a chroma window, and the resampler a little
        context. Anything after that never reaches the model, so it is not read or analysed."""
        n_fft = max((c.chroma.n_fft for c in self.bundle.conditioners.values() if isinstance(c, ChromaConditioner)),
                    default=0)
        return self.duration + self.max_duration + n_fft / self.sample_rate + 1.0

    def generate_with_chroma(self, descriptions: list[str | None], melody_wavs, melody_sample_rate: int,
                             progress: bool = False, return_tokens: bool = False):  # noqa: ANN001, ANN201
        """Generate following a melody: ``melody_wavs`` is ``[B, C, T]``, ``[C, T]`` or a list of ``[C, T]`` / ``None``.

        Melodies are converted to the model's sample rate and to mono; a ``None`` entry means no melody for that
        item (the null melody). Output: ``wav [B, C, duration * sample_rate]``.
        """
        if not self.has_melody:
            raise GenerationError("this model has no melody conditioner (use a musicgen-melody checkpoint)")
        if isinstance(melody_wavs, torch.Tensor):
            if melody_wavs.dim() == 2:
                melody_wavs = melody_wavs[None]
            if melody_wavs.dim() != 3:
                raise GenerationError("melody_wavs must be [B, C, T], [C, T] or a list of [C, T]")
            melody_wavs = list(melody_wavs)
        if not isinstance(melody_sample_rate, int) or melody_sample_rate <= 0:
            raise GenerationError(f"melody_sample_rate must be a positive integer, got {melody_sample_rate!r}")
        texts = self._check_descriptions(descriptions, allow_none=True)
        if len(melody_wavs) != len(texts):
            raise GenerationError(f"{len(melody_wavs)} melodies for {len(texts)} descriptions")
        melodies: list[torch.Tensor | None] = []
        for wav in melody_wavs:
            if wav is None:
                melodies.append(None)
                continue
            if not isinstance(wav, torch.Tensor) or wav.dim() != 2 or wav.shape[-1] == 0:
                raise GenerationError("each melody must be a non-empty [C, T] tensor or None")
            if not bool(torch.isfinite(wav).all()):
                raise GenerationError("a melody contains NaN or infinite samples")
            wav = wav[..., : math.ceil(self.melody_seconds() * melody_sample_rate)]  # the rest is never used
            melodies.append(convert_audio(wav.to(self.device).float(), melody_sample_rate, self.sample_rate, 1))
        tokens = self._generate_tokens(texts, None, progress, melodies=melodies)
        return self._finish(tokens, return_tokens)
