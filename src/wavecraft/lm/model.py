"""The MusicGen language model: codebook embeddings, pre-norm transformer with a static KV cache, per-codebook heads.

Parameter names follow AudioCraft's checkpoints (``emb.{k}``, ``transformer.layers.{i}.self_attn.in_proj_weight``,
``linears.{k}``), so a native ``best_state`` loads as is. Conditioning arrives as tensors: a prefix to prepend,
a cross-attention source, and/or a per-frame condition summed into the input; text encoders and the chroma live in
:mod:`wavecraft.conditioning`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import native, native_step
from .config import LMConfig
from .linear import linear


def sin_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal position embedding, cosine half first. ``positions [B, T, 1] -> [B, T, dim]`` (float32)."""
    half = dim // 2
    steps = torch.arange(half, device=positions.device, dtype=torch.float32).view(1, 1, -1)
    period = torch.full([], max_period, device=positions.device, dtype=torch.float32)
    phase = positions / (period ** (steps / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


@dataclass
class DecodeState:
    """Everything incremental decoding carries between steps, preallocated once per generation.

    ``keys/values[i]`` are layer i's self-attention caches ``[B, H, max_len, head_dim]``; ``cross[i]`` its
    cross-attention keys/values, computed once from the condition; ``pos`` is the number of cached positions.
    ``summed [B, F, D]`` is added to the input embedding of sequence step ``s`` at frame ``min(s, F - 1)``;
    ``steps`` counts the sequence steps fed so far (``pos`` without the prefix).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    cross: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    cross_mask: torch.Tensor | None = None  # [B, 1, 1, L] bool, True = attend
    summed: torch.Tensor | None = None
    pos: int = 0
    steps: int = 0
    native_plan: native_step.DecodePlan | None = None  # built on the first native step
    zero_filled: bool = False  # caches zeroed: the compiled step may read (masked) unwritten positions

    @property
    def max_len(self) -> int:
        return self.keys[0].shape[2]

    def check_room(self, steps: int) -> None:
        """Raise ``ValueError`` unless the caches hold ``steps`` more positions."""
        if self.pos + steps > self.max_len:
            raise ValueError(f"decode state holds {self.max_len} positions, {self.pos + steps} needed")


class _Attention(nn.Module):
    """Projection weights as AudioCraft stores them: fused ``in_proj_weight`` (rows [q; k; v]) and ``out_proj``."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * cfg.dim, cfg.dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * cfg.dim)) if cfg.bias_attn else None
        self.out_proj = nn.Linear(cfg.dim, cfg.dim, bias=cfg.bias_attn)
        nn.init.xavier_uniform_(self.in_proj_weight)


class SelfAttention(_Attention):
    """Multi-head self-attention writing its keys/values into a static cache."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__(cfg)
        self.causal = cfg.causal

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, pos: int | torch.Tensor
                ) -> torch.Tensor:
        """``x [B, T, D]`` at positions ``pos..pos+T-1``; ``keys/values [B, H, L, Dh]`` caches, updated in place.

        A tensor ``pos [1]`` (one position, the static decode step) attends over the whole cache with the
        positions after ``pos`` masked, so that shapes stay the same from step to step; the cache must then hold
        finite values beyond ``pos`` (zeros), as masked scores still multiply them.
        """
        b, t, d = x.shape
        qkv = linear(x, self.in_proj_weight, self.in_proj_bias).view(b, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, T, Dh]
        if isinstance(pos, torch.Tensor):
            keys.index_copy_(2, pos, k)
            values.index_copy_(2, pos, v)
            visible = (torch.arange(keys.shape[2], device=x.device) <= pos).view(1, 1, 1, -1)  # [1, 1, 1, L]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
            return linear(out.transpose(1, 2).reshape(b, t, d), self.out_proj.weight, self.out_proj.bias)
        keys[:, :, pos:pos + t] = k
        values[:, :, pos:pos + t] = v
        k_all, v_all = keys[:, :, :pos + t], values[:, :, :pos + t]
        mask = None
        causal = self.causal and t > 1
        if causal and pos > 0:  # a multi-step chunk after cached steps: causal mask offset by pos
            mask = torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(pos)
            causal = False
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, is_causal=causal)
        return linear(out.transpose(1, 2).reshape(b, t, d), self.out_proj.weight, self.out_proj.bias)


class CrossAttention(_Attention):
    """Attention from the audio stream to the condition (e.g. projected T5 states); K/V computed once."""

    def _split(self, which: int, x: torch.Tensor) -> torch.Tensor:
        dim = x.shape[-1]
        bias = None if self.in_proj_bias is None else self.in_proj_bias[which * dim:(which + 1) * dim]
        y = linear(x, self.in_proj_weight, bias, rows=(which * dim, (which + 1) * dim))
        return y.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def key_values(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``src [B, L, D] -> (keys, values) [B, H, L, Dh]``."""
        return self._split(1, src), self._split(2, src)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
                ) -> torch.Tensor:
        b, t, d = x.shape
        out = F.scaled_dot_product_attention(self._split(0, x), kv[0], kv[1], attn_mask=mask)
        return linear(out.transpose(1, 2).reshape(b, t, d), self.out_proj.weight, self.out_proj.bias)


class TransformerLayer(nn.Module):
    """Pre-norm layer: ``x + SA(LN(x))``, then ``+ CA(LN(x), cond)``, then ``+ FFN(LN(x))`` (exact GELU)."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttention(cfg)
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        if cfg.cross_attention:
            self.cross_attention = CrossAttention(cfg)
            self.norm_cross = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.linear1 = nn.Linear(cfg.dim, cfg.hidden_scale * cfg.dim, bias=cfg.bias_ff)
        self.linear2 = nn.Linear(cfg.hidden_scale * cfg.dim, cfg.dim, bias=cfg.bias_ff)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)

    def forward(self, x: torch.Tensor, state: DecodeState, index: int, pos: int | torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), state.keys[index], state.values[index], pos)
        if state.cross:
            x = x + self.cross_attention(self.norm_cross(x), state.cross[index], state.cross_mask)
        hidden = F.gelu(linear(self.norm2(x), self.linear1.weight, self.linear1.bias))
        return x + linear(hidden, self.linear2.weight, self.linear2.bias)


class Transformer(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))


class LMModel(nn.Module):
    """Codes in, next-step logits out.

    Shapes: ``forward(sequence [B, K, S], ...) -> logits [B, K, S, card]`` where ``sequence`` is already laid out
    by a codebook pattern, and ``logits[:, :, s]`` predicts step ``s + 1``.
    """

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.emb = nn.ModuleList(nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q))
        self.transformer = Transformer(cfg)
        self.out_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.linears = nn.ModuleList(nn.Linear(cfg.dim, cfg.card, bias=cfg.bias_proj) for _ in range(cfg.n_q))
        self._compiled_step = None

    def compile_decoding(self, mode: str | None = None) -> None:
        """Run one-step decoding calls through ``torch.compile`` (prefill and multi-step chunks stay eager).

        The compiled function is :meth:`_static_step`: the position is a tensor and attention spans the whole
        cache, so every step of a generation has the same shapes and the same host-side inputs and one compiled
        graph serves them all (another cache length compiles once more, then with a symbolic length). That is
        what ``mode="reduce-overhead"`` needs to capture the step as a CUDA graph and replay it: the caches are
        marked static addresses, so a replay writes them in place rather than copying them in. What compiling
        removes is per-step Python and kernel-launch overhead, which pays off on long or repeated generations
        (the first one pays the compile time). On CPU, wherever the native step of :mod:`wavecraft.lm.native_step`
        applies it runs instead (it has no such overhead left and was faster than any compiled step measured);
        the compiled step serves the rest (GPUs, half precision, no C compiler). See
        ``benchmarks/bench_generate.py --compile``.
        """
        native.available()  # build the native kernel now: tracing would break the graph at its build
        self._compiled_step = torch.compile(self._static_step, mode=mode)

    @property
    def compiled(self) -> bool:
        return self._compiled_step is not None

    @property
    def transformer_dtype(self) -> torch.dtype:
        """The dtype the layers compute in (norm weights tell it: int8 quantization leaves them fp32)."""
        return self.transformer.layers[0].norm1.weight.dtype

    def set_transformer_dtype(self, dtype: torch.dtype) -> None:
        """Run the transformer layers (and the KV cache) in ``dtype``, e.g. ``torch.float16`` on a GPU, while the
        embeddings, the output norm and the heads stay float32, as the reference does under autocast."""
        if not dtype.is_floating_point:
            raise ValueError(f"transformer dtype must be a floating-point type, got {dtype}")
        self.transformer.to(dtype)

    @property
    def special_token(self) -> int:
        return self.cfg.card

    def new_state(self, batch: int, max_len: int, cross_src: torch.Tensor | None = None,
                  cross_mask: torch.Tensor | None = None, summed: torch.Tensor | None = None) -> DecodeState:
        """Preallocate caches for ``max_len`` positions (prefix included) and the cross-attention keys/values.

        ``cross_src [B, L, D]``; ``cross_mask [B, L]`` (1 = real token) is used only if the config asks for it.
        Prepended conditions are never masked: neither reference masks padded prefix positions.
        ``summed [B, F, D]``: a condition aligned with the codec frames (see :class:`DecodeState`).
        """
        ref = self.transformer.layers[0].norm1.weight  # the layers' dtype and device
        shape = (batch, self.cfg.num_heads, max_len, self.cfg.head_dim)
        # Uninitialised where only written positions are read. Zero-filling the musicgen-small caches of a 10 s
        # clip (200 MB) took about 0.1 s before the first step, a tenth of the time to the first audio. The
        # compiled step reads (masked) the whole cache: it needs zeros, as garbage could be NaN.
        new = ref.new_zeros if self.compiled else ref.new_empty
        state = DecodeState(keys=[new(shape) for _ in self.transformer.layers],
                            values=[new(shape) for _ in self.transformer.layers],
                            summed=None if summed is None else summed.to(self.out_norm.weight.dtype))
        if self.compiled:
            state.zero_filled = True
            for cache in state.keys + state.values:
                torch._dynamo.mark_static_address(cache)
        if self.cfg.cross_attention:
            if cross_src is None:
                raise ValueError("this model has cross-attention and needs a condition (cross_src)")
            src = cross_src.to(ref.dtype)
            state.cross = [layer.cross_attention.key_values(src) for layer in self.transformer.layers]
            if self.cfg.cross_attention_mask and cross_mask is not None:
                keep = cross_mask.bool()
                # A row with no real token (a null condition) attends to everything, as an additive large-negative
                # mask does: a boolean all-False row would give NaN.
                keep = keep | ~keep.any(dim=-1, keepdim=True)
                state.cross_mask = keep[:, None, None, :]
        return state

    def embed(self, sequence: torch.Tensor) -> torch.Tensor:
        """``[B, K, S] -> [B, S, D]``: sum of the K codebook embeddings."""
        out = self.emb[0](sequence[:, 0])
        for k in range(1, self.cfg.n_q):
            out = out + self.emb[k](sequence[:, k])
        return out

    def _input(self, sequence: torch.Tensor, summed: torch.Tensor | None, steps: torch.Tensor) -> torch.Tensor:
        """Embedded codes plus the summed condition: ``sequence [B, K, S]`` at sequence steps ``steps [S]``."""
        x = self.embed(sequence)
        if summed is not None:
            # Input step s predicts codebook 0's frame s (the pattern's first step is empty), so it gets frame s.
            x = x + summed[:, steps.clamp(max=summed.shape[1] - 1)]
        return x

    def _with_positions(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x [B, S, D]`` plus the sinusoidal embedding of ``positions [S]``."""
        embedding = sin_embedding(positions.view(1, -1, 1), self.cfg.dim, self.cfg.max_period)
        return x + self.cfg.positional_scale * embedding.to(x.dtype)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, D]`` transformer output -> ``[B, K, S, card]`` logits (norm and heads in float32)."""
        x = self.out_norm(x.to(self.out_norm.weight.dtype))
        return torch.stack([linear(x, head.weight, head.bias) for head in self.linears], dim=1)

    def step(self, sequence: torch.Tensor, state: DecodeState, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """Run the next ``S`` steps incrementally: ``sequence [B, K, S] -> logits [B, K, S, card]``.

        ``prefix [B, P, D]`` (prepended conditions) goes in front on the first call; its positions are not
        returned. Positions continue from ``state.pos``.
        """
        if (self._compiled_step is not None and state.zero_filled and prefix is None and sequence.shape[-1] == 1
                and state.pos > 0 and not native_step.applies(self, state, sequence, prefix)):
            state.check_room(1)
            pos = torch.full((1,), state.pos, dtype=torch.long, device=sequence.device)
            seq_step = torch.full((1,), state.steps, dtype=torch.long, device=sequence.device)
            # A CUDA-graph replay returns its static output buffer, which the next replay overwrites: two-step CFG
            # calls twice before reading either result.
            logits = self._compiled_step(sequence, state, pos, seq_step).clone()
            state.pos += 1
            state.steps += 1
            return logits
        return self._step(sequence, state, prefix)

    def _static_step(self, sequence: torch.Tensor, state: DecodeState, pos: torch.Tensor, step: torch.Tensor
                     ) -> torch.Tensor:
        """One position, given as tensors: ``sequence [B, K, 1]`` at cache position ``pos [1]`` and sequence step
        ``step [1]`` -> logits ``[B, K, 1, card]``. Reads nothing from ``state`` that changes between steps (the
        caller advances ``state.pos``/``steps``), so its compiled graph never needs recompiling within a
        generation (see :meth:`compile_decoding`)."""
        x = self._with_positions(self._input(sequence, state.summed, step), pos)
        x = x.to(state.keys[0].dtype)
        for i, layer in enumerate(self.transformer.layers):
            x = layer(x, state, i, pos)
        return self._heads(x)

    def _step(self, sequence: torch.Tensor, state: DecodeState, prefix: torch.Tensor | None = None) -> torch.Tensor:
        x = self._input(sequence, state.summed,
                        torch.arange(state.steps, state.steps + sequence.shape[-1], device=sequence.device))
        state.steps += sequence.shape[-1]
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        steps = x.shape[1]
        state.check_room(steps)
        x = self._with_positions(x, torch.arange(state.pos, state.pos + steps, device=x.device))
        if native_step.applies(self, state, sequence, prefix):
            if state.native_plan is None:
                state.native_plan = native_step.DecodePlan(self, state)
            logits = state.native_plan(x[:, 0], state.pos)
            state.pos += 1
            return logits.unsqueeze(2)
        x = x.to(state.keys[0].dtype)  # the layers may run in half precision (set_transformer_dtype)
        for i, layer in enumerate(self.transformer.layers):
            x = layer(x, state, i, state.pos)
        state.pos += steps
        return self._heads(x[:, steps - sequence.shape[-1]:])

    def forward(self, sequence: torch.Tensor, cross_src: torch.Tensor | None = None,
                cross_mask: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                summed: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits for a whole sequence (training, evaluation)."""
        length = sequence.shape[-1] + (0 if prefix is None else prefix.shape[1])
        state = self.new_state(sequence.shape[0], length, cross_src, cross_mask, summed)
        return self.step(sequence, state, prefix)
