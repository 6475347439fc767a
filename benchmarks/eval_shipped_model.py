"""Evaluate the model that ships in the package (or any MusicGen checkpoint) on held-out material.

Prints:
1. codec: SI-SNR and multi-scale mel distance on 10 s loudness-normalised excerpts of real recorded music
   (``--real-music DIR``, e.g. Debian's wesnoth-1.16-music, which the shipped codec never saw);
2. text adherence: for prompts that differ only in instrument family, tempo (slow/fast) or mode (major/minor),
   the share of generations whose measured features follow the prompt (spectral centroid / envelope sustain,
   onset rate, Krumhansl key estimate), against the same measure with the prompts shuffled;
3. melody adherence: chroma cosine between input melody and output (musicgen-melody's card: 0.44 on MusicCaps);
4. speed: real-time factor of generating 10 s on this machine;
5. codec pitch: 12 synthetic harmonic notes C..B through the codec; how many come back with their own pitch class;
6. with ``--manifest`` (e.g. the LM's training manifest): whether the LM uses its conditions at all — its
   teacher-forced cross-entropy on those clips with their own caption and melody, against none or another
   clip's (a model that ignores a condition scores the same either way).

    python benchmarks/eval_shipped_model.py --real-music /path/to/wesnoth/music --n 4
    python benchmarks/eval_shipped_model.py --codec runs/shipped/codec_osc/final --real-music ...  # 1 and 5 only
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch

from wavecraft import MusicGen, audio_read
from wavecraft.audio import convert_audio
from wavecraft.codec.compression import CompressionModel
from wavecraft.metrics import chroma_cosine_similarity
from wavecraft.metrics.features import envelope_sustain, estimate_key, onset_rate, spectral_centroid
from wavecraft.train.codec_losses import multiscale_mel_loss, si_snr

# (feature, prompt template, contrasting values, which value should give the larger feature)
INSTRUMENTS = [("a slow melody played on a {} in C major", ("flute", "cello"), "flute", "centroid"),
               ("a folk song in G major played on {}, 100 bpm", ("piccolo", "bassoon"), "piccolo", "centroid"),
               ("a chorale in D major played by {}, 80 bpm", ("a church organ", "a piano"), "a church organ",
                "sustain")]
TEMPI = [("a {} chorale in F major played on piano", ("slow", "fast"), "fast", "onsets"),
         ("a {} folk song in A minor played by a string ensemble", ("slow", "fast"), "fast", "onsets"),
         ("a {} fiddle reel in D major played on violin", ("slow", "fast"), "fast", "onsets")]
MODES = [("a moderate chorale in {} played by a string ensemble, 90 bpm", ("C major", "C minor")),
         ("a folk song in {} played on piano, 100 bpm", ("A major", "A minor")),
         ("a slow hymn in {} played on organ, 70 bpm", ("G major", "G minor"))]


def real_music_excerpts(folder: Path, count: int, seconds: float, rate: int) -> list[torch.Tensor]:
    """Up to ``count`` excerpts ``[1, T]`` from the middle of the tracks in ``folder``, loudness-normalised."""
    import pyloudnorm

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".ogg", ".flac", ".wav", ".mp3"})
    excerpts = []
    meter = pyloudnorm.Meter(rate)
    for path in files[:count]:
        wav, sr = audio_read(path)
        wav = convert_audio(wav, sr, rate, 1)
        length = int(seconds * rate)
        if wav.shape[-1] < length:
            continue
        start = (wav.shape[-1] - length) // 2
        clip = wav[:, start:start + length]
        loudness = meter.integrated_loudness(clip[0].numpy())
        excerpts.append(clip * 10 ** ((-23.0 - loudness) / 20))
    return excerpts


@torch.no_grad()
def eval_codec(codec: CompressionModel, folder: Path, count: int) -> None:
    clips = real_music_excerpts(folder, count, 10.0, codec.sample_rate)
    if not clips:
        print(f"codec: no usable audio under {folder}")
        return
    snrs, mels, outputs = [], [], []
    for clip in clips:
        x = clip[None]
        codes, scale = codec.encode(x)
        y = codec.decode(codes, scale)[..., : x.shape[-1]]
        snrs.append(float(si_snr(y, x)[0]))
        mels.append(float(multiscale_mel_loss(y, x, codec.sample_rate)))
        outputs.append(y[0])
    print(f"codec on {len(clips)} x 10 s of held-out real music ({folder.name}): "
          f"SI-SNR {sum(snrs) / len(snrs):.2f} dB, multi-scale mel distance {sum(mels) / len(mels):.3f}")
    # Pitch on real music: a reconstruction should match its own input's chroma better than another clip's.
    inputs, outputs_ = torch.stack(clips), torch.stack(outputs)
    own = chroma_cosine_similarity(outputs_, inputs, codec.sample_rate)
    other = chroma_cosine_similarity(outputs_, inputs.roll(1, 0), codec.sample_rate)
    print(f"codec chroma: reconstruction vs its own input {own:.3f}, vs another clip {other:.3f}")


def feature(name: str, wav: torch.Tensor, rate: int) -> float:
    return {"centroid": spectral_centroid, "sustain": envelope_sustain, "onsets": onset_rate}[name](wav, rate)


def eval_text(model: MusicGen, n: int, duration: float, seed: int, cfg_coef: float = 3.0) -> None:
    """Pairs of prompts differing in one attribute: a pair "follows" when the feature orders them as the prompts
    say; the shuffled baseline orders the same clips by randomly reassigned prompts."""
    rate = model.sample_rate
    rng = random.Random(seed)
    for label, cases in (("instrument family", INSTRUMENTS), ("tempo", TEMPI)):
        follows = shuffled = total = 0
        for template, values, larger, feat in cases:
            prompts = [template.format(v) for v in values]
            for trial in range(n):
                model.set_generation_params(duration=duration, seed=seed + trial, cfg_coef=cfg_coef)
                wav = model.generate(prompts)
                scores = [feature(feat, w, rate) for w in wav]
                expected_first_larger = values[0] == larger
                follows += (scores[0] > scores[1]) == expected_first_larger
                shuffled += (scores[0] > scores[1]) == (rng.random() < 0.5)
                total += 1
        print(f"text adherence, {label}: {follows}/{total} = {follows / total:.2f} follow the prompt "
              f"(shuffled prompts: {shuffled / total:.2f})")
    follows = shuffled = total = 0
    for template, values in MODES:
        for trial in range(n):
            model.set_generation_params(duration=duration, seed=seed + trial, cfg_coef=cfg_coef)
            wav = model.generate([template.format(v) for v in values])
            modes = [estimate_key(w, rate)[1] for w in wav]
            wanted = [v.split()[1] for v in values]
            follows += sum(m == w for m, w in zip(modes, wanted, strict=True))
            shuffled += sum(m == rng.choice(wanted) for m in modes)
            total += len(modes)
    print(f"text adherence, mode: {follows}/{total} = {follows / total:.2f} match the prompt's major/minor "
          f"(shuffled prompts: {shuffled / total:.2f})")


MELODY_GUIDANCE = (9.0, 1 / 3)  # (cfg_coef, cfg_coef_beta): the melody's direction weighs 9, the text's 3


def eval_melody(model: MusicGen, melodies: list[torch.Tensor], duration: float, seed: int) -> None:
    """Chroma cosine with the input melody, with plain CFG (3) and with melody guidance (double CFG whose middle
    term keeps the melody and drops the text, :data:`MELODY_GUIDANCE`)."""
    if not model.has_melody:
        print("melody: this model has no melody conditioner")
        return
    rate = model.sample_rate
    length = int(duration * rate)
    targets = torch.stack([m[..., :length] for m in melodies])
    guided = f"melody guidance, cfg {MELODY_GUIDANCE[0]:g}, beta {MELODY_GUIDANCE[1]:.2f}"
    for label, (cfg, beta) in (("plain CFG 3", (3.0, None)), (guided, MELODY_GUIDANCE)):
        model.set_generation_params(duration=duration, seed=seed, cfg_coef=cfg, cfg_coef_beta=beta)
        out = model.generate_with_chroma(["a melody played on piano"] * len(melodies), targets, rate)[..., :length]
        score = chroma_cosine_similarity(out, targets, rate)
        shuffled = chroma_cosine_similarity(out, targets.roll(1, 0), rate)
        print(f"melody adherence ({label}): chroma cosine {score:.3f} (against another item's melody: "
              f"{shuffled:.3f}; musicgen-melody reports 0.44 on MusicCaps)")
    model.set_generation_params()


def held_out_melodies(count: int, seconds: float, rate: int, seed: int) -> list[torch.Tensor]:
    """Single-instrument renderings of corpus works with another seed than the training corpus's."""
    import tempfile

    from wavecraft.data.scores import render_scores

    folder = Path(tempfile.mkdtemp(prefix="wavecraft-melodies-"))
    render_scores(folder, count, sample_rate=rate, seed=seed, sources=["fiddle"], max_parts=1,
                  max_duration=seconds, write_manifest=False)
    clips = []
    for path in sorted(folder.glob("*.wav")):
        wav, sr = audio_read(path)
        wav = convert_audio(wav, sr, rate, 1)
        if wav.shape[-1] >= int(seconds * rate):
            clips.append(wav)
    return clips


def eval_codec_pitch(codec: CompressionModel) -> None:
    """Whether the codec renders pitch: 2 s harmonic notes C4..B4, strongest mean chroma bin after the codec."""
    from wavecraft.metrics.pitch import rendered_pitch_classes

    classes = rendered_pitch_classes(codec)
    right = sum(c == k for k, c in enumerate(classes))
    print(f"codec pitch: {right}/12 notes C..B keep their pitch class (rendered as {classes})")


def eval_condition_use(model: MusicGen, manifest: Path, count: int, seed: int) -> None:
    """Teacher-forced cross-entropy of ``count`` clips of ``manifest`` under right / no / another clip's text
    and melody (one segment of ``max_duration`` each)."""
    from wavecraft.data import read_manifest
    from wavecraft.train.lm_conditions import ConditionProjector
    from wavecraft.train.lm_loss import lm_cross_entropy

    metas = random.Random(seed).sample(read_manifest(manifest), count)
    rate, length = model.sample_rate, int(model.max_duration * model.sample_rate)
    wavs = []
    for meta in metas:
        wav, sr = audio_read(meta.path)
        wav = convert_audio(wav, sr, rate, 1)[..., :length]
        wavs.append(torch.nn.functional.pad(wav, (0, length - wav.shape[-1])))
    wav = torch.stack(wavs)
    texts = [meta.description for meta in metas]
    projector = ConditionProjector(model.bundle.conditioners, model.bundle.fuser)
    with torch.inference_mode():
        codes = model.compression_model.encode(wav)[0]
        right = projector.encode(texts, wav=wav)
        other = projector.encode(texts[1:] + texts[:1], wav=wav.roll(1, 0))
        null = projector.null(right)
        names = projector.names

        def mixed(text_from, melody_from) -> float:
            parts = tuple((text_from if not projector.has_melody or name != "self_wav" else melody_from).parts[i]
                          for i, name in enumerate(names))
            raw = type(right)(parts)
            return lm_cross_entropy(model.lm, codes, projector.project(raw)).loss.item()

        rows = [("right text, right melody", mixed(right, right)), ("no text", mixed(null, right)),
                ("another clip's text", mixed(other, right))]
        if projector.has_melody:
            rows += [("no melody", mixed(right, null)), ("another clip's melody", mixed(right, other)),
                     ("nothing (null text and melody)", mixed(null, null))]
    print(f"condition use: teacher-forced cross-entropy (nats) on {count} clips of {manifest.name}")
    for name, value in rows:
        print(f"  {name:32s} {value:.3f}")


def eval_speed(model: MusicGen, seconds: float) -> None:
    model.set_generation_params(duration=seconds, seed=0)
    model.generate(["warm-up"])  # packs weights, loads the text encoder
    begin = time.perf_counter()
    model.generate(["a gentle piano waltz in C major, 90 bpm"])
    wall = time.perf_counter() - begin
    print(f"speed: {seconds:.0f} s of audio in {wall:.2f} s on {torch.get_num_threads()} threads: "
          f"real-time factor {seconds / wall:.2f}x (seconds of audio per second of wall time; > 1 is faster than "
          "real time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--real-music", type=Path, default=None, help="folder of held-out real recordings")
    parser.add_argument("--clips", type=int, default=12, help="real-music excerpts for the codec")
    parser.add_argument("--n", type=int, default=4, help="generations per prompt pair")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--cfg", type=float, default=3.0, help="CFG coefficient of the text-adherence generations")
    parser.add_argument("--manifest", type=Path, default=None, help="clips for the condition-use check")
    parser.add_argument("--skip", nargs="*", default=[], choices=["text", "melody", "speed"])
    parser.add_argument("--codec", default=None, help="evaluate only this codec export (real music and pitch)")
    args = parser.parse_args()
    if args.codec:
        codec = CompressionModel.get_pretrained(args.codec)
        print(f"codec: {args.codec}")
        if args.real_music is not None:
            eval_codec(codec, args.real_music, args.clips)
        eval_codec_pitch(codec)
        return
    model = MusicGen.get_pretrained(args.model, device="cpu") if args.model else MusicGen.get_pretrained()
    print(f"model: {model.name}")
    if args.real_music is not None:
        eval_codec(model.compression_model, args.real_music, args.clips)
    eval_codec_pitch(model.compression_model)
    if args.manifest is not None:
        eval_condition_use(model, args.manifest, 24, args.seed)
    if "text" not in args.skip:
        eval_text(model, args.n, args.duration, args.seed, args.cfg)
    if "melody" not in args.skip:
        melodies = held_out_melodies(6, args.duration, model.sample_rate, seed=args.seed)
        if melodies:
            eval_melody(model, melodies, args.duration, args.seed)
    if "speed" not in args.skip:
        eval_speed(model, 10.0)


if __name__ == "__main__":
    main()
