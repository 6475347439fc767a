"""Finding checkpoint files: a local file, a local directory, or a Hugging Face hub repo (cached, offline-aware).

Hub downloads go to ``$WAVECRAFT_CACHE_DIR`` when set, else the standard HF cache; ``HF_HUB_OFFLINE=1`` is
honoured by ``huggingface_hub`` itself (cached files still resolve).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CheckpointError


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def cache_dir() -> str | None:
    return os.environ.get("WAVECRAFT_CACHE_DIR") or None


def find_file(name_or_path: str | Path, filename: str, required: bool = True) -> Path | None:
    """Path of ``filename`` in a local directory or hub repo ``name_or_path``; ``None`` if absent and not required.

    A ``name_or_path`` that is an existing file is returned as is.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        candidate = path / filename
        if candidate.is_file():
            return candidate
        if required:
            raise CheckpointError(f"{path} has no {filename}")
        return None
    name = str(name_or_path)
    if not _looks_like_repo_id(name):
        raise CheckpointError(f"checkpoint not found: {name} (no such file or directory, and not a hub repo id)")
    return _hub_download(name, filename, required)


def _hub_download(repo_id: str, filename: str, required: bool) -> Path | None:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError as e:  # pragma: no cover - huggingface_hub is a core dependency
        raise CheckpointError(f"{repo_id}: huggingface_hub is needed to download checkpoints ({e})") from None
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir(), library_name="wavecraft"))
    # LocalEntryNotFoundError subclasses EntryNotFoundError in recent huggingface_hub: catch it first.
    except LocalEntryNotFoundError:
        if not required and _cached_repo_exists(repo_id):
            return None
        raise CheckpointError(
            f"{repo_id}/{filename} is not in the local cache and the hub cannot be reached "
            "(offline or HF_HUB_OFFLINE=1): download the repo files elsewhere and pass their local folder, "
            "or put them in the HF cache / $WAVECRAFT_CACHE_DIR") from None
    except EntryNotFoundError:
        if required:
            raise CheckpointError(f"{repo_id} has no file {filename}") from None
        return None
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo_id}: no such local path or hub repository") from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise CheckpointError(f"{repo_id}/{filename}: download failed ({' '.join(str(e).split())[:150]})") from None


def _cached_repo_exists(repo_id: str) -> bool:
    """Whether some snapshot of ``repo_id`` is in the cache (so a missing file means "not in this repo")."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir(cache_dir()) if cache_dir() else scan_cache_dir()
    except Exception:
        return False
    return any(repo.repo_id == repo_id for repo in info.repos)
