"""Linear layers for CPU decoding: the native few-row kernel, else oneDNN with weights pre-packed.

At one token per step a decoder is a chain of matrix-vector products bound by how fast weights stream from
memory. On CPU ``F.linear`` with 2-8 rows (a CFG batch) reads them at about a quarter of the memory bandwidth,
oneDNN with weights packed once into its blocked layout at about half, and the native kernel of
:mod:`wavecraft.lm.native` at nearly all of it, straight from the model's own weights. Where the native kernel
cannot be built, oneDNN's packed path runs instead.

The packed copy lives on the weight tensor itself (so it dies with it) and is rebuilt whenever the weight is
modified in place (``Tensor._version``). It costs one extra copy of the decoder weights; callers turn packing off
where memory is short (:func:`set_packing`). Training and non-CPU or non-fp32 inputs use ``F.linear``.
Weights quantized by :func:`wavecraft.lm.quantize.quantize_int8` are int8: they go to the int8 kernels of
:mod:`wavecraft.lm.int8` (the fp32 heads of a quantized model still take the fast fp32 path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import native
from .int8 import int8_linear

_ATTR = "_wavecraft_packed"
_HAS_ONEDNN = hasattr(torch.ops.mkldnn, "_linear_pointwise") and torch.backends.mkldnn.is_available()
_state = {"enabled": True, "packing": _HAS_ONEDNN}


def set_enabled(enabled: bool) -> None:
    """Turn the fast CPU kernels (native and packed) on or off for every model in the process."""
    _state["enabled"] = bool(enabled)


def is_enabled() -> bool:
    return _state["enabled"]


def set_packing(enabled: bool) -> None:
    """Allow or forbid oneDNN's packed weight copies (the fallback when the native kernel is unavailable)."""
    _state["packing"] = bool(enabled) and _HAS_ONEDNN


def is_packing() -> bool:
    return _state["packing"]


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
           rows: tuple[int, int] | None = None) -> torch.Tensor:
    """``F.linear(x, weight[rows[0]:rows[1]], bias)``, through the fastest CPU kernel for its shape.

    An int8 ``weight`` comes from :func:`wavecraft.lm.quantize.quantize_int8`: it runs the int8 kernels.
    """
    if weight.dtype == torch.int8:
        return int8_linear(x, weight, bias, rows, fast=_state["enabled"])
    w = weight if rows is None else weight[rows[0]:rows[1]]
    if not (_state["enabled"] and x.device.type == "cpu" and x.dtype == torch.float32
            and w.dtype == torch.float32 and not torch.is_grad_enabled()):
        return F.linear(x, w, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    if native.supports(flat, w):  # a custom op: torch.compile keeps it
        return native.linear(flat, w, bias).view(*x.shape[:-1], w.shape[0])
    # Many rows (a prefill) take a library GEMM with no weight copy, and so does torch.compile (the packed cache is
    # Python-side state), which picks its own kernel.
    if not _state["packing"] or native.available() or torch.compiler.is_compiling():
        return F.linear(x, w, bias)
    cache: dict = weight.__dict__.setdefault(_ATTR, {})
    entry = cache.get(rows)
    if entry is None or entry[0] != weight._version:
        # The row count of the first call is a layout hint (it halves the packing time); any count works later.
        entry = (weight._version, torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), flat.shape[0]))
        cache[rows] = entry
    out = torch.ops.mkldnn._linear_pointwise(flat, entry[1], bias, "none", [], "")
    return out.view(*x.shape[:-1], w.shape[0])


def packed_copy_fits(module: torch.nn.Module, margin: float = 1.5) -> bool:
    """Whether one more copy of ``module``'s weights fits in available memory (Linux; elsewhere assumed)."""
    needed = sum(p.numel() * p.element_size() for p in module.parameters()) * margin
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return True
    return needed < available
