"""Writing files so that a failure never leaves a partial output behind."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

#: Temporaries left by a writer that is gone (SIGKILL, power loss) are removed after this many seconds.
STALE_DEAD_SECONDS = 5 * 60
#: ... and after this long whatever the recorded process id says (it may have been reused since).
STALE_ANY_SECONDS = 60 * 60

# Our temporaries: ".{name}.tmp-<pid>-<12 hex>{suffix}" (also ".live-" / ".old-"; older versions wrote no pid).
_TEMP_NAME = re.compile(r"(?:\..*)?\.(?:tmp|live|old)-(?:(\d{1,10})-)?[0-9a-f]{12}(?:\.[^.]*)?")
_cleaned: set[str] = set()  # folders already swept by this process: one scan per folder, not one per write
_cleaned_lock = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only set it, racing other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def follow_umask(path: Path) -> None:
    """Give ``path`` the permissions a file created normally would have (``0o666 & ~umask``): writers that save
    through a temporary file of their own (safetensors) leave it 0o600."""
    os.chmod(path, 0o666 & ~_umask())


def temp_path(path: Path, kind: str = "tmp") -> Path:
    """A hidden temporary name beside ``path``: ``.{name}.{kind}-<pid>-<12 hex>{suffix}``.

    The writer's process id in the name lets a later run tell a leftover of a killed writer (removed by
    :func:`remove_stale_temporaries`) from a file being written right now.
    """
    # Drop the name from the temporary one when it would push it past the usual 255-byte file name limit.
    base = f".{path.name}" if len(path.name.encode()) <= 200 else ""
    return path.with_name(f"{base}.{kind}-{os.getpid()}-{secrets.token_hex(6)}{path.suffix}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process, or a number no process can have
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: Path, force: bool = False) -> list[Path]:
    """Delete the temporaries of our own naming in ``folder`` whose writer is gone; returns what was removed.

    Only regular files owned by this user, named as :func:`temp_path` names them, count: their process is not
    alive and they are older than :data:`STALE_DEAD_SECONDS` (a writer on another machine sharing the folder keeps
    its file fresh), or they are older than :data:`STALE_ANY_SECONDS` whatever their pid. Each folder is swept
    once per process (``force`` sweeps it again). Errors are ignored: this is housekeeping.
    """
    key = os.path.abspath(folder)
    with _cleaned_lock:
        if key in _cleaned and not force:
            return []
        _cleaned.add(key)
    removed = []
    now = time.time()
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid):
            continue
        age = now - info.st_mtime
        pid = int(match.group(1)) if match.group(1) else None
        gone = pid is not None and pid != os.getpid() and not _alive(pid)
        if (gone and age >= STALE_DEAD_SECONDS) or age >= STALE_ANY_SECONDS:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


def fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a folder: read-only is enough for fsync on Linux) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary path in ``path``'s directory; on success it replaces ``path`` atomically.

    The temporary name is hidden (:func:`temp_path`) and created exclusively, so concurrent writers never share
    one. On any failure (including KeyboardInterrupt, which the CLI raises on SIGTERM too) it is deleted and
    ``path`` is left as it was: readers never see a partial file and an existing good file is never clobbered by
    a failed write. Leftovers of a killed writer are removed by a later write to the same folder.
    Raises ``OSError`` if the temporary file cannot be created or renamed.
    """
    path = Path(path)
    remove_stale_temporaries(path.parent)
    tmp = temp_path(path)
    created = False
    try:
        # Inside the try: a SIGTERM (KeyboardInterrupt) right after the file exists must still remove it.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        created = True
        yield tmp
        # Flush to disk before the rename, so a crash cannot leave an empty file under the final name.
        fsync_path(tmp)
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[Path]) -> Iterator[list[Path]]:
    """All or nothing for several files: yields one temporary path per ``paths`` entry; when the block succeeds
    they are renamed into place together.

    On any failure before the renames, every temporary is deleted and no target changes. Should a rename itself
    fail (the disk vanishing between two renames), the targets already replaced get their previous content back
    (kept as hard links until the end) or are removed if they are new, so the files keep their earlier state.
    """
    paths = [Path(p) for p in paths]
    temps: list[Path] = []
    try:
        for path in paths:
            remove_stale_temporaries(path.parent)
            tmp = temp_path(path)
            temps.append(tmp)  # listed first: a signal just after the file exists still finds it
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield temps
        for tmp in temps:
            fsync_path(tmp)
            follow_umask(tmp)
        _replace_all(temps, paths)
    finally:
        for tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _replace_all(temps: list[Path], paths: list[Path]) -> None:
    """Rename ``temps`` over ``paths``, undoing the renames done so far if one fails."""
    backups: dict[Path, Path | None] = {}
    existed = {path for path in paths if path.exists()}
    try:
        for path in paths:
            backup = None
            if path in existed:
                backup = temp_path(path, "old")
                try:
                    os.link(path, backup)
                except OSError:  # no hard links here: the old file cannot be restored, only kept until replaced
                    backup = None
            backups[path] = backup
        done: list[Path] = []
        try:
            for tmp, path in zip(temps, paths, strict=True):
                os.replace(tmp, path)
                done.append(path)
        except BaseException:
            for path in done:
                with contextlib.suppress(OSError):
                    backup = backups[path]
                    if backup is not None:
                        os.replace(backup, path)
                    elif path not in existed:
                        os.unlink(path)
            raise
    finally:
        for backup in backups.values():
            if backup is not None:
                with contextlib.suppress(OSError):
                    os.unlink(backup)
