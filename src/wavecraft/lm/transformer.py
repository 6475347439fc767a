"""The LM transformer in plain PyTorch: codebook embeddings, pre-norm layers, one head per codebook.

One forward runs a whole sequence, with an optional attention mask (none, causal, or any other such as MAGNeT's
local band, :func:`band_mask`) and no KV cache: training, teacher forcing, MAGNeT's parallel decoding. With a
:class:`KVCache` the same layers run incrementally (MusicGen decoding): each call writes its keys/values into the
preallocated cache and attends over what it holds.

Parameter names follow AudioCraft's checkpoints (``emb.{k}``, ``transformer.layers.{i}.self_attn.in_proj_weight``,
``linears.{k}``), so a native ``best_state`` loads as is. Conditioning arrives as tensors: a prefix to prepend,
a cross-attention source, and/or a per-frame condition summed into the input; text encoders and the chroma live in
:mod:`wavecraft.conditioning`.

The projections call :func:`wavecraft.lm.linear.linear`, which is ``F.linear`` with the fastest CPU kernel for the
operands (an int8 weight swapped in by :mod:`wavecraft.lm.quantize` included). The decoding accelerators (the
native step, the compiled step) live in :mod:`wavecraft.lm.decode_runner` and build on this module, never the
reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import LMConfig
from .linear import linear

LayerCache = tuple[torch.Tensor, torch.Tensor]  # one layer's (keys, values) [B, H, L, Dh]


def sin_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal position embedding, cosine half first. ``positions [B, T, 1] -> [B, T, dim]`` (float32)."""
    half = dim // 2
    steps = torch.arange(half, device=positions.device, dtype=torch.float32).view(1, 1, -1)
    period = torch.full([], max_period, device=positions.device, dtype=torch.float32)
    phase = positions / (period ** (steps / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``[S, S]`` bool, True where position i may attend to j (``j <= i``)."""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def band_mask(length: int, context: int, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """MAGNeT's local attention: ``[S, S]`` additive, 0 where ``|i - j| <= context``, else ``-inf``."""
    pos = torch.arange(length, device=device)
    inside = (pos[:, None] - pos[None, :]).abs() <= context
    return torch.zeros(length, length, device=device, dtype=dtype).masked_fill_(~inside, float("-inf"))


@dataclass
class KVCache:
    """What incremental decoding carries between calls, preallocated once per generation.

    ``keys/values[i]`` are layer i's self-attention caches ``[B, H, max_len, head_dim]``; ``cross[i]`` its
    cross-attention keys/values, computed once from the condition; ``pos`` is the number of cached positions.
    ``summed [B, F, D]`` is added to the input embedding of sequence step ``s`` at frame ``min(s, F - 1)``;
    ``steps`` counts the sequence steps fed so far (``pos`` without the prefix).
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    cross: list[LayerCache] = field(default_factory=list)
    cross_mask: torch.Tensor | None = None  # [B, 1, 1, L] bool, True = attend
    summed: torch.Tensor | None = None
    pos: int = 0
    steps: int = 0

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

    def _out(self, out: torch.Tensor) -> torch.Tensor:
        """``[B, H, T, Dh]`` attention output -> ``[B, T, D]`` after the output projection."""
        b, _, t, _ = out.shape
        return linear(out.transpose(1, 2).reshape(b, t, -1), self.out_proj.weight, self.out_proj.bias)


class SelfAttention(_Attention):
    """Multi-head self-attention over the sequence itself or, given a cache, over everything cached so far."""

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__(cfg)
        self.causal = cfg.causal

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: LayerCache | None = None,
                pos: int | torch.Tensor = 0) -> torch.Tensor:
        """``x [B, T, D] -> [B, T, D]``.

        ``attn_mask`` (bool, True = attend, or additive float; ``[T, L]`` or broadcastable to ``[B, H, T, L]``,
        ``L`` the number of keys) replaces the default mask, which is causal for a causal model and none
        otherwise. Without ``cache``, ``L = T``. With ``cache`` (keys/values ``[B, H, max_len, Dh]``, updated in
        place) ``x`` sits at positions ``pos..pos+T-1`` and ``L = pos + T``.

        A tensor ``pos [1]`` (one position, the static decode step) attends over the whole cache with the
        positions after ``pos`` masked, so that shapes stay the same from step to step; the cache must then hold
        finite values beyond ``pos`` (zeros), as masked scores still multiply them.
        """
        b, t, d = x.shape
        qkv = linear(x, self.in_proj_weight, self.in_proj_bias).view(b, t, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, H, T, Dh]
        if cache is None:
            causal = attn_mask is None and self.causal and t > 1
            return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal))
        keys, values = cache
        if isinstance(pos, torch.Tensor):
            if attn_mask is not None:
                raise ValueError("the static decode step (a tensor position) takes no attention mask")
            keys.index_copy_(2, pos, k)
            values.index_copy_(2, pos, v)
            visible = (torch.arange(keys.shape[2], device=x.device) <= pos).view(1, 1, 1, -1)  # [1, 1, 1, L]
            return self._out(F.scaled_dot_product_attention(q, keys, values, attn_mask=visible))
        keys[:, :, pos:pos + t] = k
        values[:, :, pos:pos + t] = v
        k_all, v_all = keys[:, :, :pos + t], values[:, :, :pos + t]
        causal = attn_mask is None and self.causal and t > 1
        if causal and pos > 0:  # a multi-step chunk after cached steps: causal mask offset by pos
            attn_mask = torch.ones(t, pos + t, dtype=torch.bool, device=x.device).tril(pos)
            causal = False
        return self._out(F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=attn_mask, is_causal=causal))


class CrossAttention(_Attention):
    """Attention from the audio stream to the condition (e.g. projected T5 states); K/V computed once."""

    def _split(self, which: int, x: torch.Tensor) -> torch.Tensor:
        dim = x.shape[-1]
        bias = None if self.in_proj_bias is None else self.in_proj_bias[which * dim:(which + 1) * dim]
        y = linear(x, self.in_proj_weight, bias, rows=(which * dim, (which + 1) * dim))
        return y.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def key_values(self, src: torch.Tensor) -> LayerCache:
        """``src [B, L, D] -> (keys, values) [B, H, L, Dh]``."""
        return self._split(1, src), self._split(2, src)

    def forward(self, x: torch.Tensor, kv: LayerCache, mask: torch.Tensor | None) -> torch.Tensor:
        """``x [B, T, D]`` attends to ``kv`` (:meth:`key_values`); ``mask [B, 1, 1, L]`` bool or None."""
        return self._out(F.scaled_dot_product_attention(self._split(0, x), kv[0], kv[1], attn_mask=mask))


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

    def forward(self, x: torch.Tensor, cross: LayerCache | None = None, cross_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, cache: LayerCache | None = None,
                pos: int | torch.Tensor = 0) -> torch.Tensor:
        """``x [B, T, D] -> [B, T, D]``; ``cross``: this layer's cross keys/values (see :class:`SelfAttention`
        for the rest)."""
        x = x + self.self_attn(self.norm1(x), attn_mask, cache, pos)
        if cross is not None:
            x = x + self.cross_attention(self.norm_cross(x), cross, cross_mask)
        hidden = F.gelu(linear(self.norm2(x), self.linear1.weight, self.linear1.bias))
        return x + linear(hidden, self.linear2.weight, self.linear2.bias)


class Transformer(nn.Module):
    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, x: torch.Tensor, cross: list[LayerCache] | None = None, cross_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None, cache: KVCache | None = None,
                pos: int | torch.Tensor = 0) -> torch.Tensor:
        """``x [B, T, D] -> [B, T, D]`` through every layer (``cross[i]``, ``cache`` layer i's part for layer i)."""
        for i, layer in enumerate(self.layers):
            x = layer(x, cross[i] if cross else None, cross_mask, attn_mask,
                      None if cache is None else (cache.keys[i], cache.values[i]), pos)
        return x


class TransformerLM(nn.Module):
    """Codes in, next-step logits out, as plain PyTorch.

    Shapes: ``forward(sequence [B, K, S], ...) -> logits [B, K, S, card]`` where ``sequence`` is already laid out
    by a codebook pattern, and ``logits[:, :, s]`` predicts step ``s + 1`` (for a causal model).
    """

    def __init__(self, cfg: LMConfig) -> None:
        super().__init__()
        cfg.check_memory()  # a config that fits no machine fails here, not after gigabytes of allocation
        self.cfg = cfg
        self.emb = nn.ModuleList(nn.Embedding(cfg.card + 1, cfg.dim) for _ in range(cfg.n_q))
        self.transformer = Transformer(cfg)
        self.out_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.linears = nn.ModuleList(nn.Linear(cfg.dim, cfg.card, bias=cfg.bias_proj) for _ in range(cfg.n_q))

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

    def embed(self, sequence: torch.Tensor) -> torch.Tensor:
        """``[B, K, S] -> [B, S, D]``: sum of the K codebook embeddings."""
        out = self.emb[0](sequence[:, 0])
        for k in range(1, self.cfg.n_q):
            out = out + self.emb[k](sequence[:, k])
        return out

    def input_embedding(self, sequence: torch.Tensor, summed: torch.Tensor | None, steps: torch.Tensor
                        ) -> torch.Tensor:
        """Embedded codes plus the summed condition: ``sequence [B, K, S]`` at sequence steps ``steps [S]``."""
        x = self.embed(sequence)
        if summed is not None:
            # Input step s predicts codebook 0's frame s (the pattern's first step is empty), so it gets frame s.
            x = x + summed[:, steps.clamp(max=summed.shape[1] - 1)]
        return x

    def with_positions(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """``x [B, S, D]`` plus the sinusoidal embedding of ``positions [S]``."""
        embedding = sin_embedding(positions.view(1, -1, 1), self.cfg.dim, self.cfg.max_period)
        return x + self.cfg.positional_scale * embedding.to(x.dtype)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, D]`` transformer output -> ``[B, K, S, card]`` logits (norm and heads in float32)."""
        x = self.out_norm(x.to(self.out_norm.weight.dtype))
        return torch.stack([linear(x, head.weight, head.bias) for head in self.linears], dim=1)

    def condition(self, cross_src: torch.Tensor | None, cross_mask: torch.Tensor | None
                  ) -> tuple[list[LayerCache], torch.Tensor | None]:
        """Every layer's cross-attention keys/values and the key mask ``[B, 1, 1, L]`` (or None).

        ``cross_src [B, L, D]``; ``cross_mask [B, L]`` (1 = real token) is used only if the config asks for it.
        """
        if not self.cfg.cross_attention:
            return [], None
        if cross_src is None:
            raise ValueError("this model has cross-attention and needs a condition (cross_src)")
        src = cross_src.to(self.transformer_dtype)
        cross = [layer.cross_attention.key_values(src) for layer in self.transformer.layers]
        if not (self.cfg.cross_attention_mask and cross_mask is not None):
            return cross, None
        keep = cross_mask.bool()
        # A row with no real token (a null condition) attends to everything, as an additive large-negative mask
        # does: a boolean all-False row would give NaN.
        keep = keep | ~keep.any(dim=-1, keepdim=True)
        return cross, keep[:, None, None, :]

    def forward(self, sequence: torch.Tensor, cross_src: torch.Tensor | None = None,
                cross_mask: torch.Tensor | None = None, prefix: torch.Tensor | None = None,
                summed: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits for a whole sequence in one pass, no cache (training, teacher forcing, MAGNeT).

        ``sequence [B, K, S] -> [B, K, S, card]``; ``prefix [B, P, D]`` goes in front (its positions are not
        returned); ``summed [B, F, D]`` as in :class:`KVCache`. ``attn_mask`` over the ``P + S`` positions (bool,
        True = attend, or additive float; ``[P+S, P+S]`` or broadcastable to ``[B, H, P+S, P+S]``) replaces the
        default mask: causal for a causal model, none otherwise.
        """
        if summed is not None:
            summed = summed.to(self.out_norm.weight.dtype)
        x = self.input_embedding(sequence, summed, torch.arange(sequence.shape[-1], device=sequence.device))
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        length = x.shape[1]
        x = self.with_positions(x, torch.arange(length, device=x.device))
        cross, keep = self.condition(cross_src, cross_mask)
        dtype = self.transformer_dtype
        if attn_mask is not None:
            attn_mask = self._checked_mask(attn_mask, length, dtype)
        x = self.transformer(x.to(dtype), cross, keep, attn_mask)
        return self.heads(x[:, length - sequence.shape[-1]:])

    @staticmethod
    def _checked_mask(mask: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
        """``mask`` as attention takes it: bool as is, an additive one in the layers' dtype."""
        if mask.dim() < 2 or mask.dim() > 4 or tuple(mask.shape[-2:]) != (length, length):
            raise ValueError(f"attention mask of shape {tuple(mask.shape)} for {length} positions: expected "
                             f"[{length}, {length}] or broadcastable [B, H, {length}, {length}]")
        return mask if mask.dtype == torch.bool else mask.to(dtype)

    def new_cache(self, batch: int, max_len: int, cross_src: torch.Tensor | None = None,
                  cross_mask: torch.Tensor | None = None, summed: torch.Tensor | None = None, *,
                  zeros: bool = False, cache_type: type[KVCache] = KVCache) -> KVCache:
        """Preallocate caches for ``max_len`` positions (prefix included) and the cross-attention keys/values.

        ``cross_src``/``cross_mask`` as in :meth:`condition`; prepended conditions are never masked: neither
        reference masks padded prefix positions. ``summed [B, F, D]``: a condition aligned with the codec frames.
        The caches are uninitialised unless ``zeros``: only written positions are read.
        """
        ref = self.transformer.layers[0].norm1.weight  # the layers' dtype and device
        shape = (batch, self.cfg.num_heads, max_len, self.cfg.head_dim)
        new = ref.new_zeros if zeros else ref.new_empty
        cross, keep = self.condition(cross_src, cross_mask)
        return cache_type(keys=[new(shape) for _ in self.transformer.layers],
                          values=[new(shape) for _ in self.transformer.layers], cross=cross, cross_mask=keep,
                          summed=None if summed is None else summed.to(self.out_norm.weight.dtype))

    def cached_inputs(self, sequence: torch.Tensor, cache: KVCache, prefix: torch.Tensor | None = None
                      ) -> torch.Tensor:
        """The layer inputs ``[B, P + S, D]`` of the next ``S`` steps ``sequence [B, K, S]`` (prefix in front),
        positioned after what ``cache`` holds; counts the steps and checks the room (``pos`` is left as is)."""
        x = self.input_embedding(sequence, cache.summed,
                                 torch.arange(cache.steps, cache.steps + sequence.shape[-1], device=sequence.device))
        cache.steps += sequence.shape[-1]
        if prefix is not None:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)
        steps = x.shape[1]
        cache.check_room(steps)
        return self.with_positions(x, torch.arange(cache.pos, cache.pos + steps, device=x.device))

    def forward_cached(self, sequence: torch.Tensor, cache: KVCache, prefix: torch.Tensor | None = None,
                       attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the next ``S`` steps incrementally through the PyTorch layers: ``[B, K, S] -> [B, K, S, card]``.

        ``prefix [B, P, D]`` goes in front (on the first call); its positions are not returned. ``attn_mask`` over
        the ``P + S`` new positions and every key (``[P+S, pos+P+S]``) replaces the default mask.
        """
        x = self.cached_inputs(sequence, cache, prefix)
        steps = x.shape[1]
        x = x.to(cache.keys[0].dtype)  # the layers may run in half precision (set_transformer_dtype)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(x.dtype)
        x = self.transformer(x, cache.cross, cache.cross_mask, attn_mask, cache, cache.pos)
        cache.pos += steps
        return self.heads(x[:, steps - sequence.shape[-1]:])
