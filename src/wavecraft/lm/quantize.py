"""Int8 weights for the LM's transformer linears, for CPU decoding: a backend that swaps tensors.

Decoding one token per step is a chain of matrix-vector products bound by how fast weights stream from memory,
so storing them in int8 (a quarter of fp32) cuts the bytes each step reads by about 4x. Each output channel
(row of ``W [out, in]``) gets its own scale ``max|W_row| / 127`` (symmetric, zero point 0). The quantization is
weight-only: inputs, products and sums stay fp32, ``y = (x q^T) * scale + bias``. The format and the kernels that
multiply by it live in :mod:`wavecraft.lm.int8` (re-exported here).

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
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import native

# _ATTR, _Int8, _fbgemm_pack, _fbgemm_available: the format's private names as they were when they lived here.
from .int8 import ATTR as _ATTR  # noqa: F401
from .int8 import QuantizationError, Rows, _fbgemm_pack, _Int8, int8_linear, int8_scale, is_quantized  # noqa: F401
from .int8 import fbgemm_available as _fbgemm_available
from .int8 import quantize_rows as _quantize_rows

if TYPE_CHECKING:
    from .transformer import TransformerLM

__all__ = ["QUANTIZE_METHODS", "QuantizationError", "Rows", "check_quantize", "int8_linear", "int8_scale",
           "is_quantized", "model_is_quantized", "quantize_int8", "quantized_weight_bytes"]

log = logging.getLogger(__name__)

QUANTIZE_METHODS = ("int8",)


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


def _replace(module: nn.Module, name: str) -> None:
    """Swap parameter ``module.name`` for its int8 quantization (a buffer)."""
    weight = getattr(module, name)
    if is_quantized(weight):
        return
    quantized = _quantize_rows(weight)
    # Drop every reference to the fp32 tensor (parameter and any oneDNN-packed copy hanging off it).
    delattr(module, name)
    module.register_buffer(name, quantized, persistent=False)


def quantize_int8(lm: TransformerLM) -> TransformerLM:
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


def _release_freed_memory() -> None:
    """Hand the freed fp32 weights back to the OS (glibc keeps small-ish freed blocks in its heap otherwise)."""
    gc.collect()
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)

