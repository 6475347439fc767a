"""The ``wavecraft`` command line. Thin: parses arguments and calls ``wavecraft.models``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import WavecraftError

#: Audio formats a generation can write (``wavecraft.audio.io.WRITE_FORMATS``; not imported here: torch is slow
#: to import, and argument errors should answer at once).
_FORMATS = ("wav", "flac", "mp3", "ogg")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="wavecraft", description="Neural audio compression and generation.",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"wavecraft {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(sub.add_parser, formatter_class=_HelpFormatter)

    p = add("compress", help="encode an audio file to a .wcodec token file")
    p.add_argument("input", help="audio file (wav, flac, ogg, mp3, m4a, ...)")
    p.add_argument("output", help="output .wcodec file")
    p.add_argument("--model", default=None,
                   help="codec: shipped name, hub name, directory or checkpoint file (default: wavecraft-small's "
                        "codec, which ships with wavecraft; e.g. facebook/encodec_32khz with hub access)")
    p.add_argument("--bandwidth", type=float, default=None, help="target bitrate in kbps (selects codebooks)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = add("generate", help="text-to-music with MusicGen")
    _generation_args(p, kind="music")
    p = add("sfx", help="text-to-sound with AudioGen")
    _generation_args(p, kind="sfx")

    add("models", help="list the models that ship with wavecraft (usable offline by name)")

    data = add("data", help="build training data").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("manifest", formatter_class=_HelpFormatter,
                        help="list a folder of audio (with .txt/.json captions) as a JSONL manifest")
    p.add_argument("root", help="folder to scan recursively")
    p.add_argument("-o", "--output", required=True, help="manifest file (.jsonl or .jsonl.gz)")
    p.add_argument("--min-duration", type=float, default=0.0, help="skip files shorter than this (seconds)")
    p.add_argument("--relative", action="store_true", help="store paths relative to the manifest's folder")
    p.add_argument("--workers", type=int, default=4, help="threads probing files")
    _corpus_args(data)

    train = add("train", help="train models").add_subparsers(dest="train_command", required=True)
    p = train.add_parser("codec", help="train an EnCodec codec on a manifest (optionally adversarial)")
    p.add_argument("config", nargs="?", default=None, help="YAML training config (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set total_steps=500 --set codec.n_q=8 (repeatable)")
    p = train.add_parser("lm", help="train (or fine-tune) a MusicGen language model on a manifest")
    p.add_argument("config", nargs="?", default=None, help="YAML training config (default: built-in defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set codec=runs/codec/final --set train.total_steps=500")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many more steps (resume later with the same command)")

    p = add("decompress", help="decode a .wcodec file to audio")
    p.add_argument("input", help=".wcodec file")
    p.add_argument("output", help="output audio file; format from the suffix (wav, flac, mp3, ogg)")
    p.add_argument("--model", default=None, help="codec to decode with (default: the one named in the file)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _generation_args(p: argparse.ArgumentParser, kind: str) -> None:
    music = kind == "music"
    p.add_argument("prompts", nargs="*", help="text descriptions, one clip each")
    p.add_argument("--prompts-file", help="a text file with one description per line (blank lines and lines "
                                          "starting with # are skipped)")
    if music:
        p.add_argument("--model", default="wavecraft-small",
                       help="shipped name, hub name, directory or file (default: wavecraft-small, which ships "
                            "with wavecraft; see `wavecraft models`)")
    else:
        p.add_argument("--model", default=None,
                       help="hub name (e.g. facebook/audiogen-medium), directory or file; required: no "
                            "sound-effects model ships with wavecraft yet")
    p.add_argument("--duration", type=float, default=10.0 if music else 5.0,
                   help="seconds per clip (at most 1 h without --allow-long)")
    p.add_argument("--allow-long", action="store_true",
                   help="allow --duration up to 24 h (the clip is generated and held in memory whole)")
    p.add_argument("--seed", type=int, default=None, help="random seed (reproducible sampling)")
    p.add_argument("--top-k", type=int, default=250, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling; wins over --top-k when > 0")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature for sampling")
    p.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance coefficient")
    p.add_argument("--cfg-beta", type=float, default=None,
                   help="double CFG: the description's weight against the other conditions"
                        + (" (e.g. with --melody on the shipped model, --cfg 9 --cfg-beta 0.33 follows the melody "
                           "closely)" if music else ""))
    p.add_argument("--greedy", action="store_true", help="argmax decoding instead of sampling")
    p.add_argument("--two-step-cfg", action="store_true", help="run conditional and null passes separately")
    p.add_argument("--extend-stride", type=float, default=None,
                   help="seconds each window advances beyond the model's max duration (default: the model's own: "
                        + ("18 s for MusicGen checkpoints, half the max duration for shorter models, e.g. 3 s "
                           "for wavecraft-small)" if music else "2 s for AudioGen)"))
    p.add_argument("--continue-from", help="audio file to continue (its audio starts the output)")
    if music:
        p.add_argument("--melody", help="audio file whose melody to follow (melody models, e.g. wavecraft-small)")
    else:
        p.set_defaults(melody=None)
    p.add_argument("--text-encoder", help="local T5 folder or hub name to use instead of the model's default")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("-o", "--output", default=None,
                   help="output file; several prompts get _0, _1, ...; its folder must exist (default: "
                        "output.wav, or output.FORMAT with --format)")
    p.add_argument("--format", choices=_FORMATS, default=None,
                   help="audio format (default: from the output suffix, else wav)")
    p.add_argument("--mp3-bitrate", type=int, default=320, help="MP3 bitrate in kbps (with --format mp3)")
    p.add_argument("--batch-size", type=int, default=None, help="prompts generated together (default: all)")
    p.add_argument("--quantize", choices=["int8"], default=None, help="int8 transformer weights: faster on CPU")
    p.add_argument("--stream", action="store_true",
                   help="write audio while generating (live chunks are raw; the finished file is loudness-normalised "
                        "as without --stream)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="transformer precision (half precision is meant for GPUs; heads stay float32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decoding step (pays off on long or repeated generations)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


#: The usual limit of one file name component, in bytes (ext4, xfs, btrfs, tmpfs; NAME_MAX).
_NAME_MAX = 255
#: Every output this run checked (what a write error without a file name is about: ``f.write`` raising ENOSPC).
_outputs: list[str] = []


def _check_output(path: str | os.PathLike, inputs: Sequence[str | None] = ()) -> None:
    """Refuse, before any work, an output that cannot be written or must not be.

    Checked: each name component fits ``NAME_MAX`` bytes; the folder exists (a typo must not create folders), is
    a folder and is writable; the output is not a folder, nor an existing non-regular file (``/dev/null``, a FIFO:
    outputs are written to a temporary file renamed over the target, which would replace the device or pipe, so
    they are refused rather than written to); the output is not one of the command's ``inputs`` (writing over
    them would lose data).
    """
    out = Path(path)
    shown = _check_names(out)
    # os.path's tests, not Path's: they answer False instead of raising on names the system refuses.
    if os.path.isdir(out):
        raise WavecraftError(f"cannot write {shown}: it is a folder (name a file in it)")
    if os.path.lexists(out) and not os.path.isfile(out):
        raise WavecraftError(f"cannot write {shown}: it is not a regular file (a device, pipe or socket); outputs "
                             "are written to a temporary file and renamed into place, so name a regular file")
    for source in filter(None, inputs):
        if os.path.exists(out) and os.path.exists(source) and os.path.samefile(out, source):
            raise WavecraftError(f"the output {shown} is also an input of this command: pick another output name")
    parent = out.parent
    if not os.path.isdir(parent):
        raise WavecraftError(f"cannot write {shown}: folder {parent} does not exist" if not os.path.lexists(parent)
                             else f"cannot write {shown}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise WavecraftError(f"cannot write {shown}: no permission to create files in folder {parent}")
    _outputs.append(str(out))


def _check_names(out: Path) -> str:
    """``out`` for messages (on one line); refuses a name component longer than ``NAME_MAX`` bytes."""
    shown = str(out).replace("\n", "\\n")
    for part in out.parts:
        size = len(os.fsencode(part))
        if size > _NAME_MAX:
            raise WavecraftError(f"cannot write {shown[:60]}...: a name in it ({part[:30]}...) is {size} bytes "
                                 f"long; file names are limited to {_NAME_MAX} bytes")
    return shown


def _check_generation_output(output: str, fmt: str | None, inputs: Sequence[str | None]) -> None:
    """The checks of :func:`_check_output` on the file ``-o output`` names (before torch is imported: they answer
    at once), and the suffix against ``--format``."""
    given = Path(output)
    _check_names(given)
    suffix = given.suffix.lstrip(".").lower()
    if fmt and suffix in _FORMATS and suffix != fmt:
        raise WavecraftError(f"--format {fmt} conflicts with the output name {given.name} (.{suffix}): "
                             "change one of them")
    if os.path.lexists(given) and not os.path.isfile(given) and not os.path.isdir(given):
        # -o /dev/null would write /dev/null.wav
        _check_output(given)
    # The first file written, as GenerationJob names it: the suffix replaced by, or followed by, the format's.
    stem = given.with_suffix("") if suffix in _FORMATS else given
    final_fmt = fmt or (suffix if suffix in _FORMATS else "wav")
    _check_output(stem.with_name(f"{stem.name}.{final_fmt}"), inputs)


def _generate(args: argparse.Namespace) -> None:
    from .checkpoints.hub import check_reachable

    if args.output is None:
        args.output = f"output.{args.format or 'wav'}"
    inputs = [args.continue_from, args.melody, args.prompts_file]
    _check_generation_output(args.output, args.format, inputs)
    if args.command == "sfx" and args.model is None:
        raise WavecraftError("no sound-effects model ships with wavecraft yet: pass --model (e.g. "
                             "facebook/audiogen-medium with hub access or in the HF cache, or a local folder)")
    check_reachable(args.model, "sfx" if args.command == "sfx" else "music")
    from .models.generation_job import GenerationJob  # torch: after the checks, which answer at once

    job = GenerationJob.from_args(args, kind="sfx" if args.command == "sfx" else "music")
    for path in job.final_paths():  # the names written (_0, _1, ..., the format's suffix): before generating
        _check_output(path, inputs=inputs)
    for path in job.run():
        print(path)


def _data(args: argparse.Namespace) -> None:
    from .data import build_manifest, write_manifest

    if args.data_command != "manifest":
        return _corpus_command(args)
    if not Path(args.root).is_dir():
        raise WavecraftError(f"not a folder: {args.root}")
    _check_output(args.output)  # before the scan, which can take long
    metas = build_manifest(args.root, min_duration=args.min_duration, workers=args.workers)
    if not metas:
        raise WavecraftError(f"no readable audio files under {args.root}")
    write_manifest(args.output, metas, relative=args.relative)
    hours = sum(m.duration for m in metas) / 3600
    captioned = sum(m.description is not None for m in metas)
    print(f"{args.output}: {len(metas)} files, {hours:.2f} h, {captioned} with captions")


def _corpus_args(data: argparse._SubParsersAction) -> None:
    """``data render-scores``, ``data render-grooves`` and ``data import`` (offline training corpora)."""
    def common(p: argparse.ArgumentParser, default_count: int) -> None:
        p.add_argument("output_dir", help="folder for NAME.wav + NAME.json items (created; reruns resume)")
        p.add_argument("--count", type=int, default=default_count, help=f"items to render (default {default_count})")
        p.add_argument("--sample-rate", type=int, default=32000, help="output sample rate (default 32000)")
        p.add_argument("--seed", type=int, default=0, help="picks works/styles, instruments, tempo, key")
        p.add_argument("--max-duration", type=float, default=None, help="cut items at this many seconds")
        p.add_argument("--soundfont", default=None,
                       help="sf2/sf3 file (default: TimGM6mb.sf2 from pretty_midi; e.g. FluidR3_GM.sf2)")
        p.add_argument("--format", choices=["wav", "flac"], default="wav")
        p.add_argument("--workers", type=int, default=1, help="rendering processes")
        p.add_argument("-o", "--manifest", default=None, help="manifest to write (default OUTPUT_DIR/manifest.jsonl)")
        p.add_argument("-v", "--verbose", action="store_true", help="print each item's caption")

    p = data.add_parser("render-scores", help="synthesize captioned audio from the music21 score corpus")
    common(p, 100)
    p.add_argument("--sources", action="append", default=None, metavar="NAMES",
                   help="corpus folders or aliases, comma-separated (chorales, essen, folk, fiddle, oneill, ryan, "
                        "aird, renaissance, medieval, classical, bach, palestrina...; default: all main ones)")
    p.add_argument("--query", default=None, help="keep works whose title/composer/path contains this")
    p.add_argument("--max-parts", type=int, default=None, help="skip works with more parts")
    p.add_argument("--min-bpm", type=int, default=60)
    p.add_argument("--max-bpm", type=int, default=160)
    p.add_argument("--max-transpose", type=int, default=5, help="random transposition range (semitones)")

    p = data.add_parser("render-grooves", help="synthesize captioned MMA accompaniment grooves (needs mma)")
    common(p, 100)
    p.add_argument("--styles", action="append", default=None, metavar="NAMES",
                   help="MMA styles, comma-separated (bossanova, swing, waltz, ...; default: all curated)")
    p.add_argument("--bars", type=int, default=16, help="bars per item (default 16)")
    p.add_argument("--min-bpm", type=int, default=None, help="override every style's tempo range")
    p.add_argument("--max-bpm", type=int, default=None)

    p = data.add_parser("import", help="captioned manifest of a folder of recordings (e.g. Debian game audio)")
    p.add_argument("src", help="folder to scan recursively (folder names become categories)")
    p.add_argument("--output-dir", default=None, help="where copies/conversions and the default manifest go")
    p.add_argument("-o", "--manifest", default=None, help="manifest file (default OUTPUT_DIR/manifest.jsonl)")
    p.add_argument("--kind", choices=["music", "sfx"], default=None, help="caption prefix: music / sound effect")
    p.add_argument("--copy", action="store_true", help="copy the files into --output-dir")
    p.add_argument("--convert-rate", type=int, default=None, help="convert copies to wav at this rate")
    p.add_argument("--mono", action="store_true", help="convert copies to mono")
    p.add_argument("--license", default=None, help="licence file to record, e.g. /usr/share/doc/PKG/copyright")
    p.add_argument("--min-duration", type=float, default=0.0, help="skip files shorter than this (seconds)")
    p.add_argument("--workers", type=int, default=4, help="threads probing/converting files")


def _corpus_command(args: argparse.Namespace) -> None:
    import logging

    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.data_command == "import":
        from .data.importer import import_folder

        report = import_folder(args.src, args.output_dir, args.manifest, kind=args.kind, copy=args.copy,
                               convert_rate=args.convert_rate, mono=args.mono, license=args.license,
                               min_duration=args.min_duration, workers=args.workers)
        print(report.summary())
        return
    common = dict(sample_rate=args.sample_rate, seed=args.seed, max_duration=args.max_duration,
                  soundfont=args.soundfont, format=args.format, workers=args.workers, manifest=args.manifest)
    if args.data_command == "render-scores":
        from .data.scores import render_scores

        result = render_scores(args.output_dir, args.count, sources=args.sources, max_parts=args.max_parts,
                               query=args.query, min_bpm=args.min_bpm, max_bpm=args.max_bpm,
                               max_transpose=args.max_transpose, **common)
    else:
        from .data.grooves import render_grooves

        result = render_grooves(args.output_dir, args.count, styles=args.styles, bars=args.bars,
                                min_bpm=args.min_bpm, max_bpm=args.max_bpm, **common)
    print(result.summary())


def _train(args: argparse.Namespace) -> None:
    if args.train_command == "lm":
        _train_lm(args)
        return
    import torch

    from .codec.compression import EnCodec
    from .train.codec_solver import CodecSolver, CodecTrainConfig, batches_from_manifest
    from .train.config import load_config
    from .train.distributed import init_from_env, is_main

    cfg = load_config(CodecTrainConfig, args.config, args.overrides)
    batches = batches_from_manifest(cfg)  # before building the model: a bad manifest fails fast
    init_from_env()  # under torchrun: join the process group (data parallel); alone: nothing
    torch.manual_seed(cfg.seed)  # the same config starts from the same weights (on every rank)
    model = EnCodec.from_pretrained(cfg.init_from) if cfg.init_from else EnCodec(cfg.codec)
    CodecSolver(model, cfg).fit(batches)
    if is_main():
        print(f"{cfg.output_dir}/final: codec after {cfg.total_steps} steps")


def _train_lm(args: argparse.Namespace) -> None:
    from .train.config import load_config
    from .train.lm_run import LMRunConfig, train_lm

    cfg = load_config(LMRunConfig, args.config, args.overrides)
    final = train_lm(cfg, max_steps=args.max_steps)
    if final is None:
        print(f"{cfg.train.output_dir}: stopped before step {cfg.train.total_steps}; run again to resume")
    else:
        print(f"{final}: model after {cfg.train.total_steps} steps (MusicGen.get_pretrained({str(final)!r}))")


def _models(args: argparse.Namespace) -> None:
    from .checkpoints.shipped import SHIPPED

    width = max(len(name) for name in SHIPPED)
    for model in SHIPPED.values():
        print(f"{model.name:<{width}}  {', '.join(model.uses):<12}  {model.about}")
    print("Any --model also takes a hub name (facebook/musicgen-small, ...; needs the hub or the HF cache), a "
          "local folder or a checkpoint file.")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _compress(args: argparse.Namespace) -> None:
    from .checkpoints.hub import check_reachable
    from .models.compression import DEFAULT_CODEC, compress_file

    _check_output(args.output, inputs=[args.input])
    check_reachable(args.model, "codec")
    begin = time.perf_counter()
    item = compress_file(args.input, args.output, model=args.model or DEFAULT_CODEC, bandwidth=args.bandwidth,
                         progress=not args.no_progress)
    seconds = item.length / item.sample_rate
    k, frames = item.codes.shape
    print(f"{args.output}: {seconds:.2f} s of audio -> {_plural(k, 'codebook')} x {_plural(frames, 'frame')} "
          f"({time.perf_counter() - begin:.2f} s)")


def _decompress(args: argparse.Namespace) -> None:
    from .checkpoints.hub import check_reachable
    from .models.compression import decompress_file

    _check_output(args.output, inputs=[args.input])
    if not Path(args.output).suffix:  # written as OUTPUT.wav
        _check_output(f"{args.output}.wav", inputs=[args.input])
    check_reachable(args.model, "codec")
    begin = time.perf_counter()
    path = decompress_file(args.input, args.output, model=args.model, progress=not args.no_progress)
    print(f"{path} ({time.perf_counter() - begin:.2f} s)")


def _quiet_hub_logging() -> None:
    """Hub retry chatter ("Retrying in 2s...") would bury our one-line errors; failures still surface as those."""
    try:
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:  # pragma: no cover - a core dependency
        return
    hub_logging.set_verbosity_error()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` and ``atomic_output`` cleans up on the way out."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the command runs, SIGTERM raises :class:`Terminated` in the main thread (restored afterwards)."""
    def handler(signum: int, frame: object) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread (main() called from a worker thread): leave it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line(text: str) -> str:
    """A message on one line: a user-facing error must not spread over several."""
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


#: OS errors that mean "the output cannot be written" (the file name is often missing from them).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _os_error_message(e: OSError) -> str:
    """``cannot write X: no space left on device`` and the like, from ``e.strerror`` and ``e.errno``."""
    reason = (e.strerror or str(e) or type(e).__name__).lower()
    name = e.filename if e.filename is not None else None
    if name is None and e.errno in _WRITE_ERRNOS and _outputs:
        name = ", ".join(dict.fromkeys(_outputs))  # the outputs of this run: one of them was being written
    if name is None:
        return reason
    verb = "write" if e.errno in _WRITE_ERRNOS or e.errno in (errno.EACCES, errno.EPERM) else "use"
    return f"cannot {verb} {os.fsdecode(name)}: {reason}"


def _out_of_memory(e: BaseException) -> bool:
    """torch's allocation failures (``torch.OutOfMemoryError``, the CPU allocator's RuntimeError) count as
    MemoryError; torch is looked up only if it is already imported."""
    torch = sys.modules.get("torch")
    oom = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom is not None and isinstance(e, oom):
        return True
    return isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "out of memory" in str(e).lower())


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    _quiet_hub_logging()
    _outputs.clear()
    commands = {"compress": _compress, "decompress": _decompress, "generate": _generate, "sfx": _generate,
                "data": _data, "train": _train, "models": _models}
    try:
        with _sigterm_raises():
            commands[args.command](args)
    except WavecraftError as e:
        print(f"wavecraft: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    except Terminated:
        print("wavecraft: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("wavecraft: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `wavecraft models | head`: the reader is gone, nothing to tell it
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
        return 1
    except MemoryError:
        # Last resort: one line, not a traceback (the traceback's own allocation could fail too).
        print("wavecraft: error: out of memory: try a shorter --duration, fewer prompts or a smaller "
              "--batch-size", file=sys.stderr)
        return 1
    except OSError as e:
        # Last resort for what the checks before the work cannot foresee: a full disk, permissions changed.
        print(f"wavecraft: error: {_one_line(_os_error_message(e))}", file=sys.stderr)
        return 1
    except RuntimeError as e:
        if not _out_of_memory(e):
            raise
        print("wavecraft: error: out of memory: try a shorter --duration, fewer prompts or a smaller "
              "--batch-size", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
