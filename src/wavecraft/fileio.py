"""Writing files so that a failure never leaves a partial output behind."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


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


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary path in ``path``'s directory; on success it replaces ``path`` atomically.

    The temporary name is hidden (``.{name}.tmp-<random>{suffix}``) and created exclusively, so concurrent
    writers never share one. On any failure (including KeyboardInterrupt) it is deleted and ``path`` is left as it
    was: readers never see a partial file and an existing good file is never clobbered by a failed write.
    Raises ``OSError`` if the temporary file cannot be created or renamed.
    """
    # Drop the name from the temporary one when it would push it past the usual 255-byte file name limit.
    base = f".{path.name}" if len(path.name.encode()) <= 200 else ""
    tmp = path.with_name(f"{base}.tmp-{secrets.token_hex(6)}{path.suffix}")
    # 0o666 lets the umask decide the final permissions, as for a file opened normally (mkstemp would force 0o600).
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield tmp
        # Flush to disk before the rename, so a crash cannot leave an empty file under the final name.
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
