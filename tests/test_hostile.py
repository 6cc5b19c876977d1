"""A hostile corpus: every damaged, odd or awkward file is skipped with a reason or handled; no good
file is lost and nothing crashes."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import write_tone

from genre_ray.data.collection import folder_manifest
from genre_ray.features import FeatureSettings, pipeline

SETTINGS = FeatureSettings(kinds=("logmel",), clip_seconds=1.0, clip_overlap=0.0, n_mels=32)


def _hostile(root: Path, good: Path) -> dict[str, str | None]:
    """Write the corpus into ``root/<genre>/``; returns file -> expected skip reason (None: usable)."""
    a, b = root / "rock", root / "jazz"
    shutil.copytree(good / sorted(p.name for p in good.iterdir() if p.is_dir())[0], a)
    shutil.copytree(good / sorted(p.name for p in good.iterdir() if p.is_dir())[1], b)
    expected: dict[str, str | None] = {str(p): None for p in [*a.glob("*.wav"), *b.glob("*.wav")]}
    tone = write_tone(a / "tone.wav", seconds=3.0)
    truncated = a / "truncated.wav"
    truncated.write_bytes(tone.read_bytes()[: len(tone.read_bytes()) // 3])
    expected[str(truncated)] = "usable-or-skipped"
    header_only = a / "header only.wav"
    header_only.write_bytes(tone.read_bytes()[:44])
    expected[str(header_only)] = "skip"
    (a / "zero.wav").write_bytes(b"")
    expected[str(a / "zero.wav")] = "skip"
    (a / "random.mp3").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    expected[str(a / "random.mp3")] = "skip"
    (a / "text.wav").write_text("RIFF? no, just text")
    expected[str(a / "text.wav")] = "skip"
    sf.write(a / "silence.wav", np.zeros(22050 * 2, np.float32), 22050)
    expected[str(a / "silence.wav")] = "skip"
    sf.write(a / "nan.wav", np.full(22050 * 2, np.nan, np.float32), 22050, subtype="FLOAT")
    expected[str(a / "nan.wav")] = "skip"
    sf.write(a / "one sample.wav", np.array([0.5], np.float32), 22050)
    expected[str(a / "one sample.wav")] = "skip"
    expected[str(write_tone(b / "eight channels 96k.wav", seconds=2.0, sr=96000, channels=8))] = None
    expected[str(write_tone(b / "mono 8k.WAV", seconds=2.0, sr=8000))] = None
    expected[str(write_tone(b / "Ünïcödé näme ♪.flac", seconds=2.0, subtype="PCM_16", fmt="FLAC"))] = None
    os.symlink(root, b / "loop")  # a symlink loop back to the top
    return expected


def test_hostile_corpus_zero_crashes_zero_good_files_lost(tiny_demo: Path, tmp_path: Path,
                                                          ray_session: object) -> None:
    root = tmp_path / "hostile"
    expected = _hostile(root, tiny_demo)
    manifest, scan_skipped = folder_manifest(root)
    table = pipeline.featurize(manifest, SETTINGS, tmp_path / "cache", batch_files=4)
    skipped = pd.concat([scan_skipped, table.skipped], ignore_index=True)
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert skipped["reason"].notna().all() and (skipped["detail"].str.len() > 10).all()
    by_sha = dict(zip(pipeline.content_hashes(manifest["path"].tolist()), manifest["path"], strict=True))
    featurized = {by_sha[s] for s in set(table.clips["sha"])}
    for path, want in expected.items():
        if want is None:
            assert path in featurized, f"good file lost: {path}"
        elif want == "skip":
            assert path in reasons, f"not skipped: {path}"
        else:
            assert (path in featurized) != (path in reasons), f"neither used nor reported: {path}"
    assert all("loop" not in p for p in manifest["path"])  # the loop was not followed
    details = dict(zip(skipped["path"], skipped["detail"], strict=True))
    assert details[str(root / "rock" / "random.mp3")].startswith(
        "random.mp3 is not an audio file the decoder can read (format not recognised)")


def test_unreadable_file_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for genre in ("a", "b"):
        write_tone(tmp_path / genre / "ok.wav")
    locked = write_tone(tmp_path / "a" / "locked.wav")
    real_info = sf.info

    def info(path: str, *args: object, **kwargs: object) -> object:
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_info(path, *args, **kwargs)

    monkeypatch.setattr(sf, "info", info)  # root reads any file, so the refusal is simulated
    manifest, skipped = folder_manifest(tmp_path)
    assert str(locked) in set(skipped["path"]) and len(manifest) == 2
    assert "ermission" in skipped.set_index("path").loc[str(locked), "detail"]
