"""The oscillator codec (codec/oscillator.py): shapes, tuning, exact windowed decoding, save/load, streaming."""

from __future__ import annotations

import math

import pytest
import torch

from test_streaming import _stream_decode
from wavecraft.codec import CodecConfig, EnCodec
from wavecraft.codec.oscillator import oscillator_frequencies, semitone_band_matrix
from wavecraft.metrics.features import chroma_profile
from wavecraft.models.streaming import streaming_decoder


def _codec(**overrides) -> EnCodec:
    torch.manual_seed(0)
    cfg = CodecConfig(**{"architecture": "oscillator", "dimension": 16, "bins": 32, "n_q": 2,
                         "oscillator_hidden": 32, "oscillator_layers": 2, "oscillator_noise_bands": 4, **overrides})
    codec = EnCodec(cfg).eval()
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer._codebook.embed.normal_()
    return codec


def test_oscillators_are_tempered_semitones_below_nyquist():
    freqs = oscillator_frequencies(32000)
    assert freqs[0] == pytest.approx(32.703, abs=1e-3)  # C1
    assert float(freqs[-1]) < 16000 < float(freqs[-1]) * 2 ** (1 / 12)
    assert torch.allclose(freqs[1:] / freqs[:-1], torch.full_like(freqs[1:], 2 ** (1 / 12)))
    assert 440.0 in freqs.tolist()
    bands = semitone_band_matrix(freqs, 32000, 4096)
    assert (bands.sum(1) >= 1).all()  # every semitone reads at least one bin


def test_shapes_and_training_pass():
    codec = _codec()
    wav = 0.1 * torch.randn(2, 1, 6400 + 100)
    codes, scale = codec.encode(wav)
    assert codes.shape == (2, 2, 11) and scale is None and codec.frame_rate == 50
    assert codec.decode(codes).shape == (2, 1, 11 * 640)
    codec.train()
    result = codec(wav)
    assert result.x.shape == wav.shape
    result.x.pow(2).mean().backward()
    assert all(p.grad is not None for p in codec.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in codec.encoder.parameters())


def test_decoder_renders_the_pitch_of_the_oscillator_it_selects():
    """Pitch is structural: gains that select the A4 oscillator (and, softer, its octave) give pitch class A, and a
    window decoded from a later frame continues the same waveform (phases follow the absolute sample index)."""
    codec = _codec()
    decoder = codec.decoder
    a4 = int((decoder.freqs == 440.0).nonzero())
    with torch.no_grad():
        out = decoder.stack["out"]
        out.weight.zero_()
        out.bias.fill_(-30.0)
        out.bias[a4] = 5.0 + math.log(math.e - 1)  # softplus(b - 5) = 1
        out.bias[a4 + 12] = 5.0 + math.log(math.e**0.5 - 1)  # its octave at half the amplitude
        z = torch.randn(1, 16, 100)
        wav = decoder(z)
        later = decoder(z[..., 40:], first_frame=40)
    assert int(chroma_profile(wav[0], 32000).argmax()) == 9
    assert torch.allclose(later, wav[..., 40 * 640:], atol=1e-5)
    spectrum = torch.fft.rfft(wav[0, 0]).abs()
    assert float(spectrum.argmax()) * 32000 / wav.shape[-1] == pytest.approx(440.0, abs=1.0)


def test_noise_bank_is_fixed_and_unit_rms():
    decoder = _codec().decoder
    a, b = decoder.noise, _codec(oscillator_hidden=16).decoder.noise
    assert torch.equal(a, b) and decoder.noise_loop == 32000
    loop = a[:, :decoder.noise_loop]
    assert loop.shape == (4, 32000) and torch.allclose(loop.pow(2).mean(1), torch.ones(4), atol=1e-4)
    # The buffer continues the loop, so that a block starting anywhere in it is one slice.
    assert torch.equal(a[:, decoder.noise_loop:], loop.repeat(1, 2)[:, :a.shape[1] - decoder.noise_loop])


def test_save_and_load_roundtrip(tmp_path):
    codec = _codec()
    codec.save_pretrained(tmp_path / "osc")
    loaded = EnCodec.from_pretrained(tmp_path / "osc")
    assert loaded.cfg == codec.cfg
    codes = torch.randint(0, 32, (1, 2, 20))
    with torch.inference_mode():
        assert torch.equal(loaded.decode(codes), codec.decode(codes))


@pytest.mark.parametrize("chunks", [[1], [3, 7, 2], [40]])
def test_streaming_decoding_equals_one_shot(chunks):
    codec = _codec()
    codes = torch.randint(0, 32, (2, 2, 45))
    with torch.inference_mode():
        ref = codec.decode(codes)
    decoder = streaming_decoder(codec, codes.shape[-1])
    assert decoder.lookahead == codec.decoder.context_frames == 3 + 3 * 2 + 1
    out = _stream_decode(decoder, codes, chunks)
    assert out.shape == ref.shape
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize("overrides", [{"channels": 2}, {"causal": True}, {"renormalize": True},
                                       {"architecture": "wavenet"}])
def test_unsupported_settings_are_refused(overrides):
    with pytest.raises(ValueError):
        CodecConfig(**{"architecture": "oscillator", **overrides})
