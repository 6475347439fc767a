"""Descriptions and tags stored next to an audio file: ``<stem>.json`` and ``<stem>.txt``."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: JSON sidecar keys read as the text description, in order of preference.
DESCRIPTION_KEYS = ("description", "caption")


def read_sidecar(audio_path: Path) -> tuple[str | None, dict[str, Any]]:
    """``(description, info)`` from the sidecars of ``audio_path`` (``song.wav`` -> ``song.json``, ``song.txt``).

    ``<stem>.json`` must hold an object: its ``description`` (else ``caption``) is the description and every other
    key goes into ``info`` (tags, genre, bpm, key, ...). Without a JSON description, the stripped text of
    ``<stem>.txt`` is used. Empty text means no description. An unreadable sidecar is ignored with a warning:
    the audio itself is still usable.
    """
    description: str | None = None
    info: dict[str, Any] = {}
    json_path = audio_path.with_suffix(".json")
    if json_path.is_file():
        try:
            data = json.loads(json_path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        except (OSError, ValueError) as e:
            logger.warning("ignoring sidecar %s: %s", json_path, e)
        else:
            for key in DESCRIPTION_KEYS:
                value = data.pop(key, None)
                if description is None and isinstance(value, str) and value.strip():
                    description = value.strip()
            info = data
    txt_path = audio_path.with_suffix(".txt")
    if description is None and txt_path.is_file():
        try:
            description = txt_path.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as e:
            logger.warning("ignoring sidecar %s: %s", txt_path, e)
    return description, info
