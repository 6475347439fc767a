"""Text conditioning with a frozen T5 encoder and a trained output projection."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import CheckpointError
from .attributes import ConditionTensor

#: Hidden size of the T5 encoders AudioCraft's configs name.
T5_DIMS = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
           "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
           "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096}


class T5Conditioner(nn.Module):
    """``texts -> (embeddings [B, L, dim], mask [B, L])``: T5 encoder states through ``output_proj``.

    The encoder is loaded from ``encoder_name`` (hub name or local path) on first use, never at import or
    construction, and is not part of the checkpoint (frozen). Callers that already have encoder states pass them
    to :meth:`project` instead.
    """

    def __init__(self, output_dim: int, encoder_name: str = "t5-base", encoder_dim: int | None = None,
                 encoder_loader: Callable[[], tuple[object, nn.Module]] | None = None) -> None:
        super().__init__()
        self.encoder_name = encoder_name
        self._encoder_loader = encoder_loader  # e.g. the T5 stored inside a transformers MusicGen checkpoint
        encoder_dim = encoder_dim or T5_DIMS.get(encoder_name, 768)
        self.output_proj = nn.Linear(encoder_dim, output_dim)
        self._encoder: tuple[object, nn.Module] | None = None

    def _load_encoder(self) -> tuple[object, nn.Module]:
        if self._encoder is None and self._encoder_loader is not None:
            self.set_encoder(*self._encoder_loader())
        if self._encoder is None:
            try:
                from transformers import AutoTokenizer, T5EncoderModel
            except ImportError:
                raise CheckpointError("the T5 text encoder needs `transformers` (pip install transformers)") from None
            try:
                tokenizer = AutoTokenizer.from_pretrained(self.encoder_name)
                encoder = T5EncoderModel.from_pretrained(self.encoder_name).eval()
            except OSError as e:
                raise CheckpointError(
                    f"cannot load text encoder {self.encoder_name!r} ({' '.join(str(e).split())[:120]}); "
                    "offline, put it in the HF cache or pass a local directory as the encoder name") from None
            self._encoder = (tokenizer, encoder.to(self.output_proj.weight.device))
        return self._encoder

    def use_encoder(self, name_or_path: str) -> None:
        """Load the encoder and tokenizer from ``name_or_path`` (hub name or local folder) on next use."""
        self.encoder_name = str(name_or_path)
        self._encoder_loader = None
        self._encoder = None

    def set_encoder(self, tokenizer: object, encoder: nn.Module) -> None:
        """Use this tokenizer + encoder (e.g. a local or fine-tuned T5) instead of loading ``encoder_name``."""
        self._encoder = (tokenizer, encoder.eval().to(self.output_proj.weight.device))

    @torch.no_grad()
    def encoder_states(self, texts: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Run T5: ``texts -> (hidden [B, L, E], mask [B, L])``; ``None`` rows get an all-zero mask.

        Rows are right-padded to the longest of this call, as AudioCraft tokenizes (``padding=True``).
        """
        tokenizer, encoder = self._load_encoder()
        batch = tokenizer([t or "" for t in texts], return_tensors="pt", padding=True)  # type: ignore[operator]
        device = self.output_proj.weight.device
        mask = batch["attention_mask"].to(device)
        hidden = encoder(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state
        empty = torch.tensor([t is None for t in texts], device=device)
        return hidden, mask.masked_fill(empty[:, None], 0)

    def project(self, hidden: torch.Tensor, mask: torch.Tensor) -> ConditionTensor:
        """``(hidden [B, L, E], mask [B, L]) -> (output_proj(hidden) * mask, mask)``."""
        emb = self.output_proj(hidden.to(self.output_proj.weight))
        return emb * mask.unsqueeze(-1).to(emb.dtype), mask

    def forward(self, texts: Sequence[str | None]) -> ConditionTensor:
        return self.project(*self.encoder_states(texts))

    @staticmethod
    def null(cond: ConditionTensor, length: int | None = None) -> ConditionTensor:
        """The classifier-free-guidance null condition for ``cond``: zero embeddings, zero mask.

        AudioCraft replaces the text by ``""`` (one T5 token) and zeroes its mask: batched with the real rows it has
        their padded length (the default), tokenized alone (two-step CFG) it has ``length=1``.
        """
        emb, mask = cond
        steps = emb.shape[1] if length is None else length
        return emb.new_zeros(emb.shape[0], steps, emb.shape[2]), mask.new_zeros(mask.shape[0], steps)
