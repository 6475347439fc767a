"""The models that ship inside the package (``wavecraft/assets``), by name, so every command works offline.

A shipped name (``wavecraft-small``) is accepted wherever a hub name or a folder is: it resolves to its asset
folder before any hub look-up. ``wavecraft models`` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError

ASSETS = Path(__file__).resolve().parent.parent / "assets"


@dataclass(frozen=True)
class ShippedModel:
    """A model folder under ``wavecraft/assets``; ``uses``: what it can be loaded as (``music``, ``codec``,
    ``sfx``, ``text-encoder``)."""

    name: str
    uses: tuple[str, ...]
    about: str
    files: tuple[str, ...] = ("config.json", "model.safetensors")

    @property
    def folder(self) -> Path:
        return ASSETS / self.name


SHIPPED: dict[str, ShippedModel] = {m.name: m for m in (
    ShippedModel("wavecraft-small", ("music", "codec"),
                 "text-to-music and melody-guided music, 32 kHz mono, clips up to 6 s (longer ones in sliding "
                 "windows); its 32 kHz codec (4 codebooks, 1.8 kbps) is the default of `wavecraft compress`"),
    ShippedModel("all-MiniLM-L6-v2", ("text-encoder",),
                 "sentence encoder (384-d BERT) of wavecraft-small's text conditioning",
                 files=("config.json", "model.safetensors", "tokenizer.json")),
)}

#: Aliases under which other tools know a shipped model.
ALIASES = {"sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2", "all-minilm-l6-v2": "all-MiniLM-L6-v2"}


def shipped(name: object) -> ShippedModel | None:
    """The shipped model called ``name`` (or one of its aliases), else ``None``."""
    if not isinstance(name, str):
        return None
    return SHIPPED.get(ALIASES.get(name, name))


def shipped_folder(name: object, use: str | None = None) -> Path | None:
    """The asset folder of shipped model ``name``, ``None`` if ``name`` is not one.

    ``use``: what the caller loads it as; a shipped model that cannot serve it is a one-line error.
    """
    model = shipped(name)
    if model is None:
        return None
    if use is not None and use not in model.uses:
        fits = ", ".join(m.name for m in SHIPPED.values() if use in m.uses) or "none yet"
        raise CheckpointError(f"{model.name} is a {'/'.join(model.uses)} model, not a {use} model "
                              f"(shipped {use} models: {fits}; see `wavecraft models`)")
    missing = [f for f in model.files if not (model.folder / f).is_file()]
    if missing:
        raise CheckpointError(f"the shipped model {model.name} is missing from this installation "
                              f"({model.folder}: no {', '.join(missing)}); reinstall wavecraft")
    return model.folder


def offline_alternatives(use: str | None = None) -> str:
    """One clause naming what works without the hub, for error messages."""
    names = [m.name for m in SHIPPED.values() if use in m.uses or (use is None and "text-encoder" not in m.uses)]
    shipped_part = f"a shipped model ({', '.join(names)}), " if names else ""
    return f"use {shipped_part}a local folder or file, or put the repo in the HF cache / $WAVECRAFT_CACHE_DIR"
