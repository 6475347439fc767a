"""The ``wavecraft`` command line. Thin: parses arguments and calls ``wavecraft.models``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from .errors import WavecraftError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wavecraft", description="Neural audio compression and generation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="encode an audio file to a .wcodec token file")
    p.add_argument("input", help="audio file (wav, flac, ogg, mp3, m4a, ...)")
    p.add_argument("output", help="output .wcodec file")
    p.add_argument("--model", default=None,
                   help="codec: hub name, directory or checkpoint file (default: facebook/encodec_32khz)")
    p.add_argument("--bandwidth", type=float, default=None, help="target bitrate in kbps (selects codebooks)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    p = sub.add_parser("decompress", help="decode a .wcodec file to audio")
    p.add_argument("input", help=".wcodec file")
    p.add_argument("output", help="output audio file; format from the suffix (wav, flac, mp3, ogg)")
    p.add_argument("--model", default=None, help="codec to decode with (default: the one named in the file)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _compress(args: argparse.Namespace) -> None:
    from .models.compression import DEFAULT_CODEC, compress_file

    begin = time.perf_counter()
    item = compress_file(args.input, args.output, model=args.model or DEFAULT_CODEC, bandwidth=args.bandwidth,
                         progress=not args.no_progress)
    seconds = item.length / item.sample_rate
    k, frames = item.codes.shape
    print(f"{args.output}: {seconds:.2f} s of audio -> {k} codebooks x {frames} frames "
          f"({time.perf_counter() - begin:.2f} s)")


def _decompress(args: argparse.Namespace) -> None:
    from .models.compression import decompress_file

    begin = time.perf_counter()
    path = decompress_file(args.input, args.output, model=args.model, progress=not args.no_progress)
    print(f"{path} ({time.perf_counter() - begin:.2f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    commands = {"compress": _compress, "decompress": _decompress}
    try:
        commands[args.command](args)
    except WavecraftError as e:
        print(f"wavecraft: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("wavecraft: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
