"""Offline corpus builders: render-scores (music21 + tinysoundfont), render-grooves (MMA) and import."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wavecraft.cli import main
from wavecraft.data import build_manifest, read_manifest
from wavecraft.data.captions import clean_name, join_words, key_name, tempo_word
from wavecraft.errors import WavecraftError

pretty_midi = pytest.importorskip("pretty_midi")
pytest.importorskip("tinysoundfont")

from wavecraft.data import grooves, importer, scores  # noqa: E402 - after the optional-dependency checks
from wavecraft.data.importer import import_folder  # noqa: E402
from wavecraft.data.midi_render import MidiSynth, end_time, retime, transpose  # noqa: E402

RATE = 16000


def _sidecars(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


def _check_caption(meta: dict) -> None:
    caption = meta["description"]
    for name in set(meta["instruments"]):
        assert name in caption, (name, caption)
    assert f"{meta['bpm']} bpm" in caption and meta["tempo"] in caption
    assert meta["tempo"] == tempo_word(meta["bpm"])
    if meta.get("key"):
        assert meta["key"] in caption and meta["key"].endswith(meta["mode"])
    assert meta["genre"] in caption


# ---------------------------------------------------------------------------------------------- helpers


def test_caption_helpers() -> None:
    assert key_name(6, "minor") == "F# minor" and key_name(10, "major") == "Bb major"
    assert key_name(-1, "major") == "B major"
    assert [tempo_word(b) for b in (60, 100, 140)] == ["slow", "moderate", "fast"]
    assert join_words(["drums", "bass", "drums", "guitar"]) == "drums, bass and guitar"
    assert clean_name("DoorOpen_metal-03.ogg") == "door open metal"
    assert clean_name("0snd") == "snd"
    assert importer.make_caption(Path("footsteps/footsteps_1.wav"), {}, "sfx") == "sound effect: footsteps"
    assert importer.make_caption(Path("props/Fire01a.ogg"), {"title": "Fire01a", "genre": "Game"}, None) == (
        "props, fire, Game")


def _tiny_midi(bpm: float = 120.0) -> pretty_midi.PrettyMIDI:
    midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
    for program, pitches in ((0, (72, 76)), (42, (48, 43))):
        inst = pretty_midi.Instrument(program=program)
        for i, pitch in enumerate(pitches):
            inst.notes.append(pretty_midi.Note(velocity=90, pitch=pitch, start=i * 0.5, end=i * 0.5 + 0.5))
        midi.instruments.append(inst)
    return midi


def test_midi_edits_and_synth() -> None:
    midi = _tiny_midi(120.0)
    retime(midi, 60.0)  # half the tempo: twice as long
    assert end_time(midi) == pytest.approx(2.0)
    assert midi.get_tempo_changes()[1][0] == pytest.approx(60.0)
    transpose(midi, -2)
    assert [n.pitch for n in midi.instruments[0].notes] == [70, 74]
    synth = MidiSynth(sample_rate=RATE)
    audio = synth.render(midi, tail=0.5)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == round(2.5 * RATE)
    assert np.sqrt(np.mean(audio**2)) > 1e-3
    cut = synth.render(midi, max_duration=1.0)
    assert len(cut) == RATE and abs(cut[-1]) < 1e-3  # faded out at the cut


# ---------------------------------------------------------------------------------------------- scores


def test_plan_works_is_deterministic_and_extends() -> None:
    def work(coll: str, i: int) -> scores.CorpusWork:
        return scores.CorpusWork(f"{coll}/{i}.abc", i, f"t{i}", None, coll, 1)

    works = {"big": [work("big", i) for i in range(400)], "small": [work("small", i) for i in range(4)]}
    a = scores.plan_works(works, 40, seed=3)
    assert a == scores.plan_works(works, 40, seed=3)
    assert a[:10] == scores.plan_works(works, 10, seed=3)  # a larger run extends a smaller one
    assert a != scores.plan_works(works, 40, seed=4)
    colls = [coll for coll, _ in scores.plan_works(works, 200, seed=3)]
    assert 8 <= colls.count("small") <= 30  # sqrt weighting (2 vs 20): the small collection still shows up
    firsts = [cands[0] for coll, cands in a if coll == "big"]
    assert len(set(firsts)) == len(firsts)  # no repeats within a collection


def test_genres_and_performances() -> None:
    def genre(path: str, title: str, coll: str, ts: str | None = None, parts: int = 1) -> str:
        return scores.genre_of(scores.CorpusWork(path, None, title, None, coll, parts), ts, parts)

    assert genre("bach/bwv66.6.mxl", "", "bach", "4/4", 4) == "chorale"
    assert genre("essenFolksong/han2.abc", "x", "essenFolksong") == "Chinese folk song"
    assert genre("oneills1850/0001-0050.abc", "The Fox", "oneills1850", "6/8") == "Irish fiddle jig"
    assert genre("ryansMammoth/x.abc", "Almack's -- Hornpipe", "ryansMammoth", "2/2") == "hornpipe"
    assert genre("palestrina/Agnus.krn", "Agnus", "palestrina", "4/2", 5) == "renaissance mass movement"
    rng = random.Random(0)
    for parts in (1, 2, 4, 6):
        for _ in range(20):
            perf = scores.choose_performance(parts, rng)
            assert len(perf.programs) == len(perf.instruments) == parts
            assert all(name in perf.phrase for name in set(perf.instruments)), perf


@pytest.fixture(scope="module")
def score_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("scores")
    report = scores.render_scores(out, 2, sample_rate=RATE, seed=0, sources=["chorales", "essen"], max_duration=3.0)
    return out, report


def test_render_scores(score_dir: tuple[Path, object]) -> None:
    out, report = score_dir
    assert report.rendered == 2 and report.failed == 0 and report.audio_seconds > 0
    metas = _sidecars(out)
    assert len(metas) == 2
    for stem, meta in metas.items():
        audio, rate = sf.read(out / f"{stem}.wav", dtype="float32")
        assert rate == RATE and audio.ndim == 1
        assert 0.5 < len(audio) / RATE <= 3.0
        assert np.sqrt(np.mean(audio**2)) > 1e-3  # not silent
        assert meta["collection"] in ("bach", "essenFolksong") and stem.endswith(meta["collection"])
        assert meta["soundfont"] == "TimGM6mb.sf2" and "GPL-2" in meta["soundfont_license"]
        assert len(meta["programs"]) == meta["parts"] and 60 <= meta["bpm"] <= 160 and abs(meta["transpose"]) <= 5
        if meta["collection"] == "essenFolksong":
            assert "non-commercial" in meta["license"]
        _check_caption(meta)


def test_render_scores_resumes_and_manifest(score_dir: tuple[Path, object], capsys: pytest.CaptureFixture) -> None:
    out, _ = score_dir
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = scores.render_scores(out, 2, sample_rate=RATE, seed=0, sources=["chorales", "essen"], max_duration=3.0)
    assert (again.rendered, again.skipped) == (0, 2)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix != ".jsonl"} == {
        k: v for k, v in stamps.items() if not k.endswith(".jsonl")}
    captions = {Path(k).stem: v["description"] for k, v in _sidecars(out).items()}
    written = read_manifest(out / "manifest.jsonl")
    assert {Path(m.path).stem: m.description for m in written} == captions
    assert {Path(m.path).stem: m.description for m in build_manifest(out)} == captions
    assert all(m.info["generator"] == "wavecraft data render-scores" for m in written)
    target = out.parent / "scores_manifest.jsonl"
    assert main(["data", "manifest", str(out), "-o", str(target)]) == 0
    assert "2 with captions" in capsys.readouterr().out


def test_corpus_works_spans_the_corpus() -> None:
    works = scores.corpus_works()
    for coll in ("bach", "essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "palestrina"):
        assert len(works[coll]) > 100
    assert set(scores.corpus_works(["fiddle"])) == {"oneills1850", "ryansMammoth", "airdsAirs"}
    with pytest.raises(WavecraftError, match="unknown score source 'nope'"):
        scores.corpus_works(["nope"])


# ---------------------------------------------------------------------------------------------- grooves


def test_chords_and_mma_text() -> None:
    assert grooves.chord_name("V7", 0, flats=False) == "G7"
    assert grooves.chord_name("iiø", 9, flats=False) == "Bm7b5"
    assert grooves.chord_name("IV", 5, flats=True) == "Bb"
    assert grooves.chord_name("bVI", 9, flats=False) == "F"
    styles = grooves.resolve_styles(["bossanova,waltz"])
    assert [s.file for s in styles] == ["bossanova", "waltz"]
    assert len(grooves.STYLES) >= 30
    plan = grooves.plan_groove(0, seed=1, styles=styles, bars=8)
    assert plan == grooves.plan_groove(0, seed=1, styles=styles, bars=8)
    text = grooves.mma_text(plan)
    assert f"Tempo {plan.bpm}\n" in text and f"Use stdlib/{plan.style.file}\n" in text
    assert f"Groove {plan.groove}\n" in text
    bars = [line for line in text.splitlines() if line[:1].isdigit()]
    assert bars == [f"{i} {c}" for i, c in enumerate(plan.chords, start=1)] and len(bars) == 8
    blues = grooves.plan_groove(0, seed=0, styles=grooves.resolve_styles(["blues"]), bars=12)
    assert len(set(blues.chords)) >= 3 and all(c.endswith("7") for c in blues.chords)


def test_grooves_without_mma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(grooves.shutil, "which", lambda name: None)
    with pytest.raises(WavecraftError) as info:
        grooves.render_grooves(tmp_path / "g", 1)
    assert str(info.value) == grooves.MMA_MISSING
    assert "apt-get install mma" in str(info.value) and "install_corpus_tools.sh" in str(info.value)
    assert main(["data", "render-grooves", str(tmp_path / "g"), "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert err == f"wavecraft: error: {grooves.MMA_MISSING}\n"
    with pytest.raises(WavecraftError, match="unknown groove style 'nope'"):
        grooves.render_grooves(tmp_path / "g", 1, styles=["nope"])


@pytest.mark.skipif(shutil.which("mma") is None, reason="the mma executable is not installed")
def test_render_grooves_with_mma(tmp_path: Path) -> None:
    report = grooves.render_grooves(tmp_path, 1, sample_rate=RATE, styles=["bossanova"], bars=4,
                                    max_duration=3.0)
    assert report.rendered == 1
    (stem, meta), = _sidecars(tmp_path).items()
    assert (tmp_path / f"{stem}.mma").is_file()
    audio, rate = sf.read(tmp_path / f"{stem}.wav", dtype="float32")
    assert rate == RATE and len(audio) <= 3 * RATE and np.sqrt(np.mean(audio**2)) > 1e-3
    caption = meta["description"]
    assert "bossa nova" in caption and meta["key"] in caption and f"{meta['bpm']} bpm" in caption
    assert meta["instruments"][0] == "drums" and len(meta["instruments"]) >= 2
    assert join_words(meta["instruments"]) in caption
    assert read_manifest(tmp_path / "manifest.jsonl")[0].description == caption


# ---------------------------------------------------------------------------------------------- import


def _recordings(root: Path) -> Path:
    src = root / "src"
    t = np.arange(RATE // 2) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    (src / "sound" / "footsteps").mkdir(parents=True)
    (src / "sound" / "doors").mkdir(parents=True)
    sf.write(src / "sound" / "footsteps" / "metal_step03.wav", tone, RATE)
    with sf.SoundFile(src / "sound" / "doors" / "DoorOpen2.ogg", "w", RATE, 1, format="OGG") as f:
        f.title, f.artist = "Creaky door opening", "Jane Doe"
        f.write(np.stack([tone, tone], axis=1)[:, 0])
    doc = src / "usr" / "share" / "doc" / "fake-sounds"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("License: GPL-2+\n")
    (src / "README.txt").write_text("not audio")
    return src


def test_import_folder(tmp_path: Path) -> None:
    src = _recordings(tmp_path)
    report = import_folder(src, manifest=tmp_path / "m.jsonl", kind="sfx", workers=1)
    assert report.files == 2 and report.captioned == 2
    metas = {Path(m.path).name: m for m in read_manifest(tmp_path / "m.jsonl")}
    assert metas["metal_step03.wav"].description == "sound effect: footsteps, metal step"
    door = metas["DoorOpen2.ogg"]
    assert door.description == "sound effect: doors, Creaky door opening, by Jane Doe"
    assert door.info["category"] == "doors" and door.info["tags"]["artist"] == "Jane Doe"
    assert door.info["license_file"].endswith("fake-sounds/copyright")
    assert not list(src.rglob("*.json"))  # nothing written next to the sources

    out = tmp_path / "out"
    report = import_folder(src, out, kind="music", convert_rate=8000, mono=True, workers=2)
    assert report.copied == 2 and report.manifest == out / "manifest.jsonl"
    converted = read_manifest(out / "manifest.jsonl")
    assert {m.sample_rate for m in converted} == {8000} and all(m.path.endswith(".wav") for m in converted)
    assert (out / "sound" / "doors" / "DoorOpen2.json").is_file() and (out / "fake-sounds.copyright").is_file()
    by_name = {Path(m.path).stem: m.description for m in build_manifest(out)}
    assert by_name["metal_step03"] == "music: metal step, footsteps"
    again = import_folder(src, out, kind="music", convert_rate=8000, mono=True, workers=1)
    assert (again.copied, again.reused) == (0, 2)


def test_import_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "import", str(tmp_path / "missing"), "-o", str(tmp_path / "m.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wavecraft: error: not a folder:")
    src = _recordings(tmp_path)
    assert main(["data", "import", str(src), "--copy"]) == 1
    assert "need an output folder" in capsys.readouterr().err
    assert main(["data", "import", str(src), "--output-dir", str(tmp_path / "o"), "--kind", "sfx"]) == 0
    assert "2 files" in capsys.readouterr().out
