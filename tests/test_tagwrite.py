"""Safe genre-tag writing: audio untouched, tags read back, dry run, crash safety, byte-identical undo."""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genre_ray.data.tags import read_tags
from genre_ray.serving import tagwrite
from genre_ray.serving.tagwrite import TagWriteError, UndoLog, apply_plan, plan_tags, undo, write_genre

SR = 22050
# name -> (soundfile format, subtype); MP3 only where this libsndfile can write it
FORMATS = {"song.wav": ("WAV", "PCM_16"), "song.flac": ("FLAC", "PCM_16"), "song.ogg": ("OGG", "VORBIS"),
           "song.aiff": ("AIFF", "PCM_16")}
if "MP3" in sf.available_formats():
    FORMATS["song.mp3"] = ("MP3", "MPEG_LAYER_III")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, fmt: str, subtype: str, seconds: float = 1.0, freq: float = 330.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * np.random.default_rng(1).standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([wave, wave[::-1]], axis=1).astype(np.float32), SR, format=fmt, subtype=subtype)
    return path


def _decoded(path: Path) -> np.ndarray:
    data, _ = sf.read(path, dtype="float64", always_2d=True)
    return data


def _wav_data_chunk(path: Path) -> bytes:
    """The raw bytes of a WAV file's ``data`` chunk (the samples as stored)."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
    pos = 12
    while pos + 8 <= len(raw):
        cid, size = raw[pos:pos + 4], struct.unpack("<I", raw[pos + 4:pos + 8])[0]
        if cid == b"data":
            return raw[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".genre-tmp")]


@pytest.fixture()
def library(tmp_path: Path) -> dict[str, Path]:
    return {name: _write(tmp_path / "lib" / name, *spec) for name, spec in FORMATS.items()}


def test_tagging_keeps_the_audio_and_undo_restores_every_byte(library: dict[str, Path],
                                                               tmp_path: Path) -> None:
    before = {n: (_sha(p), _decoded(p)) for n, p in library.items()}
    wav_data = _wav_data_chunk(library["song.wav"])
    log = UndoLog.new(tmp_path / "undo")
    for name, path in library.items():
        write_genre(path, "Jazz", log)
        assert read_tags(path).genres == ("Jazz",), name
        assert _sha(path) != before[name][0], name
        after = _decoded(path)
        assert after.dtype == before[name][1].dtype and np.array_equal(after, before[name][1]), name
    assert _wav_data_chunk(library["song.wav"]) == wav_data  # the stored samples, byte for byte
    assert not _leftovers(library["song.wav"].parent)
    results = undo(log.path)
    assert set(results["status"]) == {"restored"} and len(results) == len(library)
    assert {n: _sha(p) for n, p in library.items()} == {n: v[0] for n, v in before.items()}
    again = undo(log.folder)  # a second undo finds the originals in place
    assert set(again["status"]) == {"already_original"}


def test_an_existing_genre_is_replaced_and_restored(tmp_path: Path) -> None:
    import mutagen

    path = _write(tmp_path / "a.flac", "FLAC", "PCM_16")
    audio = mutagen.File(path)  # libsndfile writes a Vorbis comment block already
    audio["genre"], audio["title"] = ["Polka", "Metal?"], ["A song"]
    audio.save()
    original = _sha(path)
    log = UndoLog.new(tmp_path / "undo")
    write_genre(path, "Rock", log)
    tags = mutagen.File(path).tags
    assert tags["genre"] == ["Rock"] and tags["title"] == ["A song"]
    undo(log.path)
    assert _sha(path) == original


def _plan(paths: list[Path], confidence: float = 0.9) -> pd.DataFrame:
    return plan_tags(pd.DataFrame({"path": [str(p) for p in paths], "genre": "Jazz", "confidence": confidence,
                                   "error": None}), threshold=0.6)


def test_plan_keeps_confident_predictions_only() -> None:
    preds = pd.DataFrame({"path": ["a", "b", "c", "d"], "genre": ["rock", "jazz", None, "pop"],
                          "confidence": [0.9, 0.5, np.nan, 0.6],
                          "error": [None, None, "undecodable: x", None]})
    plan = plan_tags(preds, threshold=0.6)
    assert plan["action"].tolist() == ["tag", "skip", "skip", "tag"]
    assert plan["reason"].tolist() == ["", "below_threshold", "prediction_failed", ""]
    with pytest.raises(ValueError, match="threshold"):
        plan_tags(preds, threshold=1.5)


def test_dry_run_writes_nothing(library: dict[str, Path], tmp_path: Path) -> None:
    stats = {n: (os.stat(p).st_mtime_ns, _sha(p)) for n, p in library.items()}
    results, log = apply_plan(_plan(list(library.values())))
    assert log is None and set(results["status"]) == {"would_write"}
    assert {n: (os.stat(p).st_mtime_ns, _sha(p)) for n, p in library.items()} == stats
    assert sorted(p.name for p in (tmp_path / "lib").iterdir()) == sorted(library)


def test_apply_writes_and_skips_files_that_have_a_genre(library: dict[str, Path], tmp_path: Path) -> None:
    paths = list(library.values())
    write_genre(paths[0], "Blues", UndoLog.new(tmp_path / "first"))
    results, log = apply_plan(_plan(paths), tmp_path / "undo")
    status = dict(zip(results["path"], results["status"], strict=True))
    assert status[str(paths[0])] == "skipped" and all(status[str(p)] == "written" for p in paths[1:])
    assert read_tags(paths[0]).genres == ("Blues",)
    assert log is not None and len(log.entries()) == len(paths) - 1
    results, _ = apply_plan(_plan(paths[:1]), tmp_path / "undo", overwrite=True)
    assert results["status"].tolist() == ["written"] and read_tags(paths[0]).genres == ("Jazz",)


def test_a_file_changed_since_its_prediction_is_not_tagged(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.wav", "WAV", "PCM_16")
    st = os.stat(path)
    preds = pd.DataFrame({"path": [str(path)], "genre": ["jazz"], "confidence": [0.9], "error": [None],
                          "size": [st.st_size + 1], "mtime_ns": [st.st_mtime_ns]})
    results, _ = apply_plan(plan_tags(preds, 0.5), tmp_path / "undo")
    assert results["status"].tolist() == ["skipped"] and "changed_since_prediction" in results["detail"][0]


def test_a_crash_before_the_replace_leaves_the_original(library: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = library["song.flac"]
    original = _sha(path)

    def boom(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tagwrite.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_genre(path, "Jazz", UndoLog.new(tmp_path / "undo"))
    assert _sha(path) == original and not _leftovers(path.parent)
    monkeypatch.undo()
    results = undo(tmp_path / "undo" / next(iter(os.listdir(tmp_path / "undo"))))
    assert results["status"].tolist() == ["already_original"]  # the entry was logged; nothing to restore


def test_a_crash_inside_mutagen_leaves_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "lib" / "a.wav", "WAV", "PCM_16")
    original = _sha(path)

    def half_write(target: Path, genre: str) -> None:
        with open(target, "r+b") as fh:  # the copy is left truncated, as by a crash mid-save
            fh.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(tagwrite, "_set_genre", half_write)
    with pytest.raises(KeyboardInterrupt):
        write_genre(path, "Jazz", UndoLog.new(tmp_path / "undo"))
    assert _sha(path) == original and not _leftovers(path.parent)


def test_a_copy_whose_audio_changed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "lib" / "a.wav", "WAV", "PCM_16")
    original, real = _sha(path), tagwrite._set_genre

    def damaging(target: Path, genre: str) -> None:
        real(target, genre)
        raw = bytearray(Path(target).read_bytes())
        raw[raw.index(b"data") + 8 + 100] ^= 0xFF  # one sample in the data chunk
        Path(target).write_bytes(bytes(raw))

    monkeypatch.setattr(tagwrite, "_set_genre", damaging)
    with pytest.raises(TagWriteError, match="changed its decoded audio"):
        write_genre(path, "Jazz", UndoLog.new(tmp_path / "undo"))
    assert _sha(path) == original and not _leftovers(path.parent)


def test_an_unsupported_format_is_refused_untouched(tmp_path: Path) -> None:
    path = _write(tmp_path / "lib" / "a.au", "AU", "PCM_16")
    original = _sha(path)
    results, log = apply_plan(_plan([path]), tmp_path / "undo")
    assert results["status"].tolist() == ["failed"] and "unsupported_format" in results["detail"][0]
    assert log is None and not any((tmp_path / "undo").iterdir())  # no empty undo folder left
    assert _sha(path) == original and not _leftovers(path.parent)


def test_undo_refuses_a_file_changed_since_tagging(library: dict[str, Path], tmp_path: Path) -> None:
    wav, flac = library["song.wav"], library["song.flac"]
    original_flac = _sha(flac)
    log = UndoLog.new(tmp_path / "undo")
    write_genre(wav, "Jazz", log)
    write_genre(flac, "Jazz", log)
    with open(wav, "ab") as fh:  # edited by someone else after tagging
        fh.write(b"\0\0")
    edited = _sha(wav)
    results = undo(log.path).set_index("path")
    assert results.loc[str(wav), "status"] == "refused"
    assert "changed since tagging" in results.loc[str(wav), "detail"]
    assert results.loc[str(flac), "status"] == "restored"
    assert _sha(wav) == edited and _sha(flac) == original_flac


def test_undo_without_a_log_says_so_and_creates_nothing(tmp_path: Path) -> None:
    for wrong in (tmp_path, tmp_path / "nothing.jsonl"):
        with pytest.raises(FileNotFoundError, match="no undo log"):
            undo(wrong)
    assert not list(tmp_path.iterdir())
