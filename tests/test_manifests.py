"""CSV manifests and FMA's tracks.csv: paths, optional columns, subsets, and every refused case."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_tone

from genre_ray.data.collection import MANIFEST_COLUMNS, SKIPPED_COLUMNS, CollectionError
from genre_ray.data.manifests import csv_manifest, fma_audio_path, fma_manifest, unique_song_ids
from genre_ray.data.splits import assign_splits


def tone(path: Path, mp3: bool = False) -> Path:
    if mp3:
        return write_tone(path, seconds=0.6, sr=16000, subtype="MPEG_LAYER_III", fmt="MP3")
    return write_tone(path, seconds=0.6, sr=16000, fmt="WAV")


# ------------------------------------------------------------------------------------------------- CSV

@pytest.fixture()
def listed(tmp_path: Path) -> Path:
    """A CSV next to its audio, with relative, absolute, missing, repeated and unlabelled entries."""
    base = tmp_path / "lists"
    tone(base / "audio" / "rock one.wav")
    tone(base / "audio" / "Jäzz – zwei.wav")
    tone(base / "audio" / "pop.mp3", mp3=True)
    tone(base / "audio" / "other.wav")
    outside = tone(tmp_path / "elsewhere" / "far.wav")
    (base / "audio" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    table = pd.DataFrame([
        {"path": "audio/rock one.wav", "label": "Rock", "artist": "A", "split": "training", "song_id": ""},
        {"path": "audio/Jäzz – zwei.wav", "label": "Jazz", "artist": "", "split": "validation",
         "song_id": "j2"},
        {"path": "./audio/pop.mp3", "label": "Pop", "artist": "B", "split": "test", "song_id": ""},
        {"path": str(outside), "label": "Rock", "artist": "C", "split": "train", "song_id": ""},
        {"path": "audio/missing.wav", "label": "Rock", "artist": "", "split": "train", "song_id": ""},
        {"path": "audio/../audio/rock one.wav", "label": "Metal", "artist": "", "split": "", "song_id": ""},
        {"path": "audio/broken.wav", "label": "Pop", "artist": "", "split": "", "song_id": ""},
        {"path": "audio/pop.mp3", "label": "", "artist": "", "split": "", "song_id": ""},
        {"path": "", "label": "Rock", "artist": "", "split": "", "song_id": ""},
        {"path": "audio/unlabelled.wav", "label": " ", "artist": "", "split": "", "song_id": ""},
        {"path": "audio/other.wav", "label": "Pop", "artist": "", "split": "", "song_id": "j2"},
    ])
    path = base / "songs.csv"
    table.to_csv(path, index=False, encoding="utf-8-sig")   # with a BOM, as Excel writes it
    return path


def test_csv_manifest_resolves_paths_and_keeps_optional_columns(listed: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        manifest, skipped = csv_manifest(listed)
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, "split"] and list(skipped.columns) == SKIPPED_COLUMNS
    base = listed.parent
    audio = base / "audio"
    assert manifest["path"].tolist() == [str(audio / "rock one.wav"), str(audio / "Jäzz – zwei.wav"),
                                         str(audio / "pop.mp3"), str(base.parent / "elsewhere" / "far.wav")]
    assert manifest["song_id"].tolist()[:3] == ["audio/rock one", "j2", "audio/pop"]
    outside_id = manifest["song_id"].iloc[3]
    assert outside_id.endswith("elsewhere/far") and not outside_id.startswith("/")
    assert manifest["label"].tolist() == ["Rock", "Jazz", "Pop", "Rock"]      # repeated path: first label
    assert manifest["artist"].tolist() == ["A", None, "B", "C"]
    assert manifest["duration"].between(0.5, 0.7).all()
    assert all(os.path.isabs(p) for p in manifest["path"])
    assert "repeat a path" in caplog.text and "different label" in caplog.text
    reasons = {Path(p).name: r for p, r in zip(skipped["path"], skipped["reason"], strict=True)}
    assert reasons == {"missing.wav": "missing", "broken.wav": "undecodable", "songs.csv:10": "no_path",
                       "unlabelled.wav": "no_label", "other.wav": "duplicate_song_id"}
    assert "2 rows repeat a path" in caplog.text
    assert "relative paths are read from" in skipped.loc[skipped["reason"] == "missing", "detail"].iloc[0]


def test_csv_split_column_is_a_predefined_split(listed: Path) -> None:
    manifest, _ = csv_manifest(listed)
    split, how = assign_splits(manifest, 0.2, 0.2, seed=0)
    assert how == "predefined" and split.tolist() == ["train", "val", "test", "train"]


def test_csv_minimal_columns_and_aliases(tmp_path: Path) -> None:
    tone(tmp_path / "a.wav")
    tone(tmp_path / "sub" / "b.wav")
    (tmp_path / "m.csv").write_text(" File , GENRE \na.wav,rock\nsub/b.wav,jazz\n")
    manifest, skipped = csv_manifest(tmp_path / "m.csv")
    assert list(manifest.columns) == MANIFEST_COLUMNS and skipped.empty
    assert manifest["song_id"].tolist() == ["a", "sub/b"] and manifest["artist"].isna().all()


def test_csv_missing_column_names_what_it_has(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("filename,artist\na.wav,x\n")
    with pytest.raises(CollectionError) as err:
        csv_manifest(bad)
    message = str(err.value)
    assert str(bad) in message and "'label'" in message and "'path'" in message and "'artist'" in message


def test_csv_unusable_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="not found"):
        csv_manifest(tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(CollectionError, match="cannot read"):
        csv_manifest(tmp_path / "empty.csv")
    (tmp_path / "gone.csv").write_text("path,label\nx.wav,rock\ny.wav,pop\n")
    with pytest.raises(CollectionError, match="no usable songs.*2 missing"):
        csv_manifest(tmp_path / "gone.csv")
    tone(tmp_path / "a.wav")
    (tmp_path / "one.csv").write_text("path,label\na.wav,rock\n")
    with pytest.raises(CollectionError, match="at least two"):
        csv_manifest(tmp_path / "one.csv")


def test_unique_song_ids_keep_extensions_only_on_clashes() -> None:
    assert unique_song_ids(["a/x.mp3", "a/x.flac", "b/y.wav"]) == ["a/x.mp3", "a/x.flac", "b/y"]


# ------------------------------------------------------------------------------------------------- FMA

# The layout of FMA's tracks.csv (fma_metadata.zip): two header rows, then a "track_id" line.
TRACKS_CSV = """\
,album,album,artist,set,set,track,track,track
,title,tracks,name,split,subset,duration,genre_top,title
track_id,,,,,,,,
2,AWOL - A Way Of Life,7,AWOL,training,small,168,Hip-Hop,Food
3,AWOL - A Way Of Life,7,AWOL,training,medium,237,Hip-Hop,Electric Ave
5,AWOL - A Way Of Life,7,AWOL,validation,small,206,Hip-Hop,This World
10,Constant Hitmaker,2,Kurt Vile,test,small,161,Pop,Freeway
20,"Niris, Live",13,Nicky Cook,training,large,311,,Spiritual Level
134,AWOL - A Way Of Life,7,AWOL,training,small,207,Rock,Street Music
140,Make Believe,4,Alec K. Redfearn,training,large,405,Rock,Queen Of The Wires
1000,Lost,1,Nobody,test,small,100,Rock,Gone
155066,Big Album,9,"Smith, Jane",test,large,300,Folk,Last
"""


@pytest.fixture()
def fma(tmp_path: Path) -> tuple[Path, Path]:
    """A tiny FMA: tracks.csv and audio at <dir>/NNN/NNNNNN.mp3 (1000 missing, 140 broken)."""
    audio = tmp_path / "fma_large"
    for track_id in (2, 3, 5, 10, 20, 134, 155066):
        # real MP3 for two tracks; WAV data under .mp3 for the rest (libsndfile goes by the header)
        tone(fma_audio_path(audio, track_id), mp3=track_id in (2, 10))
    fma_audio_path(audio, 140).write_bytes(b"\xff\xfb" + b"\x00" * 100)
    tracks = tmp_path / "fma_metadata" / "tracks.csv"
    tracks.parent.mkdir()
    tracks.write_text(TRACKS_CSV)
    return tracks, audio


def test_fma_audio_path() -> None:
    assert fma_audio_path("/d", 2) == Path("/d/000/000002.mp3")
    assert fma_audio_path("/d", 155066) == Path("/d/155/155066.mp3")


def test_fma_manifest_all_tracks(fma: tuple[Path, Path]) -> None:
    manifest, skipped = fma_manifest(*fma)
    assert list(manifest.columns) == [*MANIFEST_COLUMNS, "album", "split"]
    assert manifest["song_id"].tolist() == ["fma/000002", "fma/000003", "fma/000005", "fma/000010",
                                            "fma/000134", "fma/155066"]
    first = manifest.iloc[0].to_dict()
    assert first["path"] == str(fma[1] / "000" / "000002.mp3") and first["label"] == "Hip-Hop"
    assert first["artist"] == "AWOL" and first["album"] == "AWOL - A Way Of Life"
    assert first["split"] == "training"
    assert manifest.set_index("song_id").loc["fma/155066", "artist"] == "Smith, Jane"
    assert manifest["duration"].between(0.5, 0.7).all()
    reasons = dict(zip(skipped["path"].map(lambda p: Path(p).stem), skipped["reason"], strict=True))
    assert reasons == {"000020": "no_top_genre", "000140": "undecodable", "001000": "missing"}
    split, how = assign_splits(manifest, 0.2, 0.2, seed=0)
    assert how == "predefined" and set(split) == {"train", "val", "test"}


@pytest.mark.parametrize("subset, ids", [
    ("small", [2, 5, 10, 134]),
    ("medium", [2, 3, 5, 10, 134]),
    ("large", [2, 3, 5, 10, 134, 155066]),
    ("full", [2, 3, 5, 10, 134, 155066]),
    (" Medium ", [2, 3, 5, 10, 134]),
])
def test_fma_subsets_are_nested(fma: tuple[Path, Path], subset: str, ids: list[int]) -> None:
    manifest, skipped = fma_manifest(*fma, subset=subset)
    assert manifest["song_id"].tolist() == [f"fma/{i:06d}" for i in ids]
    if subset == "small":
        assert skipped["reason"].tolist() == ["missing"]


def test_fma_csv_written_by_pandas_reads_the_same(fma: tuple[Path, Path], tmp_path: Path) -> None:
    tracks = pd.read_csv(fma[0], index_col=0, header=[0, 1])
    again = tmp_path / "again.csv"
    tracks.to_csv(again)
    assert again.read_text().splitlines()[2].startswith("track_id,")
    assert fma_manifest(again, fma[1])[0].equals(fma_manifest(*fma)[0])


def test_fma_refusals(fma: tuple[Path, Path], tmp_path: Path) -> None:
    tracks, audio = fma
    with pytest.raises(CollectionError, match="unknown FMA subset"):
        fma_manifest(tracks, audio, subset="tiny")
    with pytest.raises(CollectionError, match="tracks.csv not found"):
        fma_manifest(tmp_path / "nope.csv", audio)
    with pytest.raises(CollectionError, match="audio folder not found"):
        fma_manifest(tracks, tmp_path / "no_audio")
    flat = tmp_path / "flat.csv"
    flat.write_text("track_id,genre_top\n2,Rock\n")
    with pytest.raises(CollectionError, match=r"track\.genre_top"):
        fma_manifest(flat, audio)
    (tmp_path / "ids.csv").write_text(TRACKS_CSV.replace("\n2,", "\nabc,"))
    with pytest.raises(CollectionError, match="numeric track_id"):
        fma_manifest(tmp_path / "ids.csv", audio)
    with pytest.raises(CollectionError, match="no usable songs"):
        fma_manifest(tracks, tmp_path / "fma_metadata")     # a folder without the audio
