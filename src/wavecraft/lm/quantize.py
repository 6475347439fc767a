"""Int8 weights for the LM's transformer linears, for CPU decoding.

Decoding one token per step is a chain of matrix-vector products bound by how fast weights stream from memory,
so storing them in int8 (a quarter of fp32) cuts the bytes each step reads by about 4x. Each output channel
(row of ``W [out, in]``) gets its own scale ``max|W_row| / 127`` (symmetric, zero point 0).

Kernel: fbgemm's ``quantized::linear_dynamic`` (what ``torch.ao.quantization.quantize_dynamic`` runs), fed
per-channel prepacked weights directly. It quantizes each input to uint8 on the fly (one scale per call) and
accumulates in int32. On the AVX2 development CPU it ran a ``[2, 1024] x [1024, 4096]`` product about 3x faster
than oneDNN fp32 with packed weights, while the strictly weight-only ``aten._weight_int8pack_mm`` was slower
than plain fp32 (see ``benchmarks/bench_generate.py``). Inputs use 7 bits (``reduce_range``): AVX2 kernels
without VNNI sum pairs of uint8 x int8 products in saturating int16, which 8-bit inputs overflow (at the
musicgen-small size, teacher-forced top-1 agreement with fp32 fell from 0.91 to 0.85 with 8-bit inputs; rounding
only the weights gives 0.96 on those random weights, whose logits are nearly tied).

Only the transformer layers are quantized (self-attention in/out projections, cross-attention projections, FFN);
embeddings, norms and the output heads stay fp32, as the reference keeps them in full precision. A quantized
weight is replaced by an int8 placeholder of the same shape that owns no memory (a broadcast single byte) and
carries the packed weight(s); :func:`wavecraft.lm.linear.linear` recognises it by its dtype. The fp32 weights are
freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import platform
import warnings
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import WavecraftError

if TYPE_CHECKING:
    from .model import LMModel

QUANTIZE_METHODS = ("int8",)
_ATTR = "_wavecraft_int8"  # on a placeholder: {rows: packed weight}
Rows = tuple[int, int] | None


class QuantizationError(WavecraftError, ValueError):
    """An unknown quantization method, or one the model or device cannot run."""


def check_quantize(method: str | None, device: str | torch.device | None = None) -> str | None:
    """Return ``method`` if it names a supported quantization (or is ``None``) that runs on ``device``.

    Raises :class:`QuantizationError` otherwise, so that callers can fail before loading a model.
    """
    if method is None:
        return None
    if method not in QUANTIZE_METHODS:
        raise QuantizationError(f"unknown quantization {method!r}; supported: {', '.join(QUANTIZE_METHODS)}")
    if device is not None and torch.device(device).type != "cpu":
        raise QuantizationError(f"{method} quantization runs on CPU only, not {torch.device(device)} "
                                "(use device='cpu')")
    return method


def is_quantized(weight: torch.Tensor) -> bool:
    return weight.dtype == torch.int8 and _ATTR in weight.__dict__


def _kernel_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


def _pack_rows(weight: torch.Tensor) -> torch.ScriptObject:
    """``weight [out, in]`` fp32 -> fbgemm packed int8 with one scale per output channel."""
    w = weight.detach().float().contiguous()
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()  # an all-zero row still needs a scale > 0
    zero_points = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantize_per_channel announces its future deprecation on every call
        warnings.simplefilter("ignore")
        qweight = torch.quantize_per_channel(w, scales, zero_points, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(qweight, None)


def _placeholder(weight: torch.Tensor, packs: dict[Rows, torch.ScriptObject]) -> torch.Tensor:
    """An int8 ``[out, in]`` tensor backed by one byte (stride 0) that carries the packed weights."""
    holder = torch.zeros((), dtype=torch.int8).expand(weight.shape)
    holder.__dict__[_ATTR] = packs
    return holder


def _replace(module: nn.Module, name: str, rows: list[Rows]) -> None:
    """Swap parameter ``module.name`` for a quantized placeholder packed for each row slice (``None`` = all)."""
    weight = getattr(module, name)
    if is_quantized(weight):
        return
    packs = {r: _pack_rows(weight if r is None else weight[r[0]:r[1]]) for r in rows}
    # Drop every reference to the fp32 tensor (parameter and any oneDNN-packed copy hanging off it).
    delattr(module, name)
    module.register_buffer(name, _placeholder(weight, packs), persistent=False)


def quantize_int8(lm: LMModel) -> LMModel:
    """Quantize ``lm``'s transformer linears to int8 in place (idempotent) and return it. CPU only.

    Afterwards the model can decode and run teacher-forced forward passes, but not train or be saved.
    """
    device = lm.linears[0].weight.device
    if device.type != "cpu":
        raise QuantizationError(f"int8 quantization runs on CPU only; the model is on {device} (use device='cpu')")
    if not _kernel_available():
        raise QuantizationError("this PyTorch build has no fbgemm/x86 quantized engine for int8 linears")
    dim = lm.cfg.dim
    for layer in lm.transformer.layers:
        _replace(layer.self_attn, "in_proj_weight", [None])
        _replace(layer.self_attn.out_proj, "weight", [None])
        if hasattr(layer, "cross_attention"):
            # Cross-attention always multiplies by one third of the fused [q; k; v] weight at a time.
            _replace(layer.cross_attention, "in_proj_weight", [(i * dim, (i + 1) * dim) for i in range(3)])
            _replace(layer.cross_attention.out_proj, "weight", [None])
        _replace(layer.linear1, "weight", [None])
        _replace(layer.linear2, "weight", [None])
    lm.requires_grad_(False)
    _release_freed_memory()
    return lm


def model_is_quantized(lm: nn.Module) -> bool:
    return any(is_quantized(b) for b in lm.buffers())


def quantized_weight_bytes(lm: nn.Module) -> tuple[int, int]:
    """``(int8 bytes, fp32 bytes)`` of the quantized weights: int8 values plus one fp32 scale per output row."""
    int8_bytes = fp32_bytes = 0
    for buffer in lm.buffers():
        if is_quantized(buffer):
            out_features, in_features = buffer.shape
            int8_bytes += out_features * in_features + 4 * out_features
            fp32_bytes += 4 * out_features * in_features
    return int8_bytes, fp32_bytes


def int8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: Rows) -> torch.Tensor:
    """``F.linear(x, W[rows], bias)`` for a quantized placeholder ``weight``: ``x [..., in] -> [..., out]``."""
    packs: dict[Rows, torch.ScriptObject] = weight.__dict__[_ATTR]
    packed = packs.get(rows)
    if packed is None:
        raise RuntimeError(f"int8 weight was not packed for rows {rows}")
    if x.dtype != torch.float32:
        raise QuantizationError(f"int8 linears take float32 inputs, got {x.dtype}")
    out = torch.ops.quantized.linear_dynamic(x.contiguous(), packed, True)  # reduce_range: see module docstring
    return out if bias is None else out + bias


def _release_freed_memory() -> None:
    """Hand the freed fp32 weights back to the OS (glibc keeps small-ish freed blocks in its heap otherwise)."""
    gc.collect()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
