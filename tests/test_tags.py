"""Genre-tag manifests: ID3 (v2 and v1 numeric genres), Vorbis comments, MP4 atoms, mappings."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_DATA, write_tone
from mutagen.flac import FLAC
from mutagen.id3 import ID3, TALB, TCON, TPE1, TPE2
from mutagen.id3 import delete as delete_id3
from mutagen.oggvorbis import OggVorbis

from genre_ray.data.collection import MANIFEST_COLUMNS, SKIPPED_COLUMNS, CollectionError
from genre_ray.data.tags import (
    UNMAPPED_COLUMNS,
    choose_label,
    extract_tags,
    load_mapping,
    read_tags,
    scan_tags,
    tag_manifest,
    walk_audio,
)

MP3_DEV = SHARED_DATA / "mp3_dev"
MAPPING = Path(__file__).resolve().parents[1] / "search_spaces" / "mappings" / "gtzan10.yaml"


def mp3(path: Path, genres: list[str] | None = None, artist: str | None = None, album: str | None = None,
        album_artist: str | None = None) -> Path:
    """A 1-s MP3 tone with ID3v2 tags."""
    write_tone(path, seconds=1.0, sr=22050, subtype="MPEG_LAYER_III", fmt="MP3")
    tags = ID3()
    for frame, value in ((TCON, genres), (TPE1, artist), (TALB, album), (TPE2, album_artist)):
        if value:
            tags.add(frame(encoding=3, text=value))
    tags.save(path)
    return path


def vorbis(path: Path, tags: dict[str, list[str]]) -> Path:
    """A 1-s FLAC or OGG/Vorbis tone with Vorbis comments."""
    flac = path.suffix.lower() == ".flac"
    write_tone(path, seconds=1.0, sr=22050, subtype="PCM_16" if flac else "VORBIS",
               fmt="FLAC" if flac else "OGG")
    audio = FLAC(path) if flac else OggVorbis(path)
    for key, values in tags.items():
        audio[key] = values
    audio.save()
    return path


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    """A small library in a messy layout: nested folders, non-ASCII names, no genre, hidden folders."""
    root = tmp_path / "My Müsic"
    mp3(root / "Ädele & Friends" / "Sömething Blüe (live).mp3", ["(17)"], artist="Ädele")    # code -> Rock
    mp3(root / "two.mp3", ["Electronic", "Hip Hop"], artist="MC Two", album="Two Album")       # first maps
    mp3(root / "deep" / "er" / "code.mp3", ["(32)Classical"], album_artist="Orchestra X")     # (32)Classical
    vorbis(root / "flac" / "multi.FLAC", {"GENRE": ["Jazz", "Blues"], "ARTIST": ["Ella"], "ALBUM": ["Live"]})
    vorbis(root / "ogg" / "rap.ogg", {"genre": ["RAP"], "artist": ["Ratata"]})
    vorbis(root / "ogg" / "semi.ogg", {"GENRE": ["Ambient; Classic  ROCK"]})                  # one value, ';'
    mp3(root / "none.mp3", None, artist="Nobody")                                             # no genre
    mp3(root / "odd.mp3", ["Polka", "Techno"])                                                # unmapped
    mp3(root / "odd2.mp3", ["polka"])                                                         # unmapped
    mp3(root / ".hidden" / "secret.mp3", ["Rock"])                                            # hidden
    write_tone(root / "plain.wav", seconds=1.0)                                               # WAV, no tags
    (root / "notes.txt").write_text("not audio")
    (root / "broken.mp3").write_bytes(b"\x00" * 64)                                           # undecodable
    return root


def rows_by_name(manifest: pd.DataFrame) -> dict[str, dict]:
    return {Path(p).name: row for p, row in zip(manifest["path"], manifest.to_dict("records"), strict=True)}


def test_tags_with_mapping_label_artist_album(library: Path) -> None:
    manifest, skipped, unmapped = tag_manifest(library, MAPPING)
    assert list(manifest.columns[:5]) == MANIFEST_COLUMNS and list(skipped.columns) == SKIPPED_COLUMNS
    got = rows_by_name(manifest)
    assert {n: r["label"] for n, r in got.items()} == {
        "Sömething Blüe (live).mp3": "rock", "two.mp3": "hiphop", "code.mp3": "classical",
        "multi.FLAC": "jazz", "rap.ogg": "hiphop", "semi.ogg": "rock"}
    assert got["Sömething Blüe (live).mp3"]["artist"] == "Ädele"
    assert got["two.mp3"]["album"] == "Two Album" and got["two.mp3"]["raw_genres"] == "Electronic; Hip Hop"
    assert got["code.mp3"]["artist"] == "Orchestra X"          # album artist is the fallback
    assert got["multi.FLAC"]["artist"] == "Ella" and got["multi.FLAC"]["album"] == "Live"
    assert got["multi.FLAC"]["raw_genres"] == "Jazz; Blues"
    assert got["semi.ogg"]["raw_genres"] == "Ambient; Classic  ROCK" and got["semi.ogg"]["artist"] is None
    assert all(os.path.isabs(p) for p in manifest["path"])
    assert manifest["duration"].between(0.9, 1.2).all()
    assert manifest["song_id"].is_unique
    assert "Ädele & Friends/Sömething Blüe (live)" in set(manifest["song_id"])


def test_skipped_reasons_and_unmapped_report(library: Path) -> None:
    _, skipped, unmapped = tag_manifest(library, MAPPING)
    reasons = {Path(p).name: r for p, r in zip(skipped["path"], skipped["reason"], strict=True)}
    assert reasons == {"none.mp3": "no_genre_tag", "plain.wav": "no_genre_tag", "odd.mp3": "unmapped_genre",
                       "odd2.mp3": "unmapped_genre", "broken.mp3": "undecodable"}
    assert (skipped["stage"] == "scan").all() and skipped["detail"].str.len().gt(20).all()
    assert list(unmapped.columns) == UNMAPPED_COLUMNS
    assert unmapped.to_dict("records") == [{"raw_genre": "Polka", "files": 2},
                                           {"raw_genre": "Techno", "files": 1}]


def test_without_mapping_each_raw_genre_is_a_label(library: Path) -> None:
    manifest, skipped, unmapped = tag_manifest(library)
    got = {n: r["label"] for n, r in rows_by_name(manifest).items()}
    assert got["two.mp3"] == "Electronic" and got["multi.FLAC"] == "Jazz" and got["code.mp3"] == "Classical"
    assert got["odd.mp3"] == "Polka" and got["odd2.mp3"] == "Polka"      # same genre, first-seen spelling
    assert got["rap.ogg"] == "RAP" and got["semi.ogg"] == "Ambient"
    assert unmapped.empty and "unmapped_genre" not in set(skipped["reason"])


def test_hidden_folders_and_symlink_loops_are_not_walked(library: Path) -> None:
    os.symlink(library, library / "deep" / "loop", target_is_directory=True)
    names = [p.name for p in walk_audio(library)]
    assert "secret.mp3" not in names and "notes.txt" not in names
    assert names.count("code.mp3") == 1 and "multi.FLAC" in names


def test_id3v1_only_numeric_genre(tmp_path: Path) -> None:
    path = mp3(tmp_path / "v1.mp3", ["Reggae"], artist="Old Tagger")
    ID3(path).save(path, v1=2)                   # write an ID3v1 tag too (genre byte 16) ...
    delete_id3(path, delete_v1=False, delete_v2=True)   # ... then drop ID3v2: only "16" is left
    assert path.read_bytes()[-128:-125] == b"TAG" and path.read_bytes()[-1] == 16
    info = read_tags(path)
    assert info.genres == ("Reggae",) and info.artist == "Old Tagger"


@pytest.mark.parametrize("text, expected", [(["(17)"], ("Rock",)), (["17"], ("Rock",)),
                                            (["(17)Rock"], ("Rock",)), (["(17)(31)"], ("Rock", "Trance")),
                                            (["Rock", "Pop"], ("Rock", "Pop")), (["255"], ())])
def test_tcon_forms(text: list[str], expected: tuple[str, ...]) -> None:
    assert extract_tags({"TCON": TCON(encoding=3, text=text)}).genres == expected


def test_mp4_atoms_from_a_mapping_like_object() -> None:
    """No MP4 writer here (no ffmpeg), so the ©gen branch is tested on MP4Tags-shaped data."""
    info = extract_tags({"\xa9gen": ["Hip-Hop", "Rap"], "\xa9ART": ["Artist A"], "\xa9alb": ["An Album"],
                         "aART": ["Various"], "trkn": [(1, 10)]})
    assert info.genres == ("Hip-Hop", "Rap") and info.artist == "Artist A" and info.album == "An Album"
    assert extract_tags({"\xa9gen": ["Jazz"], "aART": ["Band"]}).artist == "Band"
    assert extract_tags({"GENRE": ["(8)"]}).genres == ("Jazz",)      # ID3v1 code in a Vorbis comment
    assert extract_tags(None).genres == ()


def test_mapping_matches_case_spacing_glob_and_regex() -> None:
    rules = load_mapping({"rock": ["classic rock", "prog*"], "hip-hop": ["rap", "re:^hip.?hop"],
                          "metal": "*metal", "jazz": None})
    cases = {"ROCK": "rock", "Classic   Rock": "rock", "Progressive Rock": "rock", "prog": "rock",
             "Hip Hop": "hip-hop", "hiphop": "hip-hop", "HIP-HOP": "hip-hop", " rap ": "hip-hop",
             "Death Metal": "metal", "jazz": "jazz", "Trip-Hop": None, "pop": None}
    assert {raw: rules.map(raw) for raw in cases} == cases
    assert choose_label(["Electronic", "Rap"], rules) == "hip-hop"
    assert choose_label(["Pop/Rock"], rules) == "rock"                     # parts are tried too
    assert choose_label(["Pop", "Soul"], rules) is None


def test_exact_spelling_beats_patterns_and_first_pattern_wins() -> None:
    rules = load_mapping({"rock": ["*rock", "*"], "reggae": ["rocksteady", "lovers rock"]})
    assert rules.map("Lovers Rock") == "reggae" and rules.map("Punk Rock") == "rock"
    assert rules.map("anything") == "rock"


def test_bad_mappings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="both"):
        load_mapping({"rock": ["punk"], "punk": []})
    with pytest.raises(CollectionError, match="regular expression"):
        load_mapping({"rock": ["re:("]})
    with pytest.raises(CollectionError, match="list of tag spellings"):
        load_mapping({"rock": {"a": 1}})
    with pytest.raises(CollectionError, match="not found"):
        load_mapping(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rock\n- pop\n")
    with pytest.raises(CollectionError, match="YAML mapping"):
        load_mapping(bad)


def test_shipped_gtzan_mapping() -> None:
    rules = load_mapping(MAPPING)
    assert sorted(rules.genres) == ["blues", "classical", "country", "disco", "hiphop", "jazz", "metal",
                                    "pop", "reggae", "rock"]
    cases = {"Hip-Hop": "hiphop", "Gangsta Rap": "hiphop", "Classic Rock": "rock", "Classical": "classical",
             "Death Metal": "metal", "Roots Reggae": "reggae", "Reggaeton": None, "Rocksteady": "reggae",
             "Bossa Nova": "jazz", "Nu-Disco": "disco", "Bluegrass": "country", "Synth-Pop": "pop",
             "Delta Blues": "blues", "Techno": None}
    assert {raw: rules.map(raw) for raw in cases} == cases


def test_unusable_library_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CollectionError, match="not a folder"):
        tag_manifest(tmp_path / "missing")
    mp3(tmp_path / "lib" / "a.mp3", ["Rock"])
    mp3(tmp_path / "lib" / "b.mp3", None)
    with pytest.raises(CollectionError, match="Rock"):           # one genre
        tag_manifest(tmp_path / "lib")
    with pytest.raises(CollectionError, match="no usable songs.*unmapped_genre"):
        tag_manifest(tmp_path / "lib", {"jazz": []})


def test_unreadable_tags_and_empty_folders(library: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import genre_ray.data.tags as tags

    real = tags.read_tags

    def flaky(path: str | Path) -> tags.TagInfo:
        if Path(path).name == "two.mp3":
            raise tags.mutagen.MutagenError("damaged ID3 frame")
        return real(path)

    monkeypatch.setattr(tags, "read_tags", flaky)
    _, skipped, _ = tag_manifest(library, MAPPING)
    row = skipped.loc[skipped["path"].str.endswith("two.mp3")].iloc[0]
    assert row["reason"] == "unreadable_tags" and "damaged ID3 frame" in row["detail"]
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(CollectionError, match="no audio files"):
        tag_manifest(tmp_path / "empty")


def test_summary_is_logged(library: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="genre_ray.data.tags"):
        tag_manifest(library, MAPPING)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("tags:"))
    assert "6 songs in 4 genres" in line and "'Polka' (2)" in line


@pytest.mark.skipif(not MP3_DEV.exists(), reason=f"{MP3_DEV} not present")
def test_real_mp3s_are_all_accounted_for() -> None:
    files = sorted(MP3_DEV.glob("*.mp3"))
    manifest, skipped, _ = scan_tags(MP3_DEV, MAPPING)
    seen = set(manifest["path"]) | set(skipped["path"])
    assert {str(p.resolve()) for p in files} <= seen and len(manifest) + len(skipped) == len(files)
    assert skipped["reason"].isin(["no_genre_tag", "unmapped_genre", "unreadable_tags", "undecodable"]).all()
    assert not manifest["duration"].map(math.isnan).any()
    try:
        tag_manifest(MP3_DEV)
    except CollectionError as exc:   # untagged files: refused, with the reasons in the message
        assert str(MP3_DEV.resolve()) in str(exc)


def test_search_reads_a_tagged_library_through_the_yaml(library: Path, tmp_path: Path) -> None:
    """``data.source: tags`` with ``data.mapping`` gives the runner the tag manifest."""
    import yaml

    from genre_ray.config import load_config
    from genre_ray.search.runner import _collection

    mapping = Path(__file__).resolve().parents[1] / "search_spaces" / "mappings" / "gtzan10.yaml"
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"data": {"source": "tags", "path": str(library), "mapping": str(mapping)}}))
    manifest, skipped = _collection(load_config(space), tmp_path)
    labels = rows_by_name(manifest)
    assert labels["Sömething Blüe (live).mp3"]["label"] == "rock"
    assert labels["Sömething Blüe (live).mp3"]["artist"] == "Ädele"
    assert {"no_genre_tag", "unmapped_genre"} <= set(skipped["reason"])
