"""Copy a trained model folder (``wavecraft train lm``'s ``final/``) into the package as the shipped model.

The weights are copied as they are (float32): the model is small enough for the 50 MB budget. ``--codec DIR``
(a ``wavecraft train codec`` export with the same encoder and codebooks, e.g. a decoder-only fine-tune) replaces
the codec stored with the LM.

    python recipes/shipped/ship.py LM_FINAL [--codec CODEC_FINAL]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

TARGET = Path(__file__).resolve().parents[2] / "src" / "wavecraft" / "assets" / "wavecraft-small"


def main(source: Path, codec: Path | None = None) -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", TARGET / "config.json")
    tensors = load_file(str(source / "model.safetensors"))
    if codec is not None:
        config = json.loads((source / "config.json").read_text())
        codec_config = json.loads((codec / "config.json").read_text())
        codec_tensors = load_file(str(codec / "model.safetensors"))
        old = {k for k in tensors if k.startswith("codec.")}
        if old != {f"codec.{k}" for k in codec_tensors}:
            raise SystemExit(f"{codec}: not the same codec architecture as {source}'s")
        tensors.update({f"codec.{k}": v for k, v in codec_tensors.items()})
        config["codec"] = codec_config.get("codec", codec_config)
        (TARGET / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(TARGET / "model.safetensors"),
              metadata={"format": "pt"})
    size = sum(p.stat().st_size for p in TARGET.iterdir()) / 2**20
    print(f"{TARGET}: {size:.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="wavecraft train lm's final/ folder")
    parser.add_argument("--codec", type=Path, default=None, help="a codec export to ship instead of the LM's")
    args = parser.parse_args()
    main(args.model, args.codec)
