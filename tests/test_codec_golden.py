"""Parity with AudioCraft's own EnCodec (golden ``encodec/``, written by the reference implementation).

Sizes come from the set's ``meta.json`` and tensor shapes, never from this file: other sets with other sizes use
the same tests (``WAVECRAFT_GOLDEN``). Tolerance: the README's suggested acceptance for codec outputs (observed
float64-vs-float32 noise ~1e-7); codes exact.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from conftest import golden_meta
from wavecraft.checkpoints.safe_load import load_torch_file
from wavecraft.codec import CompressionModel, EnCodec, InterleaveStereoCompressionModel

AUDIO_ATOL = 1e-4  # README: EnCodec decoded/latent/encoder_out within 1e-4 absolute


def _load(golden):
    model = EnCodec.from_pretrained(golden / "encodec" / "compression_state_dict.bin")
    io = load_file(str(golden / "encodec" / "io.safetensors"))
    return model, io


def test_checkpoint_loads_with_weights_only(golden):
    package = load_torch_file(golden / "encodec" / "compression_state_dict.bin")
    assert isinstance(package["xp.cfg"], str) and "best_state" in package


def test_config_read_from_xp_cfg(golden):
    model, io = _load(golden)
    cfg, expected = model.cfg, golden_meta(golden, "encodec")["config"]
    ours = {
        "sample_rate": cfg.sample_rate, "channels": cfg.channels, "ratios": list(cfg.ratios),
        "hop_length": cfg.hop_length, "frame_rate": model.frame_rate, "n_filters": cfg.n_filters,
        "dimension": cfg.dimension, "n_residual_layers": cfg.n_residual_layers, "lstm_layers": cfg.lstm_layers,
        "pad_mode": cfg.pad_mode, "true_skip": cfg.true_skip, "compress": cfg.compress, "norm": cfg.norm,
        "causal": cfg.causal, "renormalize": cfg.renormalize, "kernel_size": cfg.kernel_size,
        "last_kernel_size": cfg.last_kernel_size, "residual_kernel_size": cfg.residual_kernel_size,
        "dilation_base": cfg.dilation_base, "rvq_n_q": model.num_codebooks, "rvq_bins": model.cardinality}
    assert ours == {key: expected[key] for key in ours}
    assert cfg.bins == model.cardinality and cfg.n_q == model.num_codebooks
    assert io["codes"].shape[1] == model.num_codebooks and io["encoder_out"].shape[1] == cfg.dimension


def test_encoder_codes_latent_decode_match(golden):
    model, io = _load(golden)
    with torch.inference_mode():
        torch.testing.assert_close(model.encoder(io["input_wav"]), io["encoder_out"], atol=AUDIO_ATOL, rtol=0)
        codes, scale = model.encode(io["input_wav"])
        assert scale is None
        assert torch.equal(codes, io["codes"])
        torch.testing.assert_close(model.decode_latent(io["codes"]), io["latent"], atol=AUDIO_ATOL, rtol=0)
        decoded = model.decode(io["codes"])
    assert decoded.shape == io["decoded"].shape  # frames x hop, not cropped to the input length
    assert decoded.shape[-1] == io["codes"].shape[-1] * model.cfg.hop_length
    torch.testing.assert_close(decoded, io["decoded"], atol=AUDIO_ATOL, rtol=0)


def test_get_pretrained_entry_point(golden):
    model = CompressionModel.get_pretrained(golden / "encodec" / "compression_state_dict.bin")
    assert isinstance(model, EnCodec) and not model.training


def test_stereo_wrapper_matches_golden_stereo_decode(golden):
    """The stereo golden set decodes L/R codebooks (even / odd ones) through the mono codec."""
    model, _ = _load(golden)
    io = load_file(str(golden / "stereo" / "io.safetensors"))
    interleave = golden_meta(golden, "stereo")["config"]["interleave_stereo_codebooks"]
    assert interleave["use"] and not interleave["per_timestep"], "only per-codebook interleaving is implemented"
    stereo = InterleaveStereoCompressionModel(model)
    left, right = stereo.split_codes(io["gen_text"])
    assert torch.equal(left, io["left_codes"]) and torch.equal(right, io["right_codes"])
    with torch.inference_mode():
        wav = stereo.decode(io["gen_text"])
    torch.testing.assert_close(wav, io["decoded_stereo"], atol=AUDIO_ATOL, rtol=0)


def test_prompt_codes_of_musicgen_set(golden):
    model, _ = _load(golden)
    io = load_file(str(golden / "musicgen" / "io.safetensors"))
    with torch.inference_mode():
        codes, _ = model.encode(io["cont_prompt_wav"])
    assert torch.equal(codes, io["cont_prompt_codes"])
