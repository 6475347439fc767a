"""Copy a trained model folder (``wavecraft train lm``'s ``final/``) into the package as the shipped model.

The weights are copied as they are (float32): the model is small enough for the 50 MB budget.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from safetensors.torch import load_file, save_file

TARGET = Path(__file__).resolve().parents[2] / "src" / "wavecraft" / "assets" / "wavecraft-small"


def main(source: Path) -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "config.json", TARGET / "config.json")
    tensors = load_file(str(source / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(TARGET / "model.safetensors"),
              metadata={"format": "pt"})
    size = sum(p.stat().st_size for p in TARGET.iterdir()) / 2**20
    print(f"{TARGET}: {size:.1f} MB")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
