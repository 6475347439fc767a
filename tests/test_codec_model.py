"""EnCodec building blocks: padding rules, bitrate selection, input validation, RVQ training state, stereo."""

from __future__ import annotations

import pytest
import torch

from wavecraft.codec import CodecConfig, EnCodec, InterleaveStereoCompressionModel
from wavecraft.codec.conv import StreamableConv1d, pad1d
from wavecraft.codec.quantization import ResidualVectorQuantizer
from wavecraft.errors import InvalidAudioError

TINY = CodecConfig(n_filters=2, dimension=8, ratios=(4, 4), lstm_layers=1, n_q=4, bins=16)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 15, 16, 17, 100])
def test_conv_output_length_is_ceil(causal, length):
    conv = StreamableConv1d(1, 2, kernel_size=8, stride=4, causal=causal, pad_mode="reflect")
    assert conv(torch.randn(1, 1, length)).shape[-1] == -(-length // 4)


def test_reflect_pad_of_short_input():
    x = torch.arange(3.0)[None, None]
    out = pad1d(x, (4, 4), mode="reflect")
    assert out.shape[-1] == 11 and torch.equal(out[..., 4:7], x)


@pytest.mark.parametrize("causal", [False, True])
def test_encode_decode_lengths(causal):
    model = EnCodec(TINY.replace(causal=causal)).eval()
    wav = torch.randn(2, 1, 1000)
    with torch.inference_mode():
        codes, scale = model.encode(wav)
        assert codes.shape == (2, 4, 63) and codes.dtype == torch.long and scale is None
        assert model.decode(codes).shape == (2, 1, 63 * 16)
        assert model.decode_latent(codes).shape == (2, 8, 63)
        assert model(wav).x.shape == wav.shape  # forward crops to the input length


def test_causal_encoder_ignores_the_future():
    model = EnCodec(TINY.replace(causal=True, lstm_layers=0)).eval()
    wav = torch.randn(1, 1, 640)
    changed = wav.clone()
    changed[..., 320:] = torch.randn(1, 1, 320)
    with torch.inference_mode():
        a, b = model.encoder(wav), model.encoder(changed)
    assert torch.equal(a[..., :19], b[..., :19]) and not torch.equal(a, b)


def test_bitrate_selection():
    model = EnCodec(TINY)
    assert model.bandwidth == pytest.approx(4 * 4 * 2000 / 1000)  # 4 codebooks x 4 bits x 2000 frames/s
    assert model.set_bandwidth(20.0) == 2 and model.num_codebooks == 2  # floor(20 / 8)
    with torch.inference_mode():
        assert model.encode(torch.randn(1, 1, 160))[0].shape[1] == 2
    with pytest.raises(InvalidAudioError):
        model.set_bandwidth(100.0)
    with pytest.raises(ValueError):
        model.set_num_codebooks(0)


def test_renormalize_returns_scale_and_restores_level():
    model = EnCodec(TINY.replace(renormalize=True)).eval()
    wav = torch.randn(2, 1, 800)
    wav[1] *= 10
    with torch.inference_mode():
        codes, scale = model.encode(wav)
        assert scale.shape == (2, 1)
        torch.testing.assert_close(scale[:, 0], wav.pow(2).mean(dim=(1, 2)).sqrt(), rtol=1e-5, atol=1e-7)
        a, b = model.decode(codes, scale), model.decode(codes)
    torch.testing.assert_close(a, b * scale[:, :, None])


@pytest.mark.parametrize(
    "wav, match",
    [
        (torch.randn(1, 800), "shape"),
        (torch.randn(1, 2, 800), "channel"),
        (torch.zeros(1, 1, 0), "no samples"),
        (torch.full((1, 1, 800), float("nan")), "NaN"),
        (torch.full((1, 1, 800), float("inf")), "NaN or infinite"),
        (torch.ones(1, 1, 800, dtype=torch.long), "floating"),
    ],
)
def test_bad_audio_gives_one_line_error(wav, match):
    with pytest.raises(InvalidAudioError, match=match) as excinfo:
        EnCodec(TINY).encode(wav)
    assert "\n" not in str(excinfo.value)


def test_bad_codes_rejected():
    model = EnCodec(TINY)
    with pytest.raises(InvalidAudioError, match="lie in"):
        model.decode(torch.full((1, 4, 3), 16))
    with pytest.raises(InvalidAudioError, match="codebooks"):
        model.decode(torch.zeros(1, 5, 3, dtype=torch.long))


def test_stereo_interleaving_order():
    mono = EnCodec(TINY).eval()
    stereo = InterleaveStereoCompressionModel(mono)
    wav = torch.randn(1, 2, 640)
    with torch.inference_mode():
        codes, _ = stereo.encode(wav)
        left, _ = mono.encode(wav[:, :1])
        right, _ = mono.encode(wav[:, 1:])
        assert codes.shape == (1, 8, 40) and stereo.num_codebooks == 8
        assert torch.equal(codes[:, 0::2], left) and torch.equal(codes[:, 1::2], right)
        out = stereo.decode(codes)
    assert out.shape == (1, 2, 640)
    torch.testing.assert_close(out[:, :1], mono.decode(left))


def test_rvq_training_kmeans_init_ema_and_dead_codes():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=4, n_q=2, bins=8, kmeans_iters=5, threshold_ema_dead_code=0.5).train()
    codebook = rvq.layers[0]._codebook
    assert codebook.inited.item() == 0
    x = torch.randn(3, 4, 50, requires_grad=True)
    result = rvq(x, frame_rate=50)
    assert codebook.inited.item() == 1 and codebook.embed.abs().sum() > 0  # k-means ran on the first batch
    assert result.codes.shape == (3, 2, 50) and result.penalty > 0
    assert result.bandwidth.item() == pytest.approx(2 * 3 * 50 / 1000)
    result.x.sum().backward()  # straight-through: d(out)/d(x) = 1
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    # a code that is never used decays below the threshold and gets replaced by a batch vector
    codebook.cluster_size[3] = 0.0
    before = codebook.embed[3].clone()
    rvq(torch.randn(3, 4, 50), frame_rate=50)
    assert not torch.equal(codebook.embed[3], before)
    # EMA statistics are persistent buffers (saved with the model)
    assert {"inited", "cluster_size", "embed", "embed_avg"} <= set(dict(codebook.named_buffers()))


def test_quantizer_reduces_error_with_more_codebooks():
    torch.manual_seed(0)
    rvq = ResidualVectorQuantizer(dim=4, n_q=4, bins=16, kmeans_iters=10).train()
    x = torch.randn(4, 4, 200)
    for _ in range(5):
        rvq(x, frame_rate=50)
    rvq.eval()
    errors = []
    for n in (1, 2, 4):
        rvq.set_num_codebooks(n)
        errors.append((rvq.decode(rvq.encode(x)) - x).pow(2).mean().item())
    assert errors[0] > errors[1] > errors[2]
