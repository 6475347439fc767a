"""Parity with transformers' MusicgenMelodyForConditionalGeneration (random weights, shrunk config).

transformers' feature extractor needs torchaudio, which has no CPU build here: the chroma given to it is ours
(itself proven equal to AudioCraft's in test_melody_golden). Like AudioCraft, transformers does not mask padded
text positions inside the prefix. Tolerances: logits 1e-4; codes exact.
"""

from __future__ import annotations

import pytest
import torch

from textenc import tiny_hf_sub_configs, tiny_t5

transformers = pytest.importorskip("transformers")

from wavecraft import MusicGen  # noqa: E402
from wavecraft.checkpoints.lm import load_lm_bundle  # noqa: E402

TEXTS = ["slow piano waltz", "upbeat rock with drums and bass"]


def _hf_melody(tmp_path, channels: int = 1):
    tokenizer, _ = tiny_t5()
    torch.manual_seed(0)
    text, audio = tiny_hf_sub_configs()
    decoder = transformers.MusicgenMelodyDecoderConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, ffn_dim=128, num_codebooks=4 * channels,
                                                       audio_channels=channels, pad_token_id=64, bos_token_id=64)
    config = transformers.MusicgenMelodyConfig(text_encoder=text, audio_encoder=audio,
                                               decoder=decoder.to_dict(), num_chroma=12, chroma_length=40)
    model = transformers.MusicgenMelodyForConditionalGeneration(config).eval()
    for key in ("pad_token_id", "decoder_start_token_id", "bos_token_id"):
        setattr(model.generation_config, key, 64)
    with torch.no_grad():
        for _, p in model.decoder.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
        model.audio_enc_to_dec_proj.weight.normal_(0, 1.0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return model, tokenizer


def _melodies():
    t = torch.arange(64000) / 32000
    return [(0.4 * torch.sin(2 * torch.pi * 440 * t))[None], (0.4 * torch.sin(2 * torch.pi * 330 * t[:40000]))[None]]


def _chroma(bundle, melodies):
    wav = torch.stack([torch.nn.functional.pad(m, (0, 64000 - m.shape[-1])) for m in melodies])
    return bundle.conditioners["self_wav"].chroma(wav)  # [B, frames, 12], untiled (transformers tiles)


def _hf_codes(model, inputs, frames, **kwargs):
    captured = []
    decode = model.audio_encoder.decode

    def spy(codes, *args, **kw):
        captured.append(codes[0])
        return decode(codes, *args, **kw)

    model.audio_encoder.decode = spy
    with torch.inference_mode():
        audio = model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=frames + 3, **kwargs)
    model.audio_encoder.decode = decode
    if len(captured) == 2:  # stereo: left and right halves decoded separately; interleave them back
        return audio, torch.stack(captured, dim=2).flatten(1, 2)
    return audio, captured[0]


def test_logits_with_melody(tmp_path):
    hf, tokenizer = _hf_melody(tmp_path)
    bundle = load_lm_bundle(tmp_path)
    assert bundle.conditioners["self_wav"].chroma_len == 40
    inputs = tokenizer(TEXTS, return_tensors="pt", padding=True)
    seq = torch.randint(0, 64, (2, 4, 8))
    with torch.inference_mode():
        chroma = _chroma(bundle, _melodies())
        expected = hf(**inputs, input_features=chroma, decoder_input_ids=seq.reshape(-1, 8)).logits[:, -8:]
        desc = bundle.conditioners["description"](TEXTS)
        wav = bundle.conditioners["self_wav"].project(bundle.conditioners["self_wav"].extract(
            torch.stack([torch.nn.functional.pad(m, (0, 64000 - m.shape[-1])) for m in _melodies()])))
        prefix, _, _, _ = bundle.fuser.fuse({"description": desc, "self_wav": wav})
        logits = bundle.lm(seq, prefix=prefix)
    torch.testing.assert_close(logits, expected.reshape(2, 4, 8, -1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("with_melody, channels", [(True, 1), (False, 1), (True, 2)])
def test_greedy_generation(tmp_path, with_melody, channels):
    hf, tokenizer = _hf_melody(tmp_path, channels)
    model = MusicGen.get_pretrained(tmp_path, device="cpu")
    frames = 8
    model.set_generation_params(use_sampling=False, duration=frames / 50)
    inputs = tokenizer(TEXTS, return_tensors="pt", padding=True)
    if with_melody:
        features = _chroma(model.bundle, _melodies())
        expected_audio, expected = _hf_codes(hf, inputs, frames, input_features=features)
        wav, codes = model.generate_with_chroma(TEXTS, _melodies(), 32000, return_tokens=True)
    else:
        expected_audio, expected = _hf_codes(hf, inputs, frames)
        wav, codes = model.generate(TEXTS, return_tokens=True)
    assert torch.equal(codes, expected) and model.audio_channels == channels
    torch.testing.assert_close(wav, expected_audio, atol=1e-5, rtol=0)
