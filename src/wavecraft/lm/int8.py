"""The int8 weight format of :mod:`wavecraft.lm.quantize` and its matrix products, by what this machine has.

A quantized weight is an int8 tensor ``q [out, in]`` carrying one fp32 scale per row (:func:`int8_scale`):
``W ~ q * scale[:, None]``. The products are weight-only: inputs, products and sums stay fp32,
``y = (x q^T) * scale + bias``.

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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..errors import WavecraftError
from . import native

ATTR = "_wavecraft_int8"  # on a quantized weight: its _Int8
Rows = tuple[int, int] | None


@dataclass
class _Int8:
    scale: torch.Tensor  # [out] fp32
    packs: dict = field(default_factory=dict)  # {rows: fbgemm packed weight}, built where fbgemm runs the products


class QuantizationError(WavecraftError, ValueError):
    """An unknown quantization method, or one the model or device cannot run."""


def is_quantized(weight: torch.Tensor) -> bool:
    return weight.dtype == torch.int8 and ATTR in weight.__dict__


def fbgemm_available() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines or "x86" in torch.backends.quantized.supported_engines


def int8_scale(weight: torch.Tensor) -> torch.Tensor:
    """The per-row scales ``[out]`` of a quantized weight."""
    return weight.__dict__[ATTR].scale


def quantize_rows(weight: torch.Tensor) -> torch.Tensor:
    """``weight [out, in]`` fp32 -> int8 ``[out, in]`` carrying one scale per row (``max|row| / 127``)."""
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # an all-zero row still needs a scale > 0
    q = (w / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    q.__dict__[ATTR] = _Int8(scale.contiguous())
    return q


@torch.compiler.disable  # dynamo cannot trace the scales kept on the tensor: a compiled step calls this eagerly
def int8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, rows: Rows,
                fast: bool = True) -> torch.Tensor:
    """``F.linear(x, W[rows], bias)`` for a quantized ``weight``: ``x [..., in] -> [..., out]``. ``fast=False``
    multiplies by the dequantized weight (the plain path, the reference the kernels are tested against)."""
    if x.dtype != torch.float32:
        raise QuantizationError(f"int8 linears take float32 inputs, got {x.dtype}")
    meta: _Int8 = weight.__dict__[ATTR]
    q, scale = (weight, meta.scale) if rows is None else (weight[rows[0]:rows[1]], meta.scale[rows[0]:rows[1]])
    flat = x.reshape(-1, x.shape[-1])
    if fast and native.supports(flat, q):
        return native.linear(flat.contiguous(), q, bias, scale).view(*x.shape[:-1], q.shape[0])
    if not fast or native.available() or not fbgemm_available():  # weight-only, as the native kernels
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
