"""One-token decoding steps through ``decode.c``: the whole layer stack and the heads in one native call.

:class:`DecodePlan` lays out pointers to a model's weights and a :class:`~wavecraft.lm.transformer.KVCache`'s caches
as ``decode.c`` expects them, once per generation, and keeps a reference to every tensor it points into. Each step
then costs one call: the ~400 small operations between the matrix products (norms, attention over the cache, GELU,
residuals) run on the same threads as the products instead of being dispatched one by one from Python, which on a
2-core CPU took about a third of a musicgen-small step.

:func:`applies` says when a step can take this path: fp32 weights (the transformer projections may be int8 from
:func:`wavecraft.lm.quantize.quantize_int8`) and caches on CPU, one new position, no autograd, the native kernels
built (:mod:`wavecraft.lm.native`), and the fast kernels enabled (:func:`wavecraft.lm.linear.set_enabled`).
Everything else (prefill, multi-step chunks, half-precision layers, GPUs, ``torch.compile``) runs the PyTorch
layers.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch

from . import linear, native
from .int8 import int8_scale, is_quantized

if TYPE_CHECKING:
    from .transformer import KVCache, TransformerLM

_P = ctypes.c_void_p


class _Layer(ctypes.Structure):
    _fields_ = [(name, _P) for name in (
        "norm1_w", "norm1_b", "in_w", "in_b", "out_w", "out_b",
        "normc_w", "normc_b", "cq_w", "cq_b", "co_w", "co_b", "cross_k", "cross_v",
        "norm2_w", "norm2_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b", "keys", "values",
        "in_s", "out_s", "cq_s", "co_s", "fc1_s", "fc2_s")]


class _Plan(ctypes.Structure):
    _fields_ = [*[(name, ctypes.c_int64) for name in (
        "rows", "dim", "heads", "ffn", "layers", "max_len", "cross_len", "codebooks", "card")],
        ("cross_strides", ctypes.c_int64 * 3), ("eps", ctypes.c_float), ("cross_mask", _P), ("layer", _P),
        ("out_norm_w", _P), ("out_norm_b", _P), ("head_w", _P), ("head_b", _P),
        ("score_len", ctypes.c_int64), ("normed", _P), ("qkv", _P), ("attn", _P), ("hidden", _P), ("scores", _P)]


def _native_layout(tensors: list[torch.Tensor | None]) -> bool:
    """CPU, contiguous, fp32 or int8-quantized."""
    return all(t is None or ((t.dtype == torch.float32 or is_quantized(t)) and t.device.type == "cpu"
                             and t.is_contiguous()) for t in tensors)


def applies(lm: TransformerLM, state: KVCache, sequence: torch.Tensor, prefix: torch.Tensor | None) -> bool:
    """Whether this step can run natively (checked every step; cheap once the plan exists)."""
    if (sequence.shape[-1] != 1 or prefix is not None or sequence.shape[0] > native.MAX_ROWS
            or torch.is_grad_enabled() or torch.compiler.is_compiling() or not linear.is_enabled()):
        return False
    if getattr(state, "native_plan", None) is not None:  # a plan is built for this state: it applies
        return True
    cfg = lm.cfg
    if cfg.dim % 8 or (cfg.hidden_scale * cfg.dim) % 8 or not native.available():
        return False
    # Buffers too: int8 quantization turns weights into buffers.
    return _native_layout([*lm.transformer.parameters(), *lm.transformer.buffers(), *lm.out_norm.parameters(),
                             *lm.linears.parameters(), *state.keys, *state.values])


class DecodePlan:
    """``decode.c``'s view of ``lm`` and ``state``: call it with the embedded inputs of one position."""

    def __init__(self, lm: TransformerLM, state: KVCache) -> None:
        cfg = lm.cfg
        rows = state.keys[0].shape[0]
        keep: list[torch.Tensor] = []  # everything pointed into stays alive as long as the plan

        def ptr(t: torch.Tensor | None) -> int | None:
            if t is None:
                return None
            keep.append(t)
            return t.data_ptr()

        def weight(w: torch.Tensor, rows: int | None = None) -> tuple[int | None, int | None]:
            """Pointers to ``w[:rows]`` and, if int8, to its row scales."""
            scale = int8_scale(w)[:rows] if is_quantized(w) else None
            return ptr(w[:rows]), ptr(scale)

        # Cross keys/values are transposed views of one projection: contiguous copies make one layout for all layers.
        cross = [(k.float().contiguous(), v.float().contiguous()) for k, v in state.cross]
        cross_len, strides = (cross[0][0].shape[2], cross[0][0].stride()[:3]) if cross else (0, (0, 0, 0))
        layers = (_Layer * cfg.num_layers)()
        for i, (layer, spec) in enumerate(zip(lm.transformer.layers, layers, strict=True)):
            sa = layer.self_attn
            spec.norm1_w, spec.norm1_b = ptr(layer.norm1.weight), ptr(layer.norm1.bias)
            (spec.in_w, spec.in_s), spec.in_b = weight(sa.in_proj_weight), ptr(sa.in_proj_bias)
            (spec.out_w, spec.out_s), spec.out_b = weight(sa.out_proj.weight), ptr(sa.out_proj.bias)
            spec.norm2_w, spec.norm2_b = ptr(layer.norm2.weight), ptr(layer.norm2.bias)
            (spec.fc1_w, spec.fc1_s), spec.fc1_b = weight(layer.linear1.weight), ptr(layer.linear1.bias)
            (spec.fc2_w, spec.fc2_s), spec.fc2_b = weight(layer.linear2.weight), ptr(layer.linear2.bias)
            spec.keys, spec.values = ptr(state.keys[i]), ptr(state.values[i])
            if cross:
                ca = layer.cross_attention
                spec.normc_w, spec.normc_b = ptr(layer.norm_cross.weight), ptr(layer.norm_cross.bias)
                spec.cq_w, spec.cq_s = weight(ca.in_proj_weight, cfg.dim)
                spec.cq_b = ptr(None if ca.in_proj_bias is None else ca.in_proj_bias[:cfg.dim])
                (spec.co_w, spec.co_s), spec.co_b = weight(ca.out_proj.weight), ptr(ca.out_proj.bias)
                spec.cross_k, spec.cross_v = ptr(cross[i][0]), ptr(cross[i][1])

        heads_w = (_P * cfg.n_q)(*[ptr(head.weight) for head in lm.linears])
        heads_b = None if lm.linears[0].bias is None else (_P * cfg.n_q)(*[ptr(head.bias) for head in lm.linears])
        ffn = cfg.hidden_scale * cfg.dim
        score_len = max(state.max_len, cross_len)  # a text condition can be longer than a short generation
        self.scratch = {name: torch.empty(rows, size) for name, size in (
            ("normed", cfg.dim), ("qkv", 3 * cfg.dim), ("attn", cfg.dim), ("hidden", ffn),
            ("scores", cfg.num_heads * score_len))}
        mask = None
        if state.cross_mask is not None:
            mask = state.cross_mask.reshape(rows, cross_len).to(torch.uint8).contiguous()
        plan = _Plan(rows=rows, dim=cfg.dim, heads=cfg.num_heads, ffn=ffn, layers=cfg.num_layers,
                     max_len=state.max_len, cross_len=cross_len, codebooks=cfg.n_q, card=cfg.card,
                     cross_strides=(ctypes.c_int64 * 3)(*strides), eps=cfg.norm_eps, cross_mask=ptr(mask),
                     layer=ctypes.addressof(layers), out_norm_w=ptr(lm.out_norm.weight),
                     out_norm_b=ptr(lm.out_norm.bias), head_w=ctypes.addressof(heads_w),
                     head_b=None if heads_b is None else ctypes.addressof(heads_b), score_len=score_len,
                     **{name: t.data_ptr() for name, t in self.scratch.items()})
        self._structs = (plan, layers, heads_w, heads_b)
        self._keep = keep
        self._plan = ctypes.byref(plan)
        self._shape = (rows, cfg.n_q, cfg.card)
        self._step = native.library().wavecraft_decode_step

    def __call__(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """``x [M, D]`` (embedded inputs at cache position ``pos``) ``-> logits [M, K, card]``; writes the cache."""
        if tuple(x.shape) != (self._shape[0], self._structs[0].dim):
            raise ValueError(f"inputs of shape {tuple(x.shape)} for a decode state of {self._shape[0]} rows")
        x = x.to(torch.float32).contiguous()
        logits = torch.empty(self._shape)
        if not self._step(self._plan, x.data_ptr(), pos, logits.data_ptr()):
            raise ValueError(f"position {pos} is outside the decode state's {self._structs[0].max_len} positions")
        return logits

