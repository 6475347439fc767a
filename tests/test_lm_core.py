"""The plain LM transformer (wavecraft.lm.transformer): the masked forward against a float64 statement of
attention, the band mask's reach, the no-cache forward against cached decoding, and an acyclic import graph in lm/.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wavecraft.lm import linear as fast
from wavecraft.lm import native
from wavecraft.lm.config import LMConfig
from wavecraft.lm.model import LMModel
from wavecraft.lm.transformer import SelfAttention, TransformerLM, band_mask, causal_mask

LM_DIR = Path(__file__).resolve().parents[1] / "src" / "wavecraft" / "lm"
S = 12


def tiny(**overrides) -> LMModel:
    torch.manual_seed(0)
    cfg = {"dim": 32, "num_heads": 4, "num_layers": 2, "card": 24, "n_q": 2, "delays": (0, 1), **overrides}
    lm = LMModel(LMConfig(**cfg)).eval()
    with torch.no_grad():
        for p in lm.parameters():
            if p.dim() == 1:  # norms and biases away from their 1 / 0 init, so that a missed one shows
                p.normal_(0.5, 0.2)
    return lm


def additive(mask: torch.Tensor | None, length: int) -> torch.Tensor:
    """Any mask form as float64 additive (0 = attend, -inf = not)."""
    if mask is None:
        return torch.zeros(length, length, dtype=torch.float64)
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=torch.float64).masked_fill(~mask, -math.inf)
    return mask.double()


def reference_attention(x: torch.Tensor, attn, mask: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T / sqrt(head_dim) + mask) v`` then the output projection, in float64. ``x [B, T, D]``."""
    b, t, d = x.shape
    h = attn.num_heads
    w, bias = attn.in_proj_weight.double(), attn.in_proj_bias
    qkv = x @ w.T + (0 if bias is None else bias.double())
    q, k, v = (part.view(b, t, h, d // h).transpose(1, 2) for part in qkv.split(d, dim=-1))  # [B, H, T, Dh]
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // h) + mask
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
    out_bias = attn.out_proj.bias
    return out @ attn.out_proj.weight.double().T + (0 if out_bias is None else out_bias.double())


def reference_cross(x: torch.Tensor, attn, src: torch.Tensor) -> torch.Tensor:
    """Cross-attention in float64: queries from ``x``, keys/values from ``src`` (no mask)."""
    b, t, d = x.shape
    h = attn.num_heads
    w = attn.in_proj_weight.double()
    bias = torch.zeros(3 * d, dtype=torch.float64) if attn.in_proj_bias is None else attn.in_proj_bias.double()
    q = (x @ w[:d].T + bias[:d]).view(b, t, h, -1).transpose(1, 2)
    k = (src @ w[d:2 * d].T + bias[d:2 * d]).view(b, src.shape[1], h, -1).transpose(1, 2)
    v = (src @ w[2 * d:].T + bias[2 * d:]).view(b, src.shape[1], h, -1).transpose(1, 2)
    out = ((q @ k.transpose(-1, -2) / math.sqrt(d // h)).softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    out_bias = attn.out_proj.bias
    return out @ attn.out_proj.weight.double().T + (0 if out_bias is None else out_bias.double())


def reference_lm(lm: TransformerLM, sequence: torch.Tensor, cross_src: torch.Tensor | None,
                 mask: torch.Tensor) -> torch.Tensor:
    """The whole model in float64: ``sequence [B, K, S] -> [B, K, S, card]``."""
    cfg = lm.cfg

    def norm(module, y):
        return F.layer_norm(y, (cfg.dim,), module.weight.double(), module.bias.double(), cfg.norm_eps)

    def lin(module, y):
        return y @ module.weight.double().T + (0 if module.bias is None else module.bias.double())

    x = sum(lm.emb[k].weight.double()[sequence[:, k]] for k in range(cfg.n_q))
    half = cfg.dim // 2
    phase = torch.arange(S, dtype=torch.float64)[:, None] / cfg.max_period ** (torch.arange(half) / (half - 1))
    x = x + cfg.positional_scale * torch.cat([phase.cos(), phase.sin()], dim=-1)
    src = None if cross_src is None else cross_src.double()
    for layer in lm.transformer.layers:
        x = x + reference_attention(norm(layer.norm1, x), layer.self_attn, mask)
        if src is not None:
            x = x + reference_cross(norm(layer.norm_cross, x), layer.cross_attention, src)
        x = x + lin(layer.linear2, F.gelu(lin(layer.linear1, norm(layer.norm2, x))))
    x = norm(lm.out_norm, x)
    return torch.stack([lin(head, x) for head in lm.linears], dim=1)


def per_head_mask(batch: int, heads: int, length: int) -> torch.Tensor:
    """``[B, H, S, S]`` bool, random per row and head, every position seeing itself (no empty row)."""
    mask = torch.rand(batch, heads, length, length, generator=torch.Generator().manual_seed(3)) < 0.5
    return mask | torch.eye(length, dtype=torch.bool)


MASKS = {
    "none": lambda cfg: None,
    "causal_bool": lambda cfg: causal_mask(S),
    "causal_additive": lambda cfg: torch.zeros(S, S).masked_fill(~causal_mask(S), -math.inf),
    "band_additive": lambda cfg: band_mask(S, 2),
    "band_bool": lambda cfg: band_mask(S, 3) == 0,
    "per_head_bool": lambda cfg: per_head_mask(2, cfg.num_heads, S),
    "per_head_additive": lambda cfg: additive(per_head_mask(2, cfg.num_heads, S), S).float(),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_one_layer_attention_matches_the_float64_statement(name):
    lm = tiny(causal=False, bias_attn=True)
    attn: SelfAttention = lm.transformer.layers[0].self_attn
    mask = MASKS[name](lm.cfg)
    x = torch.randn(2, S, lm.cfg.dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = attn(x, mask)
    expected = reference_attention(x.double(), attn, additive(mask, S))
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize("name", list(MASKS))
def test_whole_model_matches_the_float64_statement(name, causal):
    """A given mask replaces the default; without one a causal model is causal and a non-causal one unmasked."""
    lm = tiny(causal=causal, bias_attn=True, bias_ff=True, bias_proj=True)
    mask = MASKS[name](lm.cfg)
    sequence = torch.randint(0, lm.cfg.card, (2, lm.cfg.n_q, S), generator=torch.Generator().manual_seed(2))
    cross = torch.randn(2, 5, lm.cfg.dim, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = lm(sequence, cross, attn_mask=mask)
    default = causal_mask(S) if causal else None
    expected = reference_lm(lm, sequence, cross, additive(default if mask is None else mask, S))
    assert logits.shape == (2, lm.cfg.n_q, S, lm.cfg.card)
    torch.testing.assert_close(logits.double(), expected, atol=1e-4, rtol=1e-4)


def test_band_mask_limits_what_a_position_sees():
    """Through L layers of band ``c`` a position sees ``|i - j| <= L c``: a token changed further away leaves its
    logits exactly as they were, one changed within the band does not."""
    lm = tiny(causal=False, cross_attention=False)
    context, reach = 2, 2 * lm.cfg.num_layers
    mask = band_mask(S, context)
    sequence = torch.randint(0, lm.cfg.card, (1, lm.cfg.n_q, S), generator=torch.Generator().manual_seed(5))
    changed = sequence.clone()
    j = S - 1
    changed[:, :, j] = (changed[:, :, j] + 1) % lm.cfg.card
    with torch.no_grad():
        before, after = lm(sequence, attn_mask=mask), lm(changed, attn_mask=mask)
        unmasked = lm(sequence), lm(changed)
    far = j - reach - 1  # outside every layer's reach
    assert torch.equal(before[:, :, :far + 1], after[:, :, :far + 1])
    assert (before[:, :, j - context] - after[:, :, j - context]).abs().max() > 1e-3
    assert (unmasked[0][:, :, 0] - unmasked[1][:, :, 0]).abs().max() > 1e-3  # without the band, all see it


def test_mask_of_the_wrong_shape_is_refused():
    lm = tiny(causal=False, cross_attention=False)
    sequence = torch.zeros(1, lm.cfg.n_q, S, dtype=torch.long)
    with torch.no_grad(), pytest.raises(ValueError, match="attention mask of shape"):
        lm(sequence, attn_mask=band_mask(S - 1, 2))


@pytest.mark.parametrize("fast_kernels", [True, False], ids=["fast", "plain"])
def test_no_cache_forward_equals_cached_decoding(fast_kernels):
    """A causal model: the one-pass forward (no cache) gives the logits of decoding step by step with the cache
    (a prefix, a summed condition and cross-attention all in), through the native step where it applies."""
    lm = tiny(bias_attn=True, cross_attention_mask=True)
    gen = torch.Generator().manual_seed(6)
    sequence = torch.randint(0, lm.cfg.card, (2, lm.cfg.n_q, S), generator=gen)
    prefix = torch.randn(2, 3, lm.cfg.dim, generator=gen)
    cross = torch.randn(2, 5, lm.cfg.dim, generator=gen)
    cross_mask = torch.ones(2, 5, dtype=torch.long)
    cross_mask[1, 3:] = 0
    summed = torch.randn(2, S - 2, lm.cfg.dim, generator=gen)
    was = fast.is_enabled()
    fast.set_enabled(fast_kernels)
    try:
        with torch.inference_mode():
            full = lm(sequence, cross, cross_mask, prefix, summed)
            state = lm.new_state(2, 3 + S, cross, cross_mask, summed)
            chunks = [lm.step(sequence[..., :2], state, prefix)]  # prefill: the prefix and two steps
            chunks += [lm.step(sequence[..., s:s + 1], state) for s in range(2, S - 3)]
            chunks.append(lm.step(sequence[..., S - 3:], state))  # a multi-step chunk after cached steps
    finally:
        fast.set_enabled(was)
    assert state.pos == 3 + S
    assert (state.native_plan is not None) == (fast_kernels and native.available())
    torch.testing.assert_close(torch.cat(chunks, dim=2), full, atol=2e-5, rtol=1e-5)


def test_explicit_causal_mask_equals_the_default():
    """With and without the cache: the rows of a chunk at ``pos`` are ``mask[pos:pos+T, :pos+T]``."""
    lm = tiny()
    sequence = torch.randint(0, lm.cfg.card, (2, lm.cfg.n_q, S), generator=torch.Generator().manual_seed(7))
    cross = torch.randn(2, 5, lm.cfg.dim)
    mask = causal_mask(S)
    with torch.no_grad():
        default = lm(sequence, cross)
        torch.testing.assert_close(lm(sequence, cross, attn_mask=mask), default, atol=1e-6, rtol=1e-6)
        cache = lm.new_cache(2, S, cross)
        chunks = [lm.forward_cached(sequence[..., lo:hi], cache, attn_mask=mask[lo:hi, :hi])
                  for lo, hi in ((0, 5), (5, 6), (6, S))]
    torch.testing.assert_close(torch.cat(chunks, dim=2), default, atol=2e-5, rtol=1e-5)


def lm_imports() -> dict[str, set[str]]:
    """``{module: the lm modules it imports}`` for src/wavecraft/lm/*.py: every import statement anywhere in the
    file (TYPE_CHECKING blocks and imports inside functions included), relative or absolute."""
    modules = {path.stem for path in LM_DIR.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in LM_DIR.glob("*.py"):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                # The imported module as a dotted name under wavecraft: "from .x import y" -> "lm.x",
                # "from . import a" -> "lm" (then each name may be a module), "from ..lm.x import y" -> "lm.x".
                name = node.module or ""
                if node.level == 0:
                    name = name[len("wavecraft."):] if name.startswith("wavecraft.") else ""
                elif node.level == 1:
                    name = f"lm.{name}" if name else "lm"
                parts = name.split(".")
                if parts[0] == "lm":
                    found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[2] for alias in node.names if alias.name.startswith("wavecraft.lm.")}
        graph[path.stem] = (found & modules) - {"__init__", path.stem}
    return graph


def test_lm_import_graph_is_acyclic():
    """No cycle among the modules of lm/, counting TYPE_CHECKING imports too; and the plain transformer depends on
    no decoding backend, not even indirectly."""
    graph = lm_imports()
    assert graph["model"] >= {"transformer", "decode_runner"}  # the parser sees imports
    assert "transformer" in graph["native_step"] and "transformer" in graph["quantize"]  # TYPE_CHECKING ones too
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in visiting:
            cycle = visiting[visiting.index(module):] + [module]
            raise AssertionError(f"import cycle in lm/: {' -> '.join(cycle)}")
        if module in done:
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)

    below: set[str] = set()
    todo = ["transformer"]
    while todo:
        for target in graph[todo.pop()] - below:
            below.add(target)
            todo.append(target)
    assert not below & {"model", "decode_runner", "native_step", "quantize", "generate"}, below
