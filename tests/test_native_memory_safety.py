"""The native decoding kernels under AddressSanitizer: every native-step scenario of test_lm_native_step.py, with
the kernels rebuilt with ``-fsanitize=address`` (for the CPU's widest vectors, then for AVX2) in a child process,
must run without an out-of-bounds access (a scratch buffer sized by the cache alone once overflowed on a long text
condition)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wavecraft.lm import native

SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from wavecraft.lm import native
native.FLAGS = native.FLAGS + ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]
import test_lm_native_step as t
for isa in ("widest", "avx2"):  # AVX-512 where the CPU has it, then AVX2 alone
    if isa == "avx2":
        os.environ["WAVECRAFT_NATIVE_ISA"] = "avx2"
    native.reset()
    assert native.available()
    for options in t.OPTIONS:
        for rows in t.ROWS:
            for quantized in (False, True):
                t.test_same_logits_and_cache_as_the_pytorch_layers(options, rows, quantized, native.isa())
    t.test_condition_longer_than_the_generation()
    t.test_position_outside_the_cache_or_wrong_rows_are_refused()
print("clean")
"""


def _libasan() -> str | None:
    compiler = shutil.which("gcc")
    if compiler is None:
        return None
    path = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.skipif(not (native._cpu_supported() and native._torch_uses_libgomp() and _libasan()),
                    reason="needs gcc with libasan, an AVX2/FMA x86-64 CPU and torch on libgomp")
def test_native_step_has_no_out_of_bounds_access(tmp_path):
    env = dict(os.environ, WAVECRAFT_CACHE=str(tmp_path), LD_PRELOAD=_libasan(), CC="gcc",
               ASAN_OPTIONS=f"detect_leaks=0:log_path={tmp_path / 'asan'}")
    script = SCRIPT.format(tests=str(Path(__file__).parent))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    reports = "".join(p.read_text() for p in tmp_path.glob("asan*"))
    assert done.returncode == 0 and done.stdout.strip().endswith("clean"), reports[:3000] or done.stderr[-3000:]
