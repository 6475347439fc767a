"""Parity of the language model and generation loop with AudioCraft (../shared/golden/{musicgen,stereo}).

T5 is bypassed as the golden set does: its stored hidden states/masks go through our conditioner's projection.
Tolerances: logits 1e-4 absolute (float64-vs-float32 noise in the reference: ~1e-6); generated codes exact.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from wavecraft.checkpoints.lm import load_lm_bundle
from wavecraft.checkpoints.safe_load import load_torch_file
from wavecraft.codec import EnCodec, InterleaveStereoCompressionModel
from wavecraft.conditioning import T5Conditioner
from wavecraft.lm.generate import Conditions, SamplingParams, generate

GREEDY = SamplingParams(use_sampling=False)


def _setup(golden, name):
    bundle = load_lm_bundle(golden / name / "state_dict.bin")
    io = load_file(str(golden / name / "io.safetensors"))
    emb, mask = bundle.conditioners["description"].project(io["t5_hidden"], io["t5_mask"])
    return bundle, io, (emb.detach(), mask)


@pytest.mark.parametrize("name", ["musicgen", "stereo"])
def test_checkpoint_and_config(golden, name):
    assert "best_state" in load_torch_file(golden / name / "state_dict.bin")
    bundle = load_lm_bundle(golden / name / "state_dict.bin")
    cfg = bundle.lm.cfg
    assert (cfg.dim, cfg.num_heads, cfg.num_layers, cfg.card, cfg.cross_attention) == (64, 4, 2, 128, True)
    assert bundle.cfg_coef == 3.0 and bundle.max_duration == 30
    assert bundle.interleave_stereo == (name == "stereo")
    assert cfg.delays == ((0, 1, 2, 3) if name == "musicgen" else (0, 0, 1, 1, 2, 2, 3, 3))


@pytest.mark.parametrize("name", ["musicgen", "stereo"])
def test_teacher_forced_logits(golden, name):
    bundle, io, (emb, mask) = _setup(golden, name)
    if "description_embeds" in io:
        torch.testing.assert_close(emb, io["description_embeds"], atol=1e-5, rtol=0)
    with torch.inference_mode():
        logits = bundle.lm(io["fwd_sequence"], cross_src=emb, cross_mask=mask)
    torch.testing.assert_close(logits, io["fwd_logits"], atol=1e-4, rtol=0)


def test_incremental_decoding_matches_teacher_forcing(golden):
    """The static KV cache gives the same logits step by step as one full pass."""
    bundle, io, (emb, mask) = _setup(golden, "musicgen")
    seq = io["fwd_sequence"]
    with torch.inference_mode():
        full = bundle.lm(seq, cross_src=emb, cross_mask=mask)
        state = bundle.lm.new_state(2, seq.shape[-1], emb, mask)
        steps = [bundle.lm.step(seq[..., :5], state)] + [bundle.lm.step(seq[..., s:s + 1], state)
                                                            for s in range(5, seq.shape[-1])]
    torch.testing.assert_close(torch.cat(steps, dim=2), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("key, two_step, prompt", [
    ("gen_text", False, False), ("gen_continuation", False, True), ("gen_two_step", True, False)])
def test_greedy_generation(golden, key, two_step, prompt):
    bundle, io, cond = _setup(golden, "musicgen")
    null = T5Conditioner.null(cond, length=1 if two_step else None)
    codes = generate(
        bundle.lm, Conditions(cross_src=cond[0], cross_mask=cond[1]), max_gen_len=io[key].shape[-1],
        null=Conditions(cross_src=null[0], cross_mask=null[1]), cfg_coef=bundle.cfg_coef, two_step_cfg=two_step,
        prompt=io["cont_prompt_codes"] if prompt else None, sampling=GREEDY)
    assert torch.equal(codes, io[key])


def test_stereo_generation_and_decode(golden):
    bundle, io, cond = _setup(golden, "stereo")
    null = T5Conditioner.null(cond)
    codes = generate(bundle.lm, Conditions(cross_src=cond[0], cross_mask=cond[1]), max_gen_len=30,
                     null=Conditions(cross_src=null[0], cross_mask=null[1]), cfg_coef=3.0, sampling=GREEDY)
    assert torch.equal(codes, io["gen_text"])
    codec = InterleaveStereoCompressionModel(EnCodec.from_pretrained(golden / "encodec" / "compression_state_dict.bin"))
    with torch.inference_mode():
        torch.testing.assert_close(codec.decode(codes), io["decoded_stereo"], atol=1e-4, rtol=0)
