"""Parity with AudioCraft's own EnCodec (../shared/golden/encodec, written by the reference implementation)."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from wavecraft.checkpoints.safe_load import load_torch_file
from wavecraft.codec import CompressionModel, EnCodec, InterleaveStereoCompressionModel


def _load(golden):
    model = EnCodec.from_pretrained(golden / "encodec" / "compression_state_dict.bin")
    io = load_file(str(golden / "encodec" / "io.safetensors"))
    return model, io


def test_checkpoint_loads_with_weights_only(golden):
    package = load_torch_file(golden / "encodec" / "compression_state_dict.bin")
    assert isinstance(package["xp.cfg"], str) and "best_state" in package


def test_config_read_from_xp_cfg(golden):
    model, _ = _load(golden)
    cfg = model.cfg
    assert (cfg.sample_rate, cfg.channels, cfg.ratios, cfg.pad_mode) == (32000, 1, (8, 5, 4, 4), "constant")
    assert (cfg.n_filters, cfg.dimension, cfg.n_q, cfg.bins, cfg.lstm_layers) == (8, 32, 4, 128, 2)
    assert (model.frame_rate, model.cardinality, model.num_codebooks) == (50, 128, 4)


def test_encoder_codes_latent_decode_match(golden):
    model, io = _load(golden)
    with torch.inference_mode():
        torch.testing.assert_close(model.encoder(io["input_wav"]), io["encoder_out"], atol=1e-4, rtol=0)
        codes, scale = model.encode(io["input_wav"])
        assert scale is None
        assert torch.equal(codes, io["codes"])
        torch.testing.assert_close(model.decode_latent(io["codes"]), io["latent"], atol=1e-4, rtol=0)
        decoded = model.decode(io["codes"])
    assert decoded.shape == io["decoded"].shape  # frames x hop, not cropped to the input length
    torch.testing.assert_close(decoded, io["decoded"], atol=1e-4, rtol=0)


def test_get_pretrained_entry_point(golden):
    model = CompressionModel.get_pretrained(golden / "encodec" / "compression_state_dict.bin")
    assert isinstance(model, EnCodec) and not model.training


def test_stereo_wrapper_matches_golden_stereo_decode(golden):
    """The stereo golden set decodes L/R codebooks (0,2,4,6 / 1,3,5,7) through the mono codec."""
    model, _ = _load(golden)
    io = load_file(str(golden / "stereo" / "io.safetensors"))
    stereo = InterleaveStereoCompressionModel(model)
    left, right = stereo.split_codes(io["gen_text"])
    assert torch.equal(left, io["left_codes"]) and torch.equal(right, io["right_codes"])
    with torch.inference_mode():
        wav = stereo.decode(io["gen_text"])
    torch.testing.assert_close(wav, io["decoded_stereo"], atol=1e-4, rtol=0)


def test_prompt_codes_of_musicgen_set(golden):
    model, _ = _load(golden)
    io = load_file(str(golden / "musicgen" / "io.safetensors"))
    with torch.inference_mode():
        codes, _ = model.encode(io["cont_prompt_wav"])
    assert torch.equal(codes, io["cont_prompt_codes"])
