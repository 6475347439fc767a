"""Parity with transformers' MusicgenForConditionalGeneration (random weights, shrunk config), mono and stereo.

transformers masks padded text positions in cross-attention (AudioCraft does not): a checkpoint in the
transformers layout is run with the mask, so batched prompts of different lengths match it exactly.
Tolerances: logits 1e-4 absolute (the two sinusoid formulas differ by float rounding); codes exact; audio 1e-5.
"""

from __future__ import annotations

import pytest
import torch

from textenc import tiny_hf_sub_configs, tiny_t5

transformers = pytest.importorskip("transformers")

from wavecraft import MusicGen  # noqa: E402
from wavecraft.checkpoints.lm import load_lm_bundle  # noqa: E402

TEXTS = ["slow piano waltz", "upbeat rock with drums and bass", "calm jazz"]


def _hf_model(tmp_path, channels: int):
    tokenizer, _ = tiny_t5()
    torch.manual_seed(channels)
    text, audio = tiny_hf_sub_configs()
    n_q = 4 * channels
    decoder = transformers.MusicgenDecoderConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, ffn_dim=128, num_codebooks=n_q,
                                                 audio_channels=channels, pad_token_id=64, bos_token_id=64)
    config = transformers.MusicgenConfig(text_encoder=text, audio_encoder=audio,
                                         decoder=decoder.to_dict())
    model = transformers.MusicgenForConditionalGeneration(config).eval()
    for key in ("pad_token_id", "decoder_start_token_id", "bos_token_id"):
        setattr(model.generation_config, key, 64)
    with torch.no_grad():  # larger weights than the default init, so greedy choices have clear margins
        for _, p in model.decoder.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
        for name, b in model.audio_encoder.named_buffers():
            if name.endswith("codebook.embed"):
                b.normal_()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return model, tokenizer


def _hf_generate(model, tokenizer, texts, frames):
    captured = {}
    decode = model.audio_encoder.decode

    def spy(codes, *args, **kwargs):
        captured.setdefault("codes", []).append(codes)
        return decode(codes, *args, **kwargs)

    model.audio_encoder.decode = spy
    inputs = tokenizer(texts, return_tensors="pt", padding=True)
    decoder = model.decoder.config
    delay = decoder.num_codebooks // decoder.audio_channels - 1  # transformers counts new tokens in pattern steps
    with torch.inference_mode():
        audio = model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=frames + delay)
    codes = captured["codes"][0][0]  # [B, K, F] (stereo: left half of the interleaved codebooks)
    if len(captured["codes"]) == 2:
        left, right = captured["codes"][0][0], captured["codes"][1][0]
        codes = torch.stack([left, right], dim=2).flatten(1, 2)
    return audio, codes


@pytest.mark.parametrize("channels", [1, 2])
def test_teacher_forced_logits(tmp_path, channels):
    hf, tokenizer = _hf_model(tmp_path, channels)
    bundle = load_lm_bundle(tmp_path)
    inputs = tokenizer(TEXTS, return_tensors="pt", padding=True)
    n_q = 4 * channels
    seq = torch.randint(0, 64, (len(TEXTS), n_q, 10))
    with torch.inference_mode():
        expected = hf(**inputs, decoder_input_ids=seq.reshape(-1, 10)).logits.reshape(len(TEXTS), n_q, 10, -1)
        emb, mask = bundle.conditioners["description"](TEXTS)
        logits = bundle.lm(seq, cross_src=emb, cross_mask=mask)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("channels", [1, 2])
def test_greedy_generation_matches(tmp_path, channels):
    hf, tokenizer = _hf_model(tmp_path, channels)
    frames = 9
    expected_audio, expected_codes = _hf_generate(hf, tokenizer, TEXTS, frames)
    model = MusicGen.get_pretrained(tmp_path, device="cpu")
    model.set_generation_params(use_sampling=False, duration=frames / model.frame_rate, cfg_coef=3.0)
    wav, codes = model.generate(TEXTS, return_tokens=True)
    assert torch.equal(codes, expected_codes)
    assert wav.shape == expected_audio.shape and model.audio_channels == channels
    torch.testing.assert_close(wav, expected_audio, atol=1e-5, rtol=0)
