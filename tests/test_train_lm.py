"""LM training objective: alignment with the pattern, CFG dropout, and overfitting a few sequences."""

from __future__ import annotations

import torch

from wavecraft.lm.config import LMConfig
from wavecraft.lm.generate import Conditions, SamplingParams, generate
from wavecraft.lm.model import LMModel
from wavecraft.train.lm_loss import cfg_dropout, lm_cross_entropy, lm_logits
from wavecraft.train.schedule import warmup_cosine

CFG = LMConfig(dim=32, num_heads=2, num_layers=2, card=16, n_q=4)


def test_logits_align_with_codes():
    """logits[:, k, t] must only see codes of earlier pattern steps: changing codes[:, :, t:] leaves them."""
    torch.manual_seed(0)
    lm = LMModel(CFG.replace(cross_attention=False)).eval()
    codes = torch.randint(0, 16, (1, 4, 12))
    changed = codes.clone()
    changed[..., 6:] = (changed[..., 6:] + 1) % 16
    with torch.no_grad():
        a, valid = lm_logits(lm, codes, Conditions())
        b, _ = lm_logits(lm, changed, Conditions())
    assert valid[0, 0, :9].all() and not valid[0, 3, -3:].any()  # the last max_delay steps are not trained
    # codebook 0 at t=6 is predicted from steps before timestep 6 only
    torch.testing.assert_close(a[0, 0, :7], b[0, 0, :7])
    assert not torch.allclose(a[0, 0, 7:9], b[0, 0, 7:9])


def test_cfg_dropout_replaces_whole_rows():
    cond = Conditions(cross_src=torch.ones(8, 3, 4), cross_mask=torch.ones(8, 3, dtype=torch.long))
    null = Conditions(cross_src=torch.zeros(8, 3, 4), cross_mask=torch.zeros(8, 3, dtype=torch.long))
    out = cfg_dropout(cond, null, 0.5, torch.Generator().manual_seed(1))
    rows = out.cross_src.flatten(1)
    assert set(rows.mean(1).tolist()) == {0.0, 1.0}  # each row is entirely kept or dropped
    assert torch.equal(cfg_dropout(cond, null, 0.0).cross_src, cond.cross_src)


def test_overfit_then_regenerate_greedily():
    """A tiny LM learns 3 code sequences (one per condition) and greedy decoding gives them back."""
    torch.manual_seed(0)
    lm = LMModel(CFG)
    codes = torch.randint(0, 16, (3, 4, 10))
    cond = Conditions(cross_src=torch.randn(3, 2, 32), cross_mask=torch.ones(3, 2, dtype=torch.long))
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    schedule = warmup_cosine(optimizer, warmup_steps=10, total_steps=300)
    lm.train()
    for _ in range(300):
        loss = lm_cross_entropy(lm, codes, cond).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    assert loss.item() < 0.05
    lm.eval()
    out = generate(lm, cond, max_gen_len=10, sampling=SamplingParams(use_sampling=False))
    # The last max_delay steps of the higher codebooks are never trained (only complete pattern steps are).
    _, valid = lm_logits(lm, codes, cond)
    assert torch.equal(out[valid], codes[valid]) and valid.float().mean() >= 0.85


def test_warmup_cosine_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=14, min_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 0.25 and lrs[3] == 1.0 and abs(lrs[14] - 0.1) < 1e-9 and lrs[9] < lrs[5]
