"""Manifests from lists: a CSV of files and labels, or the FMA dataset's ``tracks.csv``.

Both give the same ``(manifest, skipped)`` pair as :func:`genre_ray.data.collection.folder_manifest`:
the manifest has ``path`` (absolute), ``song_id``, ``artist``, ``label`` (the raw genre) and
``duration`` (seconds, from the audio header), plus ``album`` and ``split`` where the source has
them; files that cannot be used are listed in ``skipped`` with a reason and what to do.

The small helpers at the top (:func:`probe_duration`, :func:`skip_row`, :func:`finish_manifest`)
are shared with :mod:`genre_ray.data.tags`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import soundfile as sf

from genre_ray import storage
from genre_ray.data.audio import open_audio, undecodable
from genre_ray.data.collection import MANIFEST_COLUMNS, SKIPPED_COLUMNS, CollectionError, error_row

__all__ = ["CSV_ALIASES", "FMA_SUBSETS", "csv_manifest", "finish_manifest", "fma_audio_path", "fma_manifest",
           "none_for_missing", "probe_duration", "skip_row", "unique_song_ids"]

log = logging.getLogger(__name__)

#: FMA subsets, smallest first; each holds every smaller one (small ⊂ medium ⊂ large ⊂ full).
FMA_SUBSETS = ("small", "medium", "large", "full")
#: Other names accepted for the CSV columns (matched after stripping and lower-casing).
CSV_ALIASES = {"file": "path", "filename": "path", "filepath": "path", "genre": "label"}
_FMA_COLUMNS = {"label": ("track", "genre_top"), "artist": ("artist", "name"), "album": ("album", "title"),
                "subset": ("set", "subset"), "split": ("set", "split")}


# ---------------------------------------------------------------------------------------- shared helpers

def skip_row(path: str | Path, reason: str, detail: str) -> dict[str, str]:
    """One row of a ``skipped`` table (stage ``scan``)."""
    return {"path": str(path), "stage": "scan", "reason": reason, "detail": detail}


def probe_duration(path: str | Path) -> tuple[float, dict[str, Any] | None]:
    """The duration in seconds from the audio header, or NaN and the ``skipped`` row saying why.

    ``path`` may be a URI (``s3://bucket/rock/a.wav``).
    """
    missing = skip_row(path, "missing", "file not found; fix the path or remove the entry")
    if not storage.is_uri(path) and not Path(path).is_file():
        return math.nan, missing
    try:
        with open_audio(str(path), header_only=True) as src:
            return float(sf.info(src).duration), None
    except FileNotFoundError:  # an object that is not in its bucket
        return math.nan, missing
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as exc:
        return math.nan, error_row(undecodable(str(path), exc), "scan")


def unique_song_ids(rel_paths: Iterable[str]) -> list[str]:
    """Song ids from relative POSIX paths: the path without extension, unless two files share it.

    ``a/song.mp3`` and ``a/song.flac`` would both be ``a/song``; such files keep their extension.
    """
    rels = list(rel_paths)
    stems = [os.path.splitext(r)[0] for r in rels]
    counts = pd.Series(stems, dtype=object).value_counts()
    return [rel if counts[stem] > 1 else stem for rel, stem in zip(rels, stems, strict=True)]


def none_for_missing(table: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    """Optional text columns as objects with None (not NaN) where unknown, as the manifest promises."""
    for col in columns:
        if col in table:
            values = table[col].astype(object)
            table[col] = values.where(values.notna(), None)
    return table


def finish_manifest(rows: list[dict[str, Any]], skipped: list[dict[str, str]], source: str,
                    extra: Iterable[str] = (), hint: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the two tables, refuse a source with no usable songs or one genre, log the skips.

    Args:
        rows: manifest rows.
        skipped: ``skipped`` rows (see :func:`skip_row`).
        source: what was read (a path), for messages.
        extra: optional columns to keep after :data:`MANIFEST_COLUMNS` (``album``, ``split``, ...).
        hint: what to do, appended to the message when no row is usable.

    Returns:
        ``(manifest, skipped)`` DataFrames.

    Raises:
        CollectionError: when no row is usable, or all usable rows have one label.
    """
    extra = list(extra)
    manifest = none_for_missing(pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *extra]), ["artist", *extra])
    skipped_df = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
    why = ", ".join(f"{n} {r}" for r, n in skipped_df["reason"].value_counts().items())
    if manifest.empty:
        raise CollectionError(f"{source}: no usable songs" + (f" ({len(skipped_df)} skipped: {why}; "
                              "see each file's reason in the data report)" if why else "") + hint)
    if manifest["label"].nunique() < 2:
        raise CollectionError(f"{source}: every song has the genre {manifest['label'].iloc[0]!r}; "
                              "a classifier needs at least two")
    for row in skipped:
        log.debug("skipping %s: %s (%s)", row["path"], row["reason"], row["detail"])
    if why:
        log.warning("%s: skipped %d files (%s)", source, len(skipped_df), why)
    return manifest, skipped_df


# ------------------------------------------------------------------------------------------------- CSV

def _clean(value: Any) -> str | None:
    text = "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()
    return text or None


def _read_csv(csv_path: Path) -> pd.DataFrame:
    if not csv_path.is_file():
        raise CollectionError(f"{csv_path}: CSV manifest not found; pass a CSV with columns path,label")
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CollectionError(f"{csv_path}: cannot read it as a UTF-8 CSV ({exc}); "
                              "save it as CSV with a header row path,label") from None
    names = [str(c).strip().casefold() for c in table.columns]
    names = [CSV_ALIASES.get(n, n) if CSV_ALIASES.get(n) not in names else n for n in names]
    table.columns = names
    missing = [c for c in ("path", "label") if c not in names]
    if missing:
        raise CollectionError(f"{csv_path}: no {' or '.join(repr(c) for c in missing)} column; it has "
                              f"{', '.join(repr(str(c)) for c in table.columns) or 'no columns'}. "
                              "A CSV manifest needs path and label (artist, album, split, song_id optional)")
    return table.loc[:, ~table.columns.duplicated()]


def _resolve(raw: str, base: Path) -> Path | str:
    if storage.is_uri(raw.strip()):  # s3://, gs://, file://: read through pyarrow, kept as written
        return raw.strip()
    path = Path(raw).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _default_id(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix().lstrip("/")


def csv_manifest(csv_path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a CSV that lists the songs: ``path`` and ``label`` columns, others optional.

    Relative paths are read from the CSV's own folder; a path may be a URI (``s3://bucket/a.wav``),
    whose default song id is its bucket and key. Optional columns: ``artist``, ``album``,
    ``split`` (train/val/test or training/validation/test) and ``song_id`` (default: the path
    relative to the CSV's folder without extension). ``file``/``filename``/``filepath`` and ``genre``
    are accepted for ``path`` and ``label``. A path listed twice gives one song (the first row).

    Args:
        csv_path: the CSV file.

    Returns:
        ``(manifest, skipped)``; rows whose file is missing or unreadable, or that lack a path or
        label, are in ``skipped``.

    Raises:
        CollectionError: when the CSV is missing, unreadable, lacks a required column, or lists no
            usable song.
    """
    csv_path = Path(csv_path).expanduser().resolve()
    table = _one_row_per_path(_read_csv(csv_path), csv_path)
    extra = [c for c in ("album", "split") if c in table.columns]
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    seen_ids: set[str] = set()
    for rec in table.to_dict("records"):
        row, bad = _csv_row(rec, csv_path, seen_ids)
        if bad is not None:
            skipped.append(bad)
            continue
        assert row is not None  # a record gives a row or the reason it has none
        seen_ids.add(row["song_id"])
        rows.append({**row, **{c: _clean(rec.get(c)) for c in extra}})
    return finish_manifest(rows, skipped, str(csv_path), extra)


def _one_row_per_path(table: pd.DataFrame, csv_path: Path) -> pd.DataFrame:
    """Add ``_line`` (as a spreadsheet numbers it) and ``_abs``; keep the first row of a repeated path."""
    table = table.assign(_line=range(2, len(table) + 2),
                         _abs=[str(_resolve(p, csv_path.parent)) if _clean(p) else "" for p in table["path"]])
    repeat = table["_abs"].duplicated() & (table["_abs"] != "")
    if repeat.any():
        first = table.groupby("_abs")["label"].transform("first")
        clash = int((repeat & (table["label"].str.strip() != first.str.strip())).sum())
        log.warning("%s: %d rows repeat a path listed earlier (first at line %d); kept the first row of "
                    "each%s", csv_path, int(repeat.sum()), int(table.loc[repeat, "_line"].iloc[0]),
                    f" - {clash} of them with a different label" if clash else "")
    return table.loc[~repeat]


def _csv_row(rec: dict[str, Any], csv_path: Path,
             seen_ids: set[str]) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """One CSV record -> a manifest row, or the ``skipped`` row saying why not."""
    where = f"line {rec['_line']} of {csv_path.name}"
    if not rec["_abs"]:
        return None, skip_row(f"{csv_path}:{rec['_line']}", "no_path", f"{where} has no path; fill it in "
                              "or delete the row")
    path, label = rec["_abs"], _clean(rec["label"])
    if label is None:
        return None, skip_row(path, "no_label", f"{where} has no label; fill in its genre or delete the row")
    song_id = _clean(rec.get("song_id"))
    if song_id is None:  # a.mp3 next to a.wav: the second keeps its extension
        named = Path(storage.filesystem(path)[1] if storage.is_uri(path) else path)  # a URI: bucket/key
        song_id = _default_id(named.with_suffix(""), csv_path.parent)
        song_id = _default_id(named, csv_path.parent) if song_id in seen_ids else song_id
    if song_id in seen_ids:
        return None, skip_row(path, "duplicate_song_id", f"song_id {song_id!r} ({where}) is used by an "
                              "earlier row; give each song its own id")
    duration, bad = _probe(path, f"file not found ({where}); fix the path - relative paths are read from "
                                 f"{csv_path.parent}")
    if bad is not None:
        return None, bad
    return {"path": str(path), "song_id": song_id, "artist": _clean(rec.get("artist")), "label": label,
            "duration": duration}, None


# ------------------------------------------------------------------------------------------------- FMA

def fma_audio_path(audio_dir: str | Path, track_id: int) -> Path:
    """Where FMA keeps a track: ``<audio_dir>/<first 3 digits>/<6-digit id>.mp3`` (2 -> 000/000002.mp3)."""
    tid = f"{int(track_id):06d}"
    return Path(audio_dir) / tid[:3] / f"{tid}.mp3"


def _read_tracks(tracks_csv: Path) -> pd.DataFrame:
    if not tracks_csv.is_file():
        raise CollectionError(f"{tracks_csv}: FMA tracks.csv not found; it is in fma_metadata.zip")
    try:
        tracks = pd.read_csv(tracks_csv, index_col=0, header=[0, 1], low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise CollectionError(f"{tracks_csv}: cannot read it as FMA's tracks.csv ({exc}); pass the "
                              "tracks.csv from fma_metadata.zip, unchanged") from None
    missing = [f"{a}.{b}" for a, b in _FMA_COLUMNS.values() if (a, b) not in tracks.columns]
    if missing:
        raise CollectionError(f"{tracks_csv}: no {', '.join(missing)} column; this does not look like FMA's "
                              "tracks.csv (two header rows: track/album/artist/set, then field names)")
    if len(tracks) and not pd.api.types.is_integer_dtype(tracks.index):
        raise CollectionError(f"{tracks_csv}: the first column must be the numeric track_id, as in FMA's "
                              "tracks.csv; pass that file unchanged")
    return tracks


def _in_subset(tracks: pd.DataFrame, subset: str | None, tracks_csv: Path) -> pd.DataFrame:
    if subset is None or subset.strip().casefold() == "full":
        return tracks
    name = subset.strip().casefold()
    if name not in FMA_SUBSETS:
        raise CollectionError(f"{tracks_csv}: unknown FMA subset {subset!r}; "
                              f"use one of {', '.join(FMA_SUBSETS)}")
    wanted = set(FMA_SUBSETS[:FMA_SUBSETS.index(name) + 1])
    member = tracks[("set", "subset")].astype(str).str.strip().str.casefold().isin(wanted)
    return tracks.loc[member]


def _probe(path: str | Path, missing_detail: str) -> tuple[float, dict[str, Any] | None]:
    """Duration from the header, or the skip row; a missing file gets the source's own advice."""
    duration, bad = probe_duration(path)
    if bad is not None and bad["reason"] == "missing":
        bad["detail"] = missing_detail
    return duration, bad


def _fma_row(track_id: int, meta: dict[str, str | None], audio_dir: Path,
             subset: str | None) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
    """One FMA track -> a manifest row, or the ``skipped`` row saying why not."""
    path = fma_audio_path(audio_dir, track_id)
    if meta["label"] is None:
        return None, skip_row(path, "no_top_genre", f"FMA track {track_id} has no top genre "
                              "(track.genre_top); it cannot be labelled, so it is left out")
    duration, bad = _probe(path, f"no audio for FMA track {track_id}; check audio_dir and that the subset's "
                                 f"zip ({subset or 'full'}) is fully extracted")
    if bad is not None:
        return None, bad
    row = {"path": str(path), "song_id": f"fma/{track_id:06d}", "artist": meta["artist"],
           "label": meta["label"], "duration": duration, "album": meta["album"], "split": meta["split"]}
    return row, None


def fma_manifest(tracks_csv: str | Path, audio_dir: str | Path,
                 subset: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """List the FMA tracks that have a top genre and an audio file.

    Args:
        tracks_csv: FMA's ``tracks.csv`` (from ``fma_metadata.zip``).
        audio_dir: the folder of ``fma_small``/``fma_medium``/... (``000/000002.mp3`` and so on).
        subset: ``small``, ``medium``, ``large`` or ``full``; each includes the smaller ones.
            None keeps every track.

    Returns:
        ``(manifest, skipped)``: label is ``track.genre_top``, artist ``artist.name``, album
        ``album.title``, split ``set.split`` (training/validation/test), song_id ``fma/<6-digit id>``.
        Tracks without a top genre (``no_top_genre``) or audio (``missing``, ``undecodable``) are skipped.

    Raises:
        CollectionError: when a file or folder is missing, the CSV is not FMA's, or no track is usable.
    """
    tracks_csv = Path(tracks_csv).expanduser().resolve()
    audio_dir = Path(audio_dir).expanduser().resolve()
    tracks = _in_subset(_read_tracks(tracks_csv), subset, tracks_csv)
    if not audio_dir.is_dir():
        raise CollectionError(f"{audio_dir}: FMA audio folder not found; "
                              "pass the folder that holds 000/, 001/, ...")
    cols = {key: [_clean(v) for v in tracks[col].tolist()] for key, col in _FMA_COLUMNS.items()}
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for i, track_id in enumerate(tracks.index):
        meta = {key: values[i] for key, values in cols.items()}
        row, bad = _fma_row(int(track_id), meta, audio_dir, subset)
        if bad is not None:
            skipped.append(bad)
        elif row is not None:
            rows.append(row)
    log.info("%s: %d FMA tracks in subset %s, %d usable", tracks_csv, len(tracks), subset or "full",
             len(rows))
    return finish_manifest(rows, skipped, str(tracks_csv), ("album", "split"))
