"""Seeded fuzzing of the checkpoint and config loaders (issue 21).

Every case mutates one file of a small valid checkpoint (a field of config.json or xp.cfg set to a random value,
bit flips, a truncation, a corrupted safetensors header) and loads it. Each must end in a successful load or a
one-line :class:`~wavecraft.errors.WavecraftError`, never another exception; the whole loop runs in a child
process whose peak RSS must stay within a fixed budget.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import golden_dir

TESTS = Path(__file__).resolve().parent
CASES = 200
PEAK_BUDGET_MB = 1500

FUZZ = r'''
import json, math, random, shutil, struct, sys, time, traceback
from pathlib import Path

import torch
import yaml

from test_config_validation import write_tiny_generator
from wavecraft.checkpoints.codec import load_codec
from wavecraft.checkpoints.lm import load_lm_bundle
from wavecraft.errors import WavecraftError

work, golden, cases = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
rng = random.Random(1234)
base = write_tiny_generator(work / "base")
codec_bin = (golden / "encodec" / "compression_state_dict.bin").read_bytes()
lm_bin = (golden / "musicgen" / "state_dict.bin").read_bytes()
lm_package = torch.load(golden / "musicgen" / "state_dict.bin", weights_only=True)
codec_package = torch.load(golden / "encodec" / "compression_state_dict.bin", weights_only=True)
HF_CODEC = {"model_type": "encodec", "sampling_rate": 16000, "audio_channels": 1, "hidden_size": 8,
            "num_filters": 2, "upsampling_ratios": [4, 4], "codebook_size": 16, "target_bandwidths": [1.0],
            "num_lstm_layers": 0}


def value():
    return rng.choice([
        0, -1, 1, 2, 3, 10 ** 9, 1e9, 10 ** 30, -(10 ** 9), 0.5, -2.5, 1e300, float("nan"), float("inf"),
        "", "x", "1", "${a}", None, True, False, [], [0], [1, 2, 3], [10 ** 9], ["a"], {}, {"a": 1},
        rng.randint(-5, 10 ** 6), rng.random() * 10 ** rng.randint(-3, 12)])


def leaves(node, path=()):
    if isinstance(node, dict):
        for k, v in node.items():
            yield path + (k,)
            yield from leaves(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield path + (i,)
            yield from leaves(v, path + (i,))


def set_at(root, path, new):
    node = root
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new


def flip(data, flips):
    data = bytearray(data)
    for _ in range(flips):
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
    return bytes(data)


def make_case(i, folder):
    """Write case ``i`` in ``folder``; returns (loader, target)."""
    kind = i % 8
    if kind in (0, 1):  # a field of wavecraft's config.json
        shutil.copytree(base, folder)
        config = json.loads((folder / "config.json").read_text())
        for _ in range(rng.randint(1, 2)):
            set_at(config, rng.choice(list(leaves(config))), value())
        (folder / "config.json").write_text(json.dumps(config))
        return (load_lm_bundle if kind == 0 else load_codec), folder
    if kind == 2:  # transformers' EnCodec config.json (no weights: the config must be judged first)
        folder.mkdir()
        config = dict(HF_CODEC)
        fields = [k for k in config if k != "model_type"] + ["kernel_size", "compress", "norm_type",
                                                             "chunk_length_s", "overlap", "codebook_dim"]
        config[rng.choice(fields)] = value()
        (folder / "config.json").write_text(json.dumps(config))
        return load_codec, folder
    if kind in (3, 4):  # a field of xp.cfg
        folder.mkdir()
        package = dict(lm_package if kind == 3 else codec_package)
        root = yaml.safe_load(package["xp.cfg"])
        names = (["transformer_lm", "codebooks_pattern", "conditioners", "fuser", "dataset",
                  "classifier_free_guidance", "sample_rate", "channels"] if kind == 3
                 else ["encodec", "seanet", "rvq", "sample_rate", "channels", "compression_model"])
        for _ in range(rng.randint(1, 2)):
            set_at(root, rng.choice(list(leaves({k: root[k] for k in names if k in root}))), value())
        package["xp.cfg"] = yaml.safe_dump(root)
        torch.save(package, folder / "c.bin")
        return (load_lm_bundle if kind == 3 else load_codec), folder / "c.bin"
    if kind == 5:  # bit flips or a truncation of a .bin
        folder.mkdir()
        data = codec_bin if rng.random() < 0.5 else lm_bin
        loader = load_codec if data is codec_bin else load_lm_bundle
        data = flip(data, rng.choice([1, 4, 64])) if rng.random() < 0.6 else data[: rng.randrange(len(data))]
        (folder / "c.bin").write_bytes(data)
        return loader, folder / "c.bin"
    # safetensors: a corrupted header (bit flips, a changed length or field) or a truncated file
    shutil.copytree(base, folder)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    choice = rng.randrange(4)
    if choice == 0:
        data = data[:8] + flip(data[8:8 + length], rng.choice([1, 3])) + data[8 + length:]
    elif choice == 1:
        data = struct.pack("<Q", rng.choice([0, 1, length - 1, length + 1, 2 ** 40, 2 ** 64 - 1])) + data[8:]
    elif choice == 2:
        header = json.loads(data[8:8 + length])
        name = rng.choice([k for k in header if k != "__metadata__"])
        header[name][rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(
            ["I64", "BOOL", "F64", "XX", [10 ** 9, 10 ** 9], [0], [-1], [0, 2 ** 62], []])
        raw = json.dumps(header).encode()
        data = struct.pack("<Q", len(raw)) + raw + data[8 + length:]
    else:
        data = data[: rng.randrange(len(data))]
    path.write_bytes(data)
    return (load_lm_bundle if rng.random() < 0.5 else load_codec), folder


failures, outcomes = [], {"loaded": 0, "refused": 0}
start = time.monotonic()
for i in range(cases):
    folder = work / f"case{i}"
    loader, target = make_case(i, folder)
    try:
        loader(target)
        outcomes["loaded"] += 1
    except WavecraftError as e:
        outcomes["refused"] += 1
        if "\n" in str(e) or not str(e):
            failures.append(f"case {i}: multi-line or empty message {str(e)!r}")
    except Exception as e:  # noqa: BLE001 - exactly what the fuzz looks for
        failures.append(f"case {i}: {type(e).__name__}: {' '.join(str(e).split())[:200]} @ "
                        f"{traceback.extract_tb(e.__traceback__)[-1]}")
    shutil.rmtree(folder, ignore_errors=True)
peak = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"failures": failures, "peak_mb": int(peak) / 1024, "seconds": time.monotonic() - start,
                  **outcomes}))
'''


def test_loaders_survive_fuzzing(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(FUZZ), str(tmp_path), str(golden_dir()),
                             str(CASES)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == [], "\n".join(report["failures"])
    assert report["loaded"] + report["refused"] == CASES
    assert report["refused"] > CASES // 2  # the mutations reach the checks, not only harmless fields
    assert report["peak_mb"] < PEAK_BUDGET_MB, report
