"""Native CPU decoding kernels, compiled at first use and called through ctypes: the few-row matrix products of
``gemv.c`` with fp32 or int8 weights (:func:`linear`) and the whole one-position step of ``decode.c`` (driven by
:mod:`wavecraft.lm.native_step`).

Decoding multiplies 2-8 rows (a CFG batch) by every weight matrix once per step, which is bound by how fast the
weights stream from memory; PyTorch's CPU kernels reach about half of that bandwidth at these shapes, the loops in
``gemv.c`` nearly all of it (``benchmarks/bench_generate.py`` measures both). Building needs a C compiler (``cc``
or ``$CC``) and an x86-64 CPU with AVX2 and FMA; where the CPU has AVX-512 the loops use it (:func:`isa`;
``WAVECRAFT_NATIVE_ISA=avx2`` keeps them to AVX2). The library is cached under ``~/.cache/wavecraft/kernels``
(``$WAVECRAFT_CACHE``). Without them, or with ``WAVECRAFT_NATIVE=0``, :func:`available` is False and callers
use PyTorch's kernels; nothing else changes.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCES = [Path(__file__).with_name(name) for name in ("gemv.c", "decode.c")]
HEADER = Path(__file__).with_name("kernels.h")
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
ISA_FLAGS = {"avx2": [], "avx512": ["-mavx512f"]}
# Measured at the musicgen-small shapes: 8 rows run 1.1x faster than packed oneDNN, 32 rows tie with it (and
# beat F.linear 1.6x); more rows (a prefill) are compute-bound, where a library GEMM is the right tool.
MAX_ROWS = 32


def cache_dir() -> Path:
    root = os.environ.get("WAVECRAFT_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME")
                                                             or os.path.expanduser("~/.cache"), "wavecraft")
    return Path(root) / "kernels"


def _cpu_flags() -> set[str]:
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return set()
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return set()
    return set(flags.split(":", 1)[1].split())


def _cpu_supported() -> bool:
    return {"avx2", "fma"} <= _cpu_flags()


def isa() -> str:
    """The vector instructions the kernels are built for here: ``"avx512"`` where the CPU has AVX-512F (16-float
    vectors: the products stream their weights faster) and the compiler builds it, else ``"avx2"``;
    ``WAVECRAFT_NATIVE_ISA=avx2`` asks for AVX2 on any CPU."""
    available()
    return _loaded.get("isa") or _wanted_isa()


def _wanted_isa() -> str:
    wanted = os.environ.get("WAVECRAFT_NATIVE_ISA", "").lower()
    if wanted not in ("", "avx2", "avx512"):
        log.warning("WAVECRAFT_NATIVE_ISA=%s is not avx2 or avx512: ignored", wanted)
    if wanted == "avx2" or "avx512f" not in _cpu_flags():
        return "avx2"
    return "avx512"


def _torch_uses_libgomp() -> bool:
    """Our OpenMP loops must share torch's thread pool: -fopenmp links ``libgomp.so.1``, and the loader reuses the
    copy torch loaded under that soname. A torch built on another OpenMP runtime would get a second pool."""
    try:
        return torch.backends.openmp.is_available() and "libgomp" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


#: Build folders (``tmp*`` beside the cache) older than this are leftovers of a killed build and are removed.
STALE_BUILD_SECONDS = 600.0


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _verified(target: Path) -> bool:
    """Whether ``target`` is the library its checksum file describes: a torn or truncated cache file (a build
    killed mid-write, a full disk) would crash the process that maps it (SIGBUS), so it is never loaded blindly."""
    stamp = target.with_name(target.name + ".sha256")
    try:
        return target.is_file() and stamp.read_text().strip() == _file_digest(target)
    except OSError:
        return False


def _remove_stale_builds(folder: Path) -> None:
    now = time.time()
    for leftover in folder.glob("tmp*"):
        try:
            if leftover.is_dir() and now - leftover.stat().st_mtime > STALE_BUILD_SECONDS:
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass


def _check_in_child(library: Path) -> None:
    """Load ``library`` and look its kernels up in a child process: a broken build fails there, not here."""
    code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
            "lib.wavecraft_gemv_f32; lib.wavecraft_gemv_i8; lib.wavecraft_decode_step")
    subprocess.run([sys.executable, "-c", code, str(library)], check=True, capture_output=True, text=True,
                   timeout=60)


def _publish(built: Path, target: Path) -> None:
    """Move ``built`` to ``target`` with its checksum file, each written, flushed to disk and renamed."""
    with open(built, "rb") as f:
        os.fsync(f.fileno())
    stamp = built.with_name(built.name + ".sha256")
    with open(stamp, "w") as f:
        f.write(_file_digest(built))
        f.flush()
        os.fsync(f.fileno())
    os.replace(built, target)
    os.replace(stamp, target.with_name(target.name + ".sha256"))  # last: a library without it is rebuilt


def _build(compiler: str, isa_name: str) -> Path:
    """Compile the kernels into the cache (once per sources and flags), verified before first use and at every
    load (:func:`_verified`); a cached file that fails verification is rebuilt."""
    flags = FLAGS + ISA_FLAGS[isa_name]
    code = b"".join(path.read_bytes() for path in [*SOURCES, HEADER])
    digest = hashlib.sha256(code + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    target = cache_dir() / f"kernels-{digest}.so"
    if _verified(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(target.parent)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        subprocess.run([compiler, *flags, *map(str, SOURCES), "-o", str(built), "-lm"], check=True,
                       capture_output=True, text=True, timeout=120)
        _check_in_child(built)
        _publish(built, target)
    return target


def _load() -> tuple[ctypes.CDLL, str] | None:
    """The built library and the ISA it was built for; an AVX-512 build that fails (an old compiler) falls back to
    AVX2."""
    if os.environ.get("WAVECRAFT_NATIVE", "1") == "0" or not _cpu_supported() or not _torch_uses_libgomp():
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler found: decoding uses PyTorch's linear kernels")
        return None
    wanted = _wanted_isa()
    for isa_name in dict.fromkeys([wanted, "avx2"]):
        try:
            lib = ctypes.CDLL(str(_build(compiler, isa_name)))
            fn, fn_i8, step = lib.wavecraft_gemv_f32, lib.wavecraft_gemv_i8, lib.wavecraft_decode_step
            break
        except (OSError, subprocess.SubprocessError, AttributeError) as error:
            detail = getattr(error, "stderr", None) or error
            fallback = "building for AVX2" if isa_name != "avx2" else "using PyTorch's kernels"
            log.warning("could not build the native decoding kernel for %s (%s): %s", isa_name, detail, fallback)
    else:
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    fn.argtypes = [pointer, size, pointer, size, pointer, pointer, size, size, size, size]
    fn_i8.argtypes = [pointer, size, pointer, size, pointer, pointer, pointer, size, size, size, size]
    step.argtypes = [pointer, pointer, size, pointer]
    fn.restype = fn_i8.restype = step.restype = ctypes.c_int
    return lib, isa_name


# "lib": the library or None, once tried; "isa": what it was built for; "fn", "fn_i8": its fp32 and int8 product
# kernels. A plain dict so that torch.compile traces the lookups.
_loaded: dict = {}


def available() -> bool:
    """Whether the native kernels are built and loadable here (builds them on the first call)."""
    if "lib" not in _loaded:
        loaded = _load()
        lib, _loaded["isa"] = loaded if loaded is not None else (None, None)
        _loaded["lib"] = lib
        _loaded["fn"] = None if lib is None else lib.wavecraft_gemv_f32
        _loaded["fn_i8"] = None if lib is None else lib.wavecraft_gemv_i8
    return _loaded["lib"] is not None


def library() -> ctypes.CDLL:
    """The loaded kernels (``wavecraft_gemv_f32``, ``wavecraft_decode_step``); :func:`available` must be True."""
    if not available():
        raise RuntimeError("the native decoding kernels are not available here (see wavecraft.lm.native)")
    return _loaded["lib"]


def reset() -> None:
    """Forget the loaded kernel: the next :func:`available` looks again (after changing the environment)."""
    _loaded.clear()


def supports(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes these operands: CPU, 2-D, fp32 x and fp32 or int8 weight, at most ``MAX_ROWS``
    rows, unit inner stride, K a multiple of 8."""
    return (x.dim() == 2 and x.shape[0] <= MAX_ROWS and x.dtype == torch.float32
            and weight.dtype in (torch.float32, torch.int8)
            and x.device.type == weight.device.type == "cpu" and weight.dim() == 2 and x.shape[1] % 8 == 0
            and x.stride(1) == 1 and weight.stride(1) == 1 and available())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           scale: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` for ``x [M, K]``, ``weight [N, K]`` that :func:`supports` accepts; an int8
    ``weight`` takes its per-row ``scale [N]``: ``(x weight^T) * scale + bias``.

    Under ``torch.compile`` it is the custom op ``wavecraft::few_row_linear``, which the compiled graph calls as an
    opaque kernel while fusing what lies between (norms, activations, residuals). Eager calls skip the op's
    dispatch: its wrapper costs microseconds per call and imports torch._dynamo (2 s) on first use. (int8
    products run eagerly inside compiled code: :func:`wavecraft.lm.quantize.int8_linear`.)"""
    if weight.dtype == torch.int8:
        if scale is None:
            raise ValueError("an int8 weight needs its per-row scales")
        return _run(x, weight, bias, scale)
    if torch.compiler.is_compiling():
        return _few_row_linear(x, weight, bias)
    return _run(x, weight, bias)


def _run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
         scale: torch.Tensor | None = None) -> torch.Tensor:
    library()
    m, k = x.shape
    n = weight.shape[0]
    if bias is not None:  # the kernel reads it as contiguous fp32
        bias = bias.to(torch.float32).contiguous()
    out = torch.empty(m, n, dtype=torch.float32)
    bias_ptr = None if bias is None else bias.data_ptr()
    if scale is None:
        _loaded["fn"](x.data_ptr(), x.stride(0), weight.data_ptr(), weight.stride(0), bias_ptr, out.data_ptr(), n,
                      m, n, k)
    else:
        scale = scale.to(torch.float32).contiguous()
        _loaded["fn_i8"](x.data_ptr(), x.stride(0), weight.data_ptr(), weight.stride(0), scale.data_ptr(),
                         bias_ptr, out.data_ptr(), n, m, n, k)
    return out


@torch.library.custom_op("wavecraft::few_row_linear", mutates_args=())
def _few_row_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _run(x, weight, bias)


@_few_row_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return x.new_empty(x.shape[0], weight.shape[0])
