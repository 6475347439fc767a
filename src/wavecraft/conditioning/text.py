"""Text conditioning: a frozen text encoder (T5, or a BERT sentence encoder) and a trained output projection."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..validation import integer, text
from .attributes import ConditionTensor

MAX_TEXT_DIM = 16384  # widths of text encoder states and of the LM (flan-t5-xxl: 4096)

#: Hidden size of the T5 encoders AudioCraft's configs name.
T5_DIMS = {"t5-small": 512, "t5-base": 768, "t5-large": 1024, "t5-3b": 1024, "t5-11b": 1024,
           "google/flan-t5-small": 512, "google/flan-t5-base": 768, "google/flan-t5-large": 1024,
           "google/flan-t5-xl": 2048, "google/flan-t5-xxl": 4096}


class TextConditioner(nn.Module):
    """``texts -> (embeddings [B, L, dim], mask [B, L])``: frozen encoder states through a trained ``output_proj``.

    Subclasses provide :meth:`encoder_states` (``None`` texts get an all-zero mask); the projection, the
    classifier-free-guidance null and the call itself are shared.
    """

    output_proj: nn.Linear

    def encoder_states(self, texts: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def use_encoder(self, name_or_path: str) -> None:
        """Take the frozen encoder from ``name_or_path`` (hub name or local folder) on next use."""
        raise NotImplementedError

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


class T5Conditioner(TextConditioner):
    """``texts -> (embeddings [B, L, dim], mask [B, L])``: T5 encoder states through ``output_proj``.

    The encoder is loaded from ``encoder_name`` (hub name or local path) on first use, never at import or
    construction, and is not part of the checkpoint (frozen). Callers that already have encoder states pass them
    to :meth:`project` instead.
    """

    def __init__(self, output_dim: int, encoder_name: str = "t5-base", encoder_dim: int | None = None,
                 encoder_loader: Callable[[], tuple[object, nn.Module]] | None = None) -> None:
        super().__init__()
        self.encoder_name = text("encoder_name", encoder_name)
        self._encoder_loader = encoder_loader  # e.g. the T5 stored inside a transformers MusicGen checkpoint
        encoder_dim = T5_DIMS.get(encoder_name, 768) if encoder_dim is None else encoder_dim
        encoder_dim = integer("encoder_dim", encoder_dim, 1, MAX_TEXT_DIM)
        output_dim = integer("output_dim", output_dim, 1, MAX_TEXT_DIM)
        self.output_proj = nn.Linear(encoder_dim, output_dim)
        self._encoder: tuple[object, nn.Module] | None = None

    def _load_encoder(self) -> tuple[object, nn.Module]:
        if self._encoder is None and self._encoder_loader is not None:
            self.set_encoder(*self._encoder_loader())
        if self._encoder is None:
            try:
                from transformers import AutoTokenizer, T5EncoderModel
            except ImportError:
                raise CheckpointError("the T5 text encoder of official checkpoints needs `transformers`: "
                                      "pip install 'wavecraft[t5]'") from None
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


#: The default sentence encoder; ships inside the package (``wavecraft/assets/all-MiniLM-L6-v2``).
MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def sentence_encoder_folder(name_or_path: str) -> Path:
    """The folder holding a BERT sentence encoder: a local folder, a shipped one (MiniLM), or a hub snapshot."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    from ..checkpoints.shipped import shipped_folder

    folder = shipped_folder(name_or_path, "text-encoder")
    if folder is not None:
        return folder
    from ..checkpoints.hub import find_file

    found = [find_file(name_or_path, n) for n in ("config.json", "model.safetensors", "tokenizer.json")]
    return found[0].parent  # type: ignore[union-attr]


class SentenceConditioner(TextConditioner):
    """A frozen BERT sentence encoder (all-MiniLM-L6-v2 by default, which ships inside wavecraft,
    so it works offline) through a trained projection.

    ``pooling="mean"`` gives one condition token per text, the normalised mean of the token states: the sentence
    embedding the encoder was trained to place near paraphrases, so an unseen caption ("mellow") still lands near
    trained ones. ``pooling="tokens"`` gives every token's state, as T5 does.
    """

    def __init__(self, output_dim: int, encoder_name: str = MINILM, encoder_dim: int = 384,
                 pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in ("mean", "tokens"):
            raise ValueError(f"pooling must be 'mean' or 'tokens', got {pooling!r}")
        encoder_dim = integer("encoder_dim", encoder_dim, 1, MAX_TEXT_DIM)
        output_dim = integer("output_dim", output_dim, 1, MAX_TEXT_DIM)
        self.encoder_name = text("encoder_name", encoder_name)
        self.pooling = pooling
        self.output_proj = nn.Linear(encoder_dim, output_dim)
        self._encoder: object | None = None
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def use_encoder(self, name_or_path: str) -> None:
        """Load the encoder from ``name_or_path`` (local folder or hub name) on next use."""
        self.encoder_name = str(name_or_path)
        self._encoder = None
        self._cache.clear()

    def _load_encoder(self):  # noqa: ANN202 - BertTextEncoder, imported lazily
        if self._encoder is None:
            from .bert import BertTextEncoder

            encoder = BertTextEncoder(sentence_encoder_folder(self.encoder_name))
            if encoder.dim != self.output_proj.in_features:
                raise CheckpointError(f"text encoder {self.encoder_name!r} gives {encoder.dim}-d states, the model "
                                      f"expects {self.output_proj.in_features}")
            self._encoder = encoder.to(self.output_proj.weight.device)
        return self._encoder

    @torch.no_grad()
    def encoder_states(self, texts: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """``texts -> (hidden [B, L, E], mask [B, L])`` (``L = 1`` with mean pooling); ``None`` rows are masked."""
        from .bert import mean_pool

        encoder = self._load_encoder()
        device = self.output_proj.weight.device
        if self.pooling == "mean":
            # Training asks for the same captions over and over: encoding each once is most of the speed.
            missing = sorted({t or "" for t in texts} - self._cache.keys())
            if missing:
                hidden, mask = encoder.encode(missing)
                for text, row in zip(missing, mean_pool(hidden, mask), strict=True):
                    self._cache[text] = row
            hidden = torch.stack([self._cache[t or ""] for t in texts])[:, None].to(device)
            mask = torch.ones(len(texts), 1, dtype=torch.long, device=device)
        else:
            hidden, mask = encoder.encode([t or "" for t in texts])
            hidden, mask = hidden.to(device), mask.to(device)
        empty = torch.tensor([t is None for t in texts], device=device)
        return hidden, mask.masked_fill(empty[:, None], 0)
