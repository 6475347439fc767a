"""Launching tests/ddp_worker.py alone or under torchrun on CPU (gloo), for the data-parallel equivalence tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


def run_worker(launcher: list[str], out: Path, run_dir: Path, *args: str, timeout: float = 180) -> None:
    """Run the worker with ``launcher`` (``[python]`` or :func:`torchrun`); it saves its results to ``out``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT"):  # never inherit an outer launcher's job
        env.pop(var, None)
    proc = subprocess.run([*launcher, str(WORKER), str(out), str(run_dir), *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{launcher} failed:\n{proc.stdout}\n{proc.stderr}"
