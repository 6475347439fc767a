"""Finding checkpoint files: a local file, a local directory, or a Hugging Face hub repo (cached, offline-aware).

Hub downloads go to ``$WAVECRAFT_CACHE_DIR`` when set, else the standard HF cache. A cached file is used as it
is, without asking the hub for a newer revision (``huggingface-cli download`` refreshes the cache); a file that is
not cached is fetched only when the hub answers a connection within a second: with ``HF_HUB_OFFLINE=1`` or no
network the look-up fails at once with a one-line error naming the offline alternatives, instead of after
``huggingface_hub``'s retries. Shipped model names (:mod:`.shipped`) resolve to their asset folders first.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import CheckpointError
from .shipped import offline_alternatives, shipped_folder

#: Seconds to wait for a TCP connection to the hub (or its proxy) before calling it unreachable.
REACH_TIMEOUT = 1.0
_reachable: dict[str, bool] = {}


def _looks_like_repo_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and "\\" not in name


def cache_dir() -> str | None:
    return os.environ.get("WAVECRAFT_CACHE_DIR") or None


def find_file(name_or_path: str | Path, filename: str, required: bool = True) -> Path | None:
    """Path of ``filename`` in a local directory or hub repo ``name_or_path``; ``None`` if absent and not required.

    A ``name_or_path`` that is an existing file is returned as is; a shipped model name stands for its folder.
    """
    path = Path(name_or_path).expanduser()
    if not path.exists():
        path = shipped_folder(name_or_path) or path
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


def check_reachable(name_or_path: str | Path | None, use: str | None = None) -> None:
    """Fail at once, before anything heavy is imported or read, when ``name_or_path`` is a hub name that is not
    cached while the hub cannot be reached (offline, or ``HF_HUB_OFFLINE=1``). Anything else passes: local paths,
    shipped names and malformed names are judged by the loader."""
    if name_or_path is None or Path(name_or_path).expanduser().exists() or shipped_folder(name_or_path) is not None:
        return
    name = str(name_or_path)
    if not _looks_like_repo_id(name) or _cached_repo_exists(name) or hub_reachable():
        return
    raise _not_cached(name, use)


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
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir(), library_name="wavecraft",
                                        local_files_only=True))
        except LocalEntryNotFoundError:
            if not hub_reachable():
                raise
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir(), library_name="wavecraft"))
    # LocalEntryNotFoundError subclasses EntryNotFoundError in recent huggingface_hub: catch it first.
    except LocalEntryNotFoundError:
        if not required and _cached_repo_exists(repo_id):
            return None
        raise _not_cached(f"{repo_id}/{filename}") from None
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


def _not_cached(what: str, use: str | None = None) -> CheckpointError:
    why = "HF_HUB_OFFLINE is set (offline mode)" if _offline_mode() else "the hub cannot be reached (offline?)"
    return CheckpointError(f"{what} is not in the local cache and {why}: {offline_alternatives(use)}")


def _offline_mode() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a core dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_reachable() -> bool:
    """Whether a TCP connection to the hub endpoint (or the HTTPS proxy) opens within :data:`REACH_TIMEOUT`.

    False with ``HF_HUB_OFFLINE=1``. Asked once per process and endpoint. The probe runs in a daemon thread so that
    a name resolution that hangs cannot hold the caller.
    """
    if _offline_mode():
        return False
    from huggingface_hub import constants

    target = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or constants.ENDPOINT
    if target not in _reachable:
        url = urlsplit(target if "://" in target else f"http://{target}")
        port = url.port or (443 if url.scheme == "https" else 80)
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection((url.hostname or "", port), timeout=REACH_TIMEOUT).close()
                result.append(True)
            except OSError:
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(REACH_TIMEOUT + 0.2)
        _reachable[target] = bool(result and result[0])
    return _reachable[target]
