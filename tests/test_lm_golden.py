"""Parity of the language model and generation loop with AudioCraft (golden ``musicgen/`` and ``stereo/``).

T5 is bypassed as the golden set does: its stored hidden states/masks go through our conditioner's projection.
Every size and call argument comes from the set's ``meta.json``, the checkpoint's ``xp.cfg`` or tensor shapes (other
sets with other sizes and options run through the same tests, see ``WAVECRAFT_GOLDEN``).
Tolerances (README's suggested acceptance): logits 1e-4 absolute (float64-vs-float32 noise in the reference:
~1e-6), conditioner embeddings 1e-5; generated codes exact.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_meta
from wavecraft.checkpoints.lm import load_lm_bundle
from wavecraft.checkpoints.safe_load import load_torch_file
from wavecraft.checkpoints.xp_config import parse_xp_config, section
from wavecraft.codec import EnCodec, InterleaveStereoCompressionModel
from wavecraft.conditioning import T5Conditioner
from wavecraft.lm.generate import Conditions, SamplingParams, generate

LOGITS_ATOL = 1e-4
AUDIO_ATOL = 1e-4  # README: EnCodec decoded within 1e-4 absolute
EMBEDS_ATOL = 1e-5
STEP_ATOL = 1e-5  # incremental decoding vs one full pass of our own model: same weights, other kernels
# The generation runs of the musicgen/ layout (README); test_every_generate_run_is_tested checks the set has no other.
MUSICGEN_RUNS = ["gen_text", "gen_continuation", "gen_two_step", "gen_two_step_coef5"]


def _setup(golden, name):
    bundle = load_lm_bundle(golden / name / "state_dict.bin")
    io = load_file(str(golden / name / "io.safetensors"))
    emb, mask = bundle.conditioners["description"].project(io["t5_hidden"], io["t5_mask"])
    return bundle, io, (emb.detach(), mask)


def _stored_cfg_coef(config: dict) -> float:
    """``meta.json`` names it ``cfg_coef_stored`` (with a note in parentheses in some sets)."""
    return next(value for key, value in config.items() if key.startswith("cfg_coef_stored"))


def _delays(config: dict) -> tuple[int, ...]:
    """``"delay [0,1,2,3]"`` -> ``(0, 1, 2, 3)``."""
    kind, _, delays = config["codebooks_pattern"].partition(" ")
    assert kind == "delay"
    return tuple(json.loads(delays))


def _prompt(io, spec):
    """``meta.json`` describes a prompt as ``"tensor [B, K, T] = io['name']"`` (or null)."""
    if spec is None:
        return None
    return io[re.search(r"io\['(\w+)'\]", spec)[1]]


def _generate(bundle, io, cond, args):
    """``LMModel.generate`` of AudioCraft with the run's arguments from ``meta.json``."""
    beta = args["cfg_coef_beta"]
    two_step = bool(args["two_step_cfg"]) and beta is None  # double CFG is one batched pass (two_step ignored)
    # T5 tokenizes the null text "" to one token: alone (two-step CFG) the null rows have that length, batched with
    # the conditional rows they have the batch's padded length.
    null = T5Conditioner.null(cond, length=1 if two_step else None)
    null = Conditions(cross_src=null[0], cross_mask=null[1])
    prompt = _prompt(io, args["prompt"])
    sampling = SamplingParams(use_sampling=args["use_sampling"], temperature=args["temp"], top_k=args["top_k"],
                              top_p=args["top_p"])
    # Two-step CFG in AudioCraft uses the coefficient stored with the model, not the argument (README quirk 3).
    cfg_coef = bundle.cfg_coef if two_step else args["cfg_coef"]
    codes = generate(bundle.lm, Conditions(cross_src=cond[0], cross_mask=cond[1]), max_gen_len=args["max_gen_len"],
                     null=null, cfg_coef=cfg_coef, two_step_cfg=two_step, prompt=prompt, sampling=sampling,
                     cfg_coef_beta=beta, mid=null if beta is not None else None)
    if args["remove_prompts"] and prompt is not None:
        codes = codes[..., prompt.shape[-1]:]
    return codes


@pytest.mark.parametrize("name", ["musicgen", "stereo"])
def test_checkpoint_and_config(golden, name):
    package = load_torch_file(golden / name / "state_dict.bin")
    assert "best_state" in package
    root = parse_xp_config(package["xp.cfg"])
    config = golden_meta(golden, name)["config"]
    bundle, io, _ = _setup(golden, name)
    cfg = bundle.lm.cfg
    keys = ("dim", "num_heads", "num_layers", "card", "n_q", "cross_attention")
    assert tuple(getattr(cfg, k) for k in keys) == tuple(config[k] for k in keys)
    assert cfg.delays == _delays(config)
    assert cfg.special_token == config.get("special_token_id", config["card"])  # README: special token id = card
    for key in ("hidden_scale", "bias_attn", "bias_ff", "bias_proj", "causal"):  # where meta.json omits them: xp.cfg
        assert getattr(cfg, key) == config.get(key, section(root, f"transformer_lm.{key}")), key
    assert bundle.cfg_coef == _stored_cfg_coef(config)
    assert bundle.two_step_cfg == config.get("two_step_cfg_stored", section(root, "transformer_lm.two_step_cfg"))
    assert bundle.max_duration == section(root, "dataset.segment_duration")
    interleave = config.get("interleave_stereo_codebooks") or section(root, "interleave_stereo_codebooks")
    assert bundle.interleave_stereo == bool(interleave["use"])
    assert bundle.channels == config.get("channels", section(root, "channels"))
    assert bundle.conditioners["description"].output_proj.in_features == io["t5_hidden"].shape[-1]
    assert bundle.conditioners["description"].encoder_name == config["t5_name"]


@pytest.mark.parametrize("name", ["musicgen", "stereo"])
def test_teacher_forced_logits(golden, name):
    bundle, io, (emb, mask) = _setup(golden, name)
    if "description_embeds" in io:  # stored where present (README): musicgen/ has them, stereo/ does not
        torch.testing.assert_close(emb, io["description_embeds"], atol=EMBEDS_ATOL, rtol=0)
    with torch.inference_mode():
        logits = bundle.lm(io["fwd_sequence"], cross_src=emb, cross_mask=mask)
    torch.testing.assert_close(logits, io["fwd_logits"], atol=LOGITS_ATOL, rtol=0)


def test_incremental_decoding_matches_teacher_forcing(golden):
    """The static KV cache gives the same logits step by step as one full pass."""
    bundle, io, (emb, mask) = _setup(golden, "musicgen")
    seq = io["fwd_sequence"]
    first = max(1, seq.shape[-1] // 4)  # any split: a multi-token first step, then one token at a time
    with torch.inference_mode():
        full = bundle.lm(seq, cross_src=emb, cross_mask=mask)
        state = bundle.lm.new_state(seq.shape[0], seq.shape[-1], emb, mask)
        steps = [bundle.lm.step(seq[..., :first], state)] + [bundle.lm.step(seq[..., s:s + 1], state)
                                                                for s in range(first, seq.shape[-1])]
    torch.testing.assert_close(torch.cat(steps, dim=2), full, atol=STEP_ATOL, rtol=0)


def test_every_generate_run_is_tested(golden):
    assert sorted(golden_meta(golden, "musicgen")["generate_runs"]) == sorted(MUSICGEN_RUNS)
    assert list(golden_meta(golden, "stereo")["generate_runs"]) == ["gen_text"]


@pytest.mark.parametrize("key", MUSICGEN_RUNS)
def test_greedy_generation(golden, key):
    bundle, io, cond = _setup(golden, "musicgen")
    run = golden_meta(golden, "musicgen")["generate_runs"][key]
    codes = _generate(bundle, io, cond, run["args"])
    assert list(codes.shape) == run["output"]["shape"]
    assert torch.equal(codes, io[key])


def test_stereo_generation_and_decode(golden):
    bundle, io, cond = _setup(golden, "stereo")
    codes = _generate(bundle, io, cond, golden_meta(golden, "stereo")["generate_runs"]["gen_text"]["args"])
    assert torch.equal(codes, io["gen_text"])
    codec = InterleaveStereoCompressionModel(EnCodec.from_pretrained(golden / "encodec" / "compression_state_dict.bin"))
    with torch.inference_mode():
        torch.testing.assert_close(codec.decode(codes), io["decoded_stereo"], atol=AUDIO_ATOL, rtol=0)
