"""Write the shipped model's training manifests from the corpus folders (see README.md in this folder).

codec_train.jsonl: real recorded music (singularity-music) + rendered scores + rendered grooves;
lm_train.jsonl: the rendered, captioned items only (every caption names instruments, tempo, key and mode).
"""

from __future__ import annotations

import sys
from pathlib import Path

from wavecraft.data import build_manifest, write_manifest


def main(root: Path) -> None:
    real = build_manifest(root / "singularity32k")
    rendered = build_manifest(root / "scores") + build_manifest(root / "grooves")
    write_manifest(root / "codec_train.jsonl", real + rendered)
    write_manifest(root / "lm_train.jsonl", [m for m in rendered if m.description])
    for name, metas in (("real", real), ("rendered", rendered)):
        print(f"{name}: {len(metas)} files, {sum(m.duration for m in metas) / 3600:.2f} h")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/corpus"))
