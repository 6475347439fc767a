"""Parity with transformers' EncodecModel on random weights at the 24/32/48 kHz configurations (shrunk widths).

Tolerance: codes identical at every bandwidth; decoded audio within 1e-5 absolute (observed: bit-identical).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")

from wavecraft.codec import EnCodec  # noqa: E402

CONFIGS = {
    "24khz": dict(num_filters=4, hidden_size=16, codebook_size=64),
    "32khz": dict(sampling_rate=32000, upsampling_ratios=[8, 5, 4, 4], target_bandwidths=[2.2], num_filters=4,
                  hidden_size=16, codebook_size=2048, use_causal_conv=False, use_conv_shortcut=False),
    "48khz": dict(sampling_rate=48000, audio_channels=2, normalize=True, chunk_length_s=1.0, overlap=0.01,
                  target_bandwidths=[3.0, 6.0, 12.0, 24.0], norm_type="time_group_norm", use_causal_conv=False,
                  num_filters=4, hidden_size=16, codebook_size=1024),
}


def _random_hf_model(**kwargs):
    config = transformers.EncodecConfig(**kwargs)
    model = transformers.EncodecModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "original0" in name or "weight_g" in name:
                p.mul_(torch.rand_like(p) + 0.5)  # so that weight_g != ||weight_v||
            elif name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.05)
        for name, b in model.named_buffers():
            if name.endswith("codebook.embed"):
                b.normal_()
    return model


def _hf_codes(out):
    codes = torch.cat(list(out.audio_codes), dim=-1)  # [chunks, B, K, F] -> [B, K, chunks * F]
    pad = out.last_frame_pad_length or 0
    return codes[..., : codes.shape[-1] - pad]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_every_bandwidth(name, tmp_path):
    hf = _random_hf_model(**CONFIGS[name])
    hf.save_pretrained(tmp_path)
    ours = EnCodec.from_pretrained(tmp_path)
    cfg = hf.config
    assert (ours.sample_rate, ours.channels, ours.frame_rate) == (cfg.sampling_rate, cfg.audio_channels,
                                                                  cfg.frame_rate)
    wav = torch.randn(2, cfg.audio_channels, int(cfg.sampling_rate * 2.3) + 17) * 0.1
    for bandwidth in cfg.target_bandwidths:
        with torch.inference_mode():
            out = hf.encode(wav, bandwidth=bandwidth)
            expected_audio = hf.decode(out.audio_codes, out.audio_scales,
                                       last_frame_pad_length=out.last_frame_pad_length).audio_values
            ours.set_bandwidth(bandwidth)
            codes, scale = ours.encode(wav)
            audio = ours.decode(codes, scale)
        assert torch.equal(codes, _hf_codes(out)), f"codes differ at {bandwidth} kbps"
        assert (scale is None) == (out.audio_scales[0] is None)
        assert audio.shape == expected_audio.shape
        torch.testing.assert_close(audio, expected_audio, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layout", ["legacy_weight_norm", "parametrizations", "pytorch_model_bin"])
def test_key_layouts_load(layout, tmp_path):
    """Hub files use legacy ``weight_g/weight_v``; newer saves use ``parametrizations.weight.original0/1``."""
    hf = _random_hf_model(**CONFIGS["32khz"])
    hf.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    if layout == "legacy_weight_norm":
        state = {k.replace("parametrizations.weight.original0", "weight_g")
                  .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    else:
        state = {k.replace("weight_g", "parametrizations.weight.original0")
                  .replace("weight_v", "parametrizations.weight.original1"): v for k, v in state.items()}
    (tmp_path / "model.safetensors").unlink()
    if layout == "pytorch_model_bin":
        torch.save(state, tmp_path / "pytorch_model.bin")
    else:
        save_file(state, str(tmp_path / "model.safetensors"))
    ours = EnCodec.from_pretrained(tmp_path)
    wav = torch.randn(1, 1, 9000) * 0.1
    with torch.inference_mode():
        expected = hf.encode(wav).audio_codes[0]
        assert torch.equal(ours.encode(wav)[0], expected)


def test_musicgen_composite_layout(tmp_path):
    """The codec inside a transformers MusicGen checkpoint (``audio_encoder.*`` keys) loads on its own."""
    hf = _random_hf_model(**CONFIGS["32khz"])
    codec_dir = tmp_path / "codec"
    hf.save_pretrained(codec_dir)
    state = {f"audio_encoder.{k}": v for k, v in load_file(str(codec_dir / "model.safetensors")).items()}
    state["decoder.lm_heads.0.weight"] = torch.zeros(4, 4)
    repo = tmp_path / "musicgen"
    repo.mkdir()
    save_file(state, str(repo / "model.safetensors"))
    audio_cfg = json.loads((codec_dir / "config.json").read_text())
    (repo / "config.json").write_text(json.dumps({"model_type": "musicgen", "audio_encoder": audio_cfg}))
    ours = EnCodec.from_pretrained(repo)
    wav = torch.randn(1, 1, 9000) * 0.1
    with torch.inference_mode():
        assert torch.equal(ours.encode(wav)[0], hf.encode(wav).audio_codes[0])
