"""Tests of the training data layer: manifests, sidecars, SegmentDataset and collate."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from wavecraft.data import AudioMeta, SegmentDataset, build_manifest, collate, read_manifest, write_manifest
from wavecraft.errors import AudioFileError, WavecraftError


def _tone(path: Path, seconds: float, rate: int = 16000, channels: int = 1, freq: float = 440.0) -> Path:
    """Write a sine tone; channel ``c`` has amplitude ``0.1 * (c + 1)`` so channel handling is visible."""
    t = np.arange(int(seconds * rate)) / rate
    data = np.stack([0.1 * (c + 1) * np.sin(2 * np.pi * freq * t) for c in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), rate)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    _tone(root / "a.wav", 1.0)
    (root / "a.txt").write_text("  a calm sine\n")
    _tone(root / "sub" / "b.flac", 2.0, rate=44100, channels=2)
    (root / "sub" / "b.json").write_text(json.dumps({"caption": "stereo tone", "tags": ["x"], "bpm": 120}))
    _tone(root / "sub" / "deep" / "c.wav", 3.0)
    (root / "sub" / "deep" / "c.json").write_text(json.dumps({"genre": "ambient", "key": "A"}))
    (root / "broken.wav").write_bytes(b"RIFF not really a wav file")
    (root / "notes.md").write_text("not audio")
    return root


def test_build_manifest_reads_audio_and_sidecars(tree: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        metas = build_manifest(tree)
    assert [Path(m.path).relative_to(tree.resolve()).as_posix() for m in metas] == [
        "a.wav",
        "sub/b.flac",
        "sub/deep/c.wav",
    ]
    assert all(Path(m.path).is_absolute() for m in metas)
    a, b, c = metas
    assert (a.sample_rate, a.channels, a.description, a.info) == (16000, 1, "a calm sine", {})
    assert a.duration == pytest.approx(1.0)
    assert (b.sample_rate, b.channels, b.description) == (44100, 2, "stereo tone")
    assert b.info == {"tags": ["x"], "bpm": 120}
    assert c.description is None and c.info == {"genre": "ambient", "key": "A"}
    assert "skipped 1 unreadable" in caplog.text and "broken.wav" in caplog.text
    assert build_manifest(tree, workers=3) == metas
    assert [m.path for m in build_manifest(tree, min_duration=1.5)] == [b.path, c.path]
    assert [m.path for m in build_manifest(tree, exts=("flac",))] == [b.path]


@pytest.mark.parametrize("name", ["m.jsonl", "m.jsonl.gz"])
def test_manifest_round_trip(tree: Path, tmp_path: Path, name: str) -> None:
    metas = build_manifest(tree)
    path = tmp_path / name
    write_manifest(path, metas)
    assert read_manifest(path) == metas
    if name.endswith(".gz"):
        with gzip.open(path, "rt") as f:
            assert f.readline().startswith("{")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left behind


def test_relative_paths_resolve_against_manifest_folder(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metas = build_manifest(tree)
    path = tree / "manifests" / "train.jsonl"
    path.parent.mkdir()
    write_manifest(path, metas, relative=True)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["path"] == "../a.wav"
    monkeypatch.chdir(tree / "sub")  # the working directory must not matter
    assert [Path(m.path).resolve() for m in read_manifest(path)] == [Path(m.path) for m in metas]


def test_audiocraft_record_extra_fields(tmp_path: Path) -> None:
    record = {
        "path": "/x/song.wav",
        "duration": 12.5,
        "sample_rate": 32000,
        "amplitude": None,
        "weight": 2.0,
        "info_path": "/x/song.json",
    }
    meta = AudioMeta.from_dict(record)
    assert (meta.path, meta.duration, meta.sample_rate, meta.channels, meta.description) == (
        "/x/song.wav",
        12.5,
        32000,
        1,
        None,
    )
    assert meta.info == {"amplitude": None, "weight": 2.0, "info_path": "/x/song.json"}
    assert AudioMeta.from_dict(meta.to_dict()) == meta


def test_bad_manifest_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"path": "/a.wav", "duration": 1, "sample_rate": 16000})
    path.write_text(f"{good}\n\n{{not json\n")
    with pytest.raises(WavecraftError, match=r"bad\.jsonl, line 3"):
        read_manifest(path)
    path.write_text(f"{good}\n{json.dumps({'path': '/b.wav', 'duration': 1})}\n")
    with pytest.raises(WavecraftError, match=r"line 2.*sample_rate"):
        read_manifest(path)
    with pytest.raises(WavecraftError, match="cannot read manifest"):
        read_manifest(tmp_path / "missing.jsonl")


@pytest.fixture
def metas(tree: Path) -> list[AudioMeta]:
    return build_manifest(tree)


def test_segments_shape_rate_channels(metas: list[AudioMeta]) -> None:
    ds = SegmentDataset(metas, segment_duration=0.5, sample_rate=8000, channels=2, num_samples=12)
    assert len(ds) == 12
    for i in range(len(ds)):
        wav, info = ds[i]
        assert wav.shape == (2, 4000) and wav.dtype == torch.float32
        assert (info.sample_rate, info.channels, info.total_frames, info.n_frames) == (8000, 2, 4000, 4000)
        assert 0 <= info.seek_time <= info.meta.duration - 0.5 + 1e-9
        if info.meta.channels == 1:  # mono upmixed by replication
            assert torch.equal(wav[0], wav[1])
    with pytest.raises(IndexError):
        ds[12]


def test_segments_are_deterministic_per_seed(metas: list[AudioMeta]) -> None:
    def picks(seed: int) -> list[tuple[str, float]]:
        ds = SegmentDataset(metas, 0.5, 16000, 1, num_samples=8, seed=seed)
        return [(info.meta.path, info.seek_time) for _, info in (ds[i] for i in range(8))]

    assert picks(0) == picks(0)
    assert picks(0) != picks(1)
    a, b = SegmentDataset(metas, 0.5, 16000, 1, seed=3), SegmentDataset(metas, 0.5, 16000, 1, seed=3)
    assert torch.equal(a[1][0], b[1][0])


def test_short_file_is_padded(metas: list[AudioMeta]) -> None:
    # a.wav is 1 s: kept for a 1.5 s segment (>= 0.5 * 1.5 s), so it is read from 0 and zero-padded.
    ds = SegmentDataset(metas[:1], segment_duration=1.5, sample_rate=16000, channels=1, num_samples=2)
    wav, info = ds[0]
    assert info.seek_time == 0.0 and wav.shape == (1, 24000)
    assert info.n_frames == 16000 < info.total_frames == 24000
    assert torch.count_nonzero(wav[:, info.n_frames :]) == 0
    short, info = SegmentDataset(metas[:1], 1.5, 16000, 1, pad=False)[0]
    assert short.shape == (1, 16000) and info.total_frames == info.n_frames == 16000
    with pytest.raises(WavecraftError, match="too short"):
        SegmentDataset(metas[:1], segment_duration=3.0, sample_rate=16000, channels=1)


def test_whole_file_mode(metas: list[AudioMeta]) -> None:
    ds = SegmentDataset(metas, segment_duration=None, sample_rate=16000, channels=1)
    assert len(ds) == 3
    lengths = [ds[i][0].shape[-1] for i in range(3)]
    assert lengths == [16000, 32000, 48000]
    stereo, info = ds[1]
    assert info.meta.channels == 2 and stereo.shape[0] == 1 and info.n_frames == info.total_frames == 32000


def test_file_choice_is_weighted_by_duration(metas: list[AudioMeta]) -> None:
    one, three = metas[0], metas[2]  # 1 s and 3 s
    ds = SegmentDataset([one, three], 0.5, 16000, 1, num_samples=2000)
    rng_counts = {one.path: 0, three.path: 0}
    for i in range(len(ds)):  # draw the picks only: reading 2000 segments would be slow for no gain
        meta, _ = ds._pick(np.random.default_rng([ds.seed, i]))
        rng_counts[meta.path] += 1
    assert 2.4 < rng_counts[three.path] / rng_counts[one.path] < 3.7
    uniform = SegmentDataset([one, three], 0.5, 16000, 1, sample_on_duration=False)
    ratio = sum(uniform._pick(np.random.default_rng([0, i]))[0] is three for i in range(2000)) / 1000
    assert 0.85 < ratio < 1.15


def test_unreadable_file_is_retried_then_raises(
    metas: list[AudioMeta], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = AudioMeta(str(tmp_path / "gone.wav"), duration=1.0, sample_rate=16000)
    ds = SegmentDataset([gone, metas[0]], 0.5, 16000, 1, num_samples=20, max_retries=10)
    with caplog.at_level(logging.WARNING):
        assert all(ds[i][1].meta is metas[0] for i in range(20))  # picked about half the time, then replaced
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "gone.wav" in r.getMessage()]
    assert len(warnings) == 1  # once per file, however often it is picked
    with pytest.raises(AudioFileError, match="4 attempts"):
        SegmentDataset([gone], 0.5, 16000, 1)[0]


def test_description_to_condition_attributes(metas: list[AudioMeta]) -> None:
    _, info = SegmentDataset(metas[:1], 0.5, 16000, 1)[0]
    attributes = info.to_condition_attributes()
    assert attributes.text == {"description": "a calm sine"} and attributes.wav == {}


def test_collate(metas: list[AudioMeta]) -> None:
    fixed = SegmentDataset(metas, 1.5, 16000, 2, num_samples=4)
    wav, lengths, infos = collate([fixed[i] for i in range(4)])
    assert wav.shape == (4, 2, 24000) and len(infos) == 4
    assert lengths.tolist() == [i.n_frames for i in infos]
    whole = SegmentDataset(metas, None, 16000, 1)
    wav, lengths, infos = collate([whole[0], whole[2]])
    assert wav.shape == (2, 1, 48000) and lengths.tolist() == [16000, 48000]
    assert torch.count_nonzero(wav[0, :, 16000:]) == 0
    bare = SegmentDataset(metas, None, 16000, 1, return_info=False)
    wav, lengths, infos = collate([bare[0], bare[1]])
    assert infos is None and lengths.tolist() == [16000, 32000]


def test_cli_data_manifest(tmp_path, capsys):
    from wavecraft.cli import main

    folder = tmp_path / "audio"
    (folder / "sub").mkdir(parents=True)
    t = np.arange(16000) / 16000
    sf.write(folder / "a.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    sf.write(folder / "sub" / "b.flac", 0.3 * np.sin(2 * np.pi * 220 * t[:8000]), 16000)
    (folder / "sub" / "b.txt").write_text("a low hum\n")
    out = tmp_path / "train.jsonl"
    assert main(["data", "manifest", str(folder), "-o", str(out), "--relative"]) == 0
    assert "2 files" in capsys.readouterr().out
    metas = read_manifest(out)
    assert [m.description for m in metas] == [None, "a low hum"] and metas[1].duration == pytest.approx(0.5)
    assert main(["data", "manifest", str(tmp_path / "nope"), "-o", str(out)]) == 1
    assert "not a folder" in capsys.readouterr().err
