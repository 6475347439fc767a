"""Streaming generation: same tokens as generate(), chunked decoding equal to one-shot decoding, early first chunk."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import golden_repo, seconds
from textenc import tiny_t5
from wavecraft import MusicGen
from wavecraft.cli import main
from wavecraft.codec import CodecConfig, EnCodec
from wavecraft.codec.compression import InterleaveStereoCompressionModel
from wavecraft.errors import WavecraftError
from wavecraft.models.streaming import StreamingDecoder, _Decoders, conv_context

# Chunked decoding runs the same layers on windows; the crops keep only samples whose receptive field lies in the
# window, so the only differences are float rounding (measured: 0.0 on the golden codec).
TOLERANCE = 1e-5


def _codec(**overrides) -> EnCodec:
    torch.manual_seed(0)
    cfg = CodecConfig(**{"n_filters": 4, "dimension": 16, "bins": 32, "n_q": 2, **overrides})
    codec = EnCodec(cfg).eval()
    with torch.no_grad():
        for layer in codec.quantizer.layers:
            layer._codebook.embed.normal_()
    return codec


def _stream_decode(decoder, codes: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    """Feed codes frame by frame; decode whenever ``chunks[i]`` more frames of audio are ready."""
    total = codes.shape[-1]
    out, i = [], 0
    for complete in range(1, total + 1):
        while True:
            end = min(total, decoder.emitted + chunks[i % len(chunks)])
            if decoder.ready(complete) < end or decoder.emitted == total:
                break
            out.append(decoder.decode(codes[..., :complete], end))
            i += 1
    return torch.cat(out, dim=-1)


@pytest.mark.parametrize("overrides, chunks", [
    ({}, [1]),  # the MusicGen 32 kHz layout: kernel 7 convs, 2-layer LSTM; one frame at a time
    ({"sample_rate": 16000, "ratios": (8, 5, 4, 2), "lstm_layers": 1, "n_residual_layers": 2, "pad_mode": "reflect"},
     [3, 7, 2]),
    ({"causal": True, "lstm_layers": 0, "true_skip": False}, [5]),
])
def test_chunked_decoding_equals_one_shot(overrides, chunks):
    codec = _codec(**overrides)
    codes = torch.randint(0, 32, (2, 2, 17))
    with torch.inference_mode():
        ref = codec.decode(codes)
    out = _stream_decode(StreamingDecoder(codec, codes.shape[-1]), codes, chunks)
    assert out.shape == ref.shape
    assert (out - ref).abs().max().item() <= TOLERANCE * max(1.0, ref.abs().max().item())


def test_receptive_field_of_the_32khz_decoder():
    decoder = StreamingDecoder(_codec(), 10)
    # First conv: kernel 7 -> 3 frames each side; upsampling stack: its first conv output reaches 1 frame each way.
    assert decoder.head_context == (3, 3) and decoder.tail_context == (1, 1) and decoder.lookahead == 4
    layers = list(_codec(lstm_layers=0).decoder.model)
    left, right = conv_context(torch.nn.Sequential(*layers[1:]), 640)
    assert (left, right) == (1, 1)


def test_receptive_field_is_not_underestimated():
    """Perturbing one latent frame changes no sample outside the frames the computed context allows."""
    codec = _codec(lstm_layers=0)  # without the LSTM the decoder is finite both ways
    decoder = StreamingDecoder(codec, 1)
    (hl, hr), (tl, tr) = decoder.head_context, decoder.tail_context
    torch.manual_seed(1)
    z = torch.randn(1, 16, 40)
    with torch.inference_mode():
        base = codec.decoder(z)
        z[..., 20] += 1.0
        changed = (codec.decoder(z) - base).abs().view(40, -1).amax(dim=1) > 0
    frames = changed.nonzero().flatten()
    assert frames.min() >= 20 - hr - tr and frames.max() <= 20 + hl + tl


def test_stereo_decoders():
    codec = InterleaveStereoCompressionModel(_codec())
    codes = torch.randint(0, 32, (1, 4, 12))
    with torch.inference_mode():
        ref = codec.decode(codes)
    out = _stream_decode(_Decoders(codec, 12), codes, [4])
    assert out.shape == ref.shape == (1, 2, 12 * 640) and (out - ref).abs().max() <= TOLERANCE


@pytest.fixture(scope="module")
def repo(golden, tmp_path_factory):
    return golden_repo(golden, "musicgen", tmp_path_factory.mktemp("musicgen-stream"))


@pytest.fixture(scope="module")
def model(repo) -> MusicGen:
    model = MusicGen.get_pretrained(repo, device="cpu")
    model.bundle.conditioners["description"].set_encoder(*tiny_t5(model.bundle.conditioners["description"].output_proj.in_features))
    return model


def _sizes(model):
    """``(hop, channels, max delay, codec lookahead)`` of the model (its codec and delay pattern)."""
    hop = model.compression_model.hop_length
    lookahead = StreamingDecoder(model.compression_model, 1).lookahead
    return hop, model.audio_channels, max(model.lm.cfg.delays), lookahead


def _chunk_sizes(total: int, first: int, chunk: int) -> list[int]:
    sizes = [min(first, total)]
    while sum(sizes) < total:
        sizes.append(min(chunk, total - sum(sizes)))
    return sizes


def test_stream_matches_generate_and_starts_early(model):
    texts = ["slow piano waltz", "upbeat rock with drums"]
    frames, size, rate = 25, 5, model.frame_rate  # clip and chunk lengths in frames, whatever the frame rate
    hop, channels, delay, lookahead = _sizes(model)
    model.set_generation_params(duration=seconds(frames, rate), use_sampling=False)
    wav, tokens = model.generate(texts, return_tokens=True)

    steps_done: list[int] = []
    model.set_custom_progress_callback(lambda done, total: steps_done.append(done))
    stream = model.generate_stream(texts, chunk_seconds=size / rate)
    chunks, steps_at_chunk = [], []
    try:
        for chunk in stream:
            chunks.append(chunk)
            steps_at_chunk.append(steps_done[-1])
    finally:
        model.set_custom_progress_callback(None)
    total_steps = steps_done[-1]
    assert torch.equal(stream.tokens, tokens)
    assert [c.shape for c in chunks] == [(2, channels, n * hop) for n in _chunk_sizes(frames, size, size)]
    # The first 5 frames need frames up to 5 - 1 + lookahead (the codec's; 4 for the golden one), complete after
    # step (5 - 1 + lookahead) + 1 + delay of the 25 + delay steps (the delay pattern's lag; 3 there): 12 of 28.
    first_step = min(frames, size + lookahead) + delay
    assert steps_at_chunk[0] == stream.first_chunk_step == first_step < total_steps
    assert total_steps == stream.total_steps == frames + delay
    audio = torch.cat(chunks, dim=-1)
    one_shot = model.generate_audio(stream.tokens)
    assert torch.allclose(audio, one_shot, rtol=0, atol=TOLERANCE)
    assert torch.allclose(audio, wav, rtol=0, atol=TOLERANCE)

    # A shorter first chunk leaves sooner: frames [0, 2) need frames up to 1 + lookahead (5 for the golden codec),
    # complete after step 1 + lookahead + 1 + delay (9 there).
    first = 2
    stream = model.generate_stream(texts, chunk_seconds=size / rate, first_chunk_seconds=first / rate)
    chunks = list(stream)
    assert [c.shape[-1] for c in chunks] == [n * hop for n in _chunk_sizes(frames, first, size)]
    assert stream.first_chunk_step == min(frames, first + lookahead) + delay
    assert torch.allclose(torch.cat(chunks, dim=-1), wav, rtol=0, atol=TOLERANCE)


def test_stream_beyond_max_duration_matches_generate(model):
    """Past max_duration, streaming goes on window by window as generate() does: the same tokens, chunks that
    decode the clip as one piece, and audio that leaves while later windows are still being generated."""
    saved = model.max_duration
    window, stride, frames, rate = 15, 10, 35, model.frame_rate  # windows start at frames 0, 10, 20
    hop, channels, delay, _ = _sizes(model)
    model.max_duration = seconds(window, rate)
    steps_done: list[int] = []
    try:
        model.set_generation_params(duration=seconds(frames, rate), extend_stride=seconds(stride, rate),
                                    use_sampling=False)
        wav, tokens = model.generate(["calm jazz"], return_tokens=True)
        model.set_custom_progress_callback(lambda done, total: steps_done.append(done))
        stream = model.generate_stream(["calm jazz"], chunk_seconds=0.1)
        chunks, steps_at_chunk = [], []
        for chunk in stream:
            chunks.append(chunk)
            steps_at_chunk.append(len(steps_done))
    finally:
        model.max_duration = saved
        model.set_custom_progress_callback(None)
    assert tokens.shape == (1, model.lm.cfg.n_q, frames) and torch.equal(stream.tokens, tokens)
    # Windows at frames 0, 10, 20: 15 + delay steps, then 10 + delay steps each after the 5-frame prompt.
    first_window = window + delay
    assert stream.total_steps == len(steps_done) == first_window + 2 * (stride + delay)
    assert any(first_window < n < stream.total_steps for n in steps_at_chunk)
    audio = torch.cat(chunks, dim=-1)
    assert audio.shape == wav.shape == (1, channels, frames * hop)
    assert torch.allclose(audio, model.generate_audio(tokens), rtol=0, atol=TOLERANCE)
    assert torch.allclose(audio, wav, rtol=0, atol=TOLERANCE)


def test_stream_errors(model):
    model.set_generation_params(duration=model.max_duration + 1, extend_stride=None)
    model.extend_stride = None
    with pytest.raises(WavecraftError, match="extend_stride"):
        model.generate_stream(["calm jazz"])
    frames = 10
    hop, channels, _, _ = _sizes(model)
    model.set_generation_params(duration=seconds(frames, model.frame_rate))
    with pytest.raises(WavecraftError, match="chunk_seconds"):
        model.generate_stream(["calm jazz"], chunk_seconds=0)
    stream = model.generate_stream(["calm jazz"], chunk_seconds=2 * frames / model.frame_rate)
    assert next(stream).shape == (1, channels, frames * hop)  # a single chunk, shorter than chunk_seconds
    with pytest.raises(StopIteration):
        next(stream)
    assert stream.tokens.shape == (1, model.lm.cfg.n_q, frames)


@pytest.fixture(scope="module")
def t5_folder(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("t5")
    tokenizer, encoder = tiny_t5(model.bundle.conditioners["description"].output_proj.in_features)
    tokenizer.save_pretrained(folder)
    encoder.save_pretrained(folder)
    return str(folder)


def test_cli_stream_writes_file(model, repo, t5_folder, tmp_path, capsys):
    out = tmp_path / "live.wav"
    frames, rate = 10, model.frame_rate
    hop, channels, _, _ = _sizes(model)
    code = main(["generate", "calm jazz", "--model", str(repo), "--text-encoder", t5_folder, "--duration",
                 repr(seconds(frames, rate)), "--greedy", "--stream", "--quantize", "int8", "-o", str(out)])
    assert code == 0
    data, sr = sf.read(out, always_2d=True)
    assert sr == model.sample_rate and data.shape == (frames * hop, channels) and np.abs(data).max() > 0
    assert "first audio after" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.wav"]  # no temporary file left

    code = main(["generate", "calm jazz", "--model", str(repo), "--text-encoder", t5_folder, "--duration",
                 repr(0.5 / rate), "--stream", "-o", str(tmp_path / "short.wav"), "--no-progress"])
    assert code == 1 and "shorter than one frame" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.wav"]


@pytest.mark.parametrize("sampling", [["--greedy"], ["--seed", "3"]])
def test_cli_stream_writes_the_same_file_as_without(model, repo, t5_folder, tmp_path, sampling):
    """`--stream` normalises the finished file as a plain run does (it wrote raw samples, about 8.5 dB quieter):
    the same samples within 16-bit PCM precision."""
    frames, rate = 30, model.frame_rate
    common = ["generate", "calm jazz", "--model", str(repo), "--text-encoder", t5_folder, "--duration",
              repr(seconds(frames, rate)), *sampling, "--no-progress"]
    outputs = {}
    for name, extra in (("plain", []), ("streamed", ["--stream"])):
        out = tmp_path / f"{name}.wav"
        assert main([*common, *extra, "-o", str(out)]) == 0
        outputs[name], _ = sf.read(out, always_2d=True, dtype="int16")
    plain, streamed = outputs["plain"].astype(int), outputs["streamed"].astype(int)
    assert plain.shape == streamed.shape and np.abs(plain).max() > 1000
    assert np.abs(plain - streamed).max() <= 2  # PCM steps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.wav", "streamed.wav"]  # no temporary file left


def test_stream_progress_matches_generate(model):
    """Streaming reports the same steps as generate(): 1..total over all windows, total fixed."""
    saved = model.max_duration
    rate = model.frame_rate
    model.max_duration = seconds(15, rate)
    reports: dict[str, list] = {"generate": [], "stream": []}
    try:
        model.set_generation_params(duration=seconds(35, rate), extend_stride=seconds(10, rate), use_sampling=False)
        for name in reports:
            model.set_custom_progress_callback(lambda done, total, name=name: reports[name].append((done, total)))
            if name == "generate":
                model.generate(["calm jazz"])
            else:
                list(model.generate_stream(["calm jazz"], chunk_seconds=0.1))
    finally:
        model.max_duration = saved
        model.set_custom_progress_callback(None)
    steps = 35 + 3 * max(model.lm.cfg.delays)
    assert reports["stream"] == reports["generate"] == [(done, steps) for done in range(1, steps + 1)]
