"""Int8 weights for the LM's transformer linears, for CPU decoding.

Decoding one token per step is a chain of matrix-vector products bound by how fast weights stream from memory,
so storing them in int8 (a quarter of fp32) cuts the bytes each step reads by about 4x. Each output channel
(row of ``W [out, in]``) gets its own scale ``max|W_row| / 127`` (symmetric, zero point 0). The quantization is
weight-only: inputs, products and sums stay fp32, ``y = (x q^T) * scale + bias``.

Kernels, by what this machine has:

* the native kernels (:mod:`wavecraft.lm.native`): ``gemv.c`` widens each vector of 16 int8 weights (8 on AVX2) to
  fp32 in registers. Decoding steps run in ``decode.c`` (the whole native step) and every product of up to 32 rows
  here. At the musicgen-small size an AVX2 native int8 step took 39 ms, against 55 ms for the PyTorch layers on
  fbgemm.
* larger products (a prefill, a teacher-forced pass): ``F.linear`` with the dequantized
  weight, one matrix at a time. The same numbers as the native kernels, where the product is compute-bound anyway.
* without the native kernels: fbgemm's ``quantized::linear_dynamic`` (what ``torch.ao.quantization.quantize_dynamic``
  runs), packed from the same int8 weights and scales at first use. It also quantizes each input, to 7 bits
  (``reduce_range``: AVX2 kernels without VNNI sum pairs of uint8 x int8 products in saturating int16), with one
  scale per call, which costs accuracy: at the musicgen-small size on random weights, teacher-forced top-1
  agreement with fp32 was 0.92 for fbgemm and 0.96 for weight-only int8 (whose logits are nearly tied).

Only the transformer layers are quantized (self-attention in/out projections, cross-attention projections, FFN);
embeddings, norms and the output heads stay fp32, as the reference keeps them in full precision. A quantized
weight becomes an int8 buffer of the same shape carrying its scales (:func:`int8_scale`);
:func:`wavecraft.lm.linear.linear` recognises it by its dtype. The fp32 weights are freed.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import logging
import platform
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WavecraftError
from . import native

if TYPE_CHECKING:
    from .model import LMModel

log = logging.getLogger(__name__)

QUANTIZE_METHODS = ("int8",)
_ATTR = "_wavecraft_int8"  # on a quantized weight: its _Int8
Rows = tuple[int, int] | None


@dataclass
class _Int8:
    scale: torch.Tensor  # [out] fp32
    packs: dict = field(default_factory=dict)  # {rows: fbgemm packed weight}, built where fbgemm runs the products


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


def _fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


def int8_scale(weight: torch.Tensor) -> torch.Tensor:
    """The per-row scales ``[out]`` of a weight quantized by :func:`quantize_int8`."""
    return weight.__dict__[_ATTR].scale


def _quantize_rows(weight: torch.Tensor) -> torch.Tensor:
    """``weight [out, in]`` fp32 -> int8 ``[out, in]`` carrying one scale per row (``max|row| / 127``)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # an all-zero row still needs a scale > 0
    q = (w / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    q.__dict__[_ATTR] = _Int8(scale.contiguous())
    return q


def _replace(module: nn.Module, name: str) -> None:
    """Swap parameter ``module.name`` for its int8 quantization (a buffer)."""
    weight = getattr(module, name)
    if is_quantized(weight):
        return
    quantized = _quantize_rows(weight)
    # Drop every reference to the fp32 tensor (parameter and any oneDNN-packed copy hanging off it).
    delattr(module, name)
    module.register_buffer(name, quantized, persistent=False)


def quantize_int8(lm: LMModel) -> LMModel:
    """Quantize ``lm``'s transformer linears to int8 in place (idempotent) and return it. CPU only.

    Afterwards the model can decode and run teacher-forced forward passes, but not train or be saved.
    """
    device = lm.linears[0].weight.device
    if device.type != "cpu":
        raise QuantizationError(f"int8 quantization runs on CPU only; the model is on {device} (use device='cpu')")
    if not native.available() and not _fbgemm_available():
        log.warning("no native kernels and no fbgemm here: int8 weights are dequantized for every product, "
                    "which is slower than fp32")
    for layer in lm.transformer.layers:
        modules = [layer.self_attn, layer.self_attn.out_proj, layer.linear1, layer.linear2]
        if hasattr(layer, "cross_attention"):
            modules += [layer.cross_attention, layer.cross_attention.out_proj]
        for module in modules:
            _replace(module, "in_proj_weight" if hasattr(module, "in_proj_weight") else "weight")
    # A model loaded from a safetensors file holds views of the file's memory map, which stays mapped (and
    # resident) while any view lives: the tensors left in fp32 (embeddings, norms, heads, biases: a few percent)
    # get memory of their own, so that the pages of the replaced weights go with the map.
    with torch.no_grad():
        for param in lm.parameters():
            param.data = param.data.clone()
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


@torch.compiler.disable  # dynamo cannot trace the scales kept on the tensor: a compiled step calls this eagerly
def int8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: Rows,
                fast: bool = True) -> torch.Tensor:
    """``F.linear(x, W[rows], bias)`` for a quantized ``weight``: ``x [..., in] -> [..., out]``. ``fast=False``
    multiplies by the dequantized weight (the plain path, the reference the kernels are tested against)."""
    if x.dtype != torch.float32:
        raise QuantizationError(f"int8 linears take float32 inputs, got {x.dtype}")
    meta: _Int8 = weight.__dict__[_ATTR]
    q, scale = (weight, meta.scale) if rows is None else (weight[rows[0]:rows[1]], meta.scale[rows[0]:rows[1]])
    flat = x.reshape(-1, x.shape[-1])
    if fast and native.supports(flat, q):
        return native.linear(flat.contiguous(), q, bias, scale).view(*x.shape[:-1], q.shape[0])
    if not fast or native.available() or not _fbgemm_available():  # weight-only, as the native kernels
        return F.linear(flat, q.float().mul_(scale[:, None]), bias).view(*x.shape[:-1], q.shape[0])
    packed = meta.packs.get(rows)
    if packed is None:
        packed = meta.packs[rows] = _fbgemm_pack(q, scale)
    out = torch.ops.quantized.linear_dynamic(x.contiguous(), packed, True)  # reduce_range: see module docstring
    return out if bias is None else out + bias


def _fbgemm_pack(q: torch.Tensor, scale: torch.Tensor) -> torch.ScriptObject:
    zero_points = torch.zeros(q.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensors announce their future deprecation on every creation
        warnings.simplefilter("ignore")
        qweight = torch._make_per_channel_quantized_tensor(q.contiguous(), scale.double(), zero_points, 0)
        return torch.ops.quantized.linear_prepack(qweight, None)


def _release_freed_memory() -> None:
    """Hand the freed fp32 weights back to the OS (glibc keeps small-ish freed blocks in its heap otherwise)."""
    gc.collect()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)

