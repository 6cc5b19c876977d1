"""Files damaged but still decodable: cut short behind an intact header, copies filed under two
genres, and bytes that are not audio. Each is named in the data report, with the seconds promised
and read for a file cut short, and ``data.truncated`` decides whether such a file is searched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from conftest import write_tone

from genre_ray.config import ConfigError, load_config
from genre_ray.data.audio import AudioError, audio_length, decode, decode_clips
from genre_ray.data.collection import SKIPPED_COLUMNS, decode_report, folder_manifest
from genre_ray.features.pipeline import content_hashes
from genre_ray.search.runner import _data_report, _drop_copies, load_collection

SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "cnn.yaml"
SR = 22050
# format, subtype, extension: what libsndfile can write here (MP3 needs libsndfile >= 1.1)
FORMATS = [(f, s, e) for f, s, e in [("WAV", "PCM_16", "wav"), ("AIFF", "PCM_16", "aiff"),
                                     ("FLAC", "PCM_16", "flac"), ("OGG", "VORBIS", "ogg"),
                                     ("MP3", "MPEG_LAYER_III", "mp3")]
           if f in sf.available_formats()]


def _noise(path: Path, seconds: float, fmt: str = "WAV", subtype: str = "PCM_16") -> Path:
    """A tone in noise: enough entropy that a compressed file has many frames (or Ogg pages)."""
    rng = np.random.default_rng(len(path.name))
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SR, format=fmt, subtype=subtype)
    return path


def _cut(path: Path, fraction: float = 1 / 3) -> Path:
    """Keep the first ``fraction`` of the bytes, header included and unchanged."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("fmt, subtype, ext", FORMATS, ids=[f[0] for f in FORMATS])
def test_a_file_cut_to_a_third_promises_its_length_and_reads_a_third(tmp_path: Path, fmt: str, subtype: str,
                                                                      ext: str) -> None:
    whole = audio_length(str(_noise(tmp_path / f"whole.{ext}", 6.0, fmt, subtype)))
    assert not whole.truncated and whole.read_s == pytest.approx(6.0, abs=0.05)
    cut = audio_length(str(_cut(_noise(tmp_path / f"cut.{ext}", 6.0, fmt, subtype))))
    assert cut.truncated
    if fmt == "OGG":  # Ogg declares no length; the stream lacks its end-of-stream page
        assert cut.promised_s is None
    else:
        assert cut.promised_s == pytest.approx(6.0, abs=0.05)
    assert 1.0 < cut.read_s < 2.2  # about a third, less what a decoder loses in the last broken frame


def test_a_wav_written_to_a_pipe_is_not_taken_for_a_cut_one(tmp_path: Path) -> None:
    path = _noise(tmp_path / "piped.wav", 2.0)
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[4:8] = data[at + 4:at + 8] = b"\xff\xff\xff\xff"  # the streaming writers' "size unknown"
    path.write_bytes(bytes(data))
    length = audio_length(str(path))
    assert not length.truncated and length.promised_s is None and length.read_s == pytest.approx(2.0)


def test_a_flac_cut_short_decodes_up_to_the_damage(tmp_path: Path) -> None:
    path = str(_cut(_noise(tmp_path / "cut.flac", 20.0, "FLAC")))
    with pytest.raises(sf.LibsndfileError):  # libsndfile alone refuses the whole file
        sf.read(path)
    read_s = audio_length(path).read_s
    assert len(decode(path, SR)) / SR == pytest.approx(read_s, abs=0.01)
    clips = decode_clips(path, SR, SR, 0.0, max_clips=3)  # spread over what decodes, not over 20 s
    assert clips.shape == (3, SR) and (np.abs(clips).max(axis=1) > 0.1).all()


def test_not_audio_is_refused_in_plain_words_keeping_the_decoders(tmp_path: Path) -> None:
    fake = tmp_path / "rock" / "random.mp3"
    fake.parent.mkdir()
    fake.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError) as info:
        decode(str(fake), SR)
    err = info.value
    assert err.reason == "undecodable"
    assert err.detail.startswith("random.mp3 is not an audio file the decoder can read "
                                 "(format not recognised)")
    assert "pipe" not in err.detail and "random.mp3" in err.message  # libsndfile's words, kept apart
    # as the feature cache stores it and the data report reads it back
    [row] = decode_report([str(fake)], [err.record()]).to_dict("records")
    assert row["stage"] == "decode" and row["detail"] == err.detail and row["decoder_message"] == err.message
    empty = tmp_path / "rock" / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.wav is an empty file \(0 bytes\)"):
        decode(str(empty), SR)


def _collection(root: Path) -> dict[str, Path]:
    """Three genres of good songs, plus the damaged files a real collection holds."""
    for g, genre in enumerate(("blues", "metal", "rock")):
        for i in range(4):
            write_tone(root / genre / f"{genre}{i}.wav", seconds=2.0, freq=200.0 * (g + 1) + 30 * i)
    same = write_tone(root / "blues" / "same.wav", seconds=2.0, freq=1234.0)
    copy = root / "metal" / "same again.wav"
    copy.write_bytes(same.read_bytes())
    cut = _cut(_noise(root / "rock" / "cut.wav", 6.0))
    fake = root / "rock" / "random.mp3"
    fake.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return {"same": same, "copy": copy, "cut": cut, "fake": fake}


@pytest.mark.parametrize("truncated", ["keep", "skip"])
def test_the_data_report_names_every_damaged_file(tmp_path: Path, truncated: str) -> None:
    files = _collection(tmp_path / "music")
    manifest, scanned = folder_manifest(tmp_path / "music")
    songs, report = _drop_copies(manifest.assign(sha=content_hashes(manifest["path"].tolist())), truncated)
    _data_report(pd.concat([scanned, report], ignore_index=True), tmp_path / "data_report.csv")
    rows = pd.read_csv(tmp_path / "data_report.csv").set_index("path")
    assert list(rows.reset_index().columns) == SKIPPED_COLUMNS

    cut = rows.loc[str(files["cut"])]
    assert cut["reason"] == f"truncated ({'kept' if truncated == 'keep' else 'skipped'})"
    assert cut["promised_s"] == pytest.approx(6.0, abs=0.01) and cut["read_s"] == pytest.approx(2.0, abs=0.05)
    assert "promises 6.0 s" in cut["detail"] and "read 2.0 s" in cut["detail"]
    assert (str(files["cut"]) in set(songs["path"])) == (truncated == "keep")
    if truncated == "keep":  # the song is what decoded
        assert songs.set_index("path").loc[str(files["cut"]), "duration"] == pytest.approx(2.0, abs=0.05)

    conflict = rows.loc[str(files["copy"])]
    assert conflict["reason"] == "label_conflict"
    for named in (str(files["same"]), "'blues'", "'metal'"):
        assert named in conflict["detail"]
    assert str(files["same"]) in set(songs["path"]) and str(files["copy"]) not in set(songs["path"])

    fake = rows.loc[str(files["fake"])]
    assert fake["reason"] == "undecodable" and "random.mp3 is not an audio file" in fake["detail"]
    assert "pipe" in fake["decoder_message"]  # libsndfile's own words, kept apart
    good = {str(p) for p in (tmp_path / "music").rglob("*[0-9].wav")}
    assert good <= set(songs["path"]) and len(rows) == 3  # the rest carry on, and only the damaged are named


@pytest.mark.parametrize("truncated", ["keep", "skip"])
def test_search_data_keeps_or_skips_a_truncated_song(tmp_path: Path, truncated: str,
                                                      ray_session: object) -> None:
    files = _collection(tmp_path / "music")
    cfg = load_config(SPACE, {"data.source": "folder", "data.path": str(tmp_path / "music"),
                              "data.truncated": truncated, "output.results_dir": str(tmp_path / "results"),
                              "features.clip_seconds": 1.0, "features.max_clips_per_song": 2})
    songs, _, table, skipped = load_collection(cfg, tmp_path / "results")
    assert (str(files["cut"]) in set(songs["path"])) == (truncated == "keep")
    reasons = dict(zip(skipped["path"], skipped["reason"], strict=True))
    assert reasons[str(files["cut"])] == f"truncated ({'kept' if truncated == 'keep' else 'skipped'})"
    assert reasons[str(files["copy"])] == "label_conflict" and reasons[str(files["fake"])] == "undecodable"
    assert len(songs) == 13 + (truncated == "keep")  # 12 tones, the first of the two copies, the cut song
    if truncated == "keep":  # featurized: 2 s read at 1-s clips, so 2 clips, not the 6 the header promises
        sha = songs.set_index("path").loc[str(files["cut"]), "sha"]
        assert int((table.clips["sha"] == sha).sum()) == 2


def test_data_truncated_takes_keep_or_skip(tmp_path: Path) -> None:
    assert load_config(SPACE).data["truncated"] == "keep"
    with pytest.raises(ConfigError, match="data.truncated: must be one of keep, skip, got 'drop'"):
        load_config(SPACE, {"data.truncated": "drop"})
