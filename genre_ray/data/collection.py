"""Collections -> a manifest: one row per song, the same columns whatever the source.

Columns: ``path`` (absolute, or a URI), ``song_id`` (stable, relative to the collection root),
``artist`` (None when unknown), ``label`` (the raw genre), ``duration`` (seconds, from the
file header). Files that cannot even be opened are returned apart, with the reason, so that
the caller can report them and carry on.

The rows of that report (:data:`SKIPPED_COLUMNS`) say what was wrong in plain words (``detail``),
keep the decoder's own message (``decoder_message``), and for a file cut short
(:func:`truncated_files`) the seconds its header promised and the seconds that decoded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import soundfile as sf

from genre_ray import storage
from genre_ray.data.audio import AUDIO_EXTENSIONS, AudioError, Length, audio_length, open_audio, undecodable

__all__ = ["MANIFEST_COLUMNS", "SKIPPED_COLUMNS", "TRUNCATED", "CollectionError", "decode_report",
           "error_row", "folder_manifest", "truncated_files"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "song_id", "artist", "label", "duration"]
SKIPPED_COLUMNS = ["path", "stage", "reason", "detail", "promised_s", "read_s", "decoder_message"]
#: What ``data.truncated`` may say to do with a file cut short.
TRUNCATED = ("keep", "skip")


class CollectionError(ValueError):
    """A collection that cannot be searched at all (missing folder, no audio, one genre)."""


def folder_manifest(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """List a folder-per-genre collection (``<genre>/**/<file>``, the GTZAN layout).

    The genre is the first folder under ``root``; deeper folders are allowed. Extensions are
    matched case-insensitively; other files are ignored. ``root`` may be a URI
    (``s3://bucket/gtzan``): the files are then listed through its filesystem and the manifest's
    paths are URIs too.

    Args:
        root: the collection folder, a path or a URI.

    Returns:
        ``(manifest, skipped)``: the songs, and the audio files whose header could not be read.

    Raises:
        CollectionError: when ``root`` is missing or holds no audio in genre folders.
    """
    fs, base = storage.filesystem(root)
    shown = storage.describe(root) if storage.is_uri(root) else base
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise CollectionError(f"{shown}: not a folder; pass a folder with one sub-folder per genre")
    rows, skipped = [], []
    for path, rel in _audio_files(root, fs, base):
        parts = rel.split("/")
        if len(parts) < 2 or any(p.startswith(".") for p in parts):
            continue  # files at the top have no genre folder; hidden folders are scratch space
        try:
            with open_audio(path, header_only=True) as src:
                duration = sf.info(src).duration
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            skipped.append(error_row(undecodable(path, exc), "scan"))
            continue
        rows.append({"path": path, "song_id": os.path.splitext(rel)[0], "artist": None,
                     "label": parts[0], "duration": float(duration)})
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if manifest.empty:
        raise CollectionError(f"{shown}: no audio files in genre sub-folders "
                              f"(looked for {', '.join(AUDIO_EXTENSIONS)} under <genre>/)")
    if manifest["label"].nunique() < 2:
        raise CollectionError(f"{shown}: only one genre folder ({manifest['label'].iloc[0]}); "
                              "a classifier needs at least two")
    for row in skipped:
        log.warning("skipping %s: %s", storage.describe(row["path"]), row["detail"])
    return manifest, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)


def error_row(exc: AudioError, stage: str) -> dict[str, Any]:
    """The report row of a file that could not be used, at ``stage`` (``scan`` or ``decode``)."""
    return {"path": exc.path, "stage": stage, "reason": exc.reason, "detail": exc.detail,
            "decoder_message": exc.message or None}


def decode_report(paths: Iterable[str], errors: Iterable[str]) -> pd.DataFrame:
    """The report rows of the files that failed to decode, from their errors as the feature cache
    keeps them (:meth:`AudioError.record`)."""
    rows = [error_row(AudioError.from_record(str(p), str(e)), "decode")
            for p, e in zip(paths, errors, strict=True)]
    return pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def truncated_files(manifest: pd.DataFrame, truncated: str = "keep",
                    threads: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Find the files that end before their header says, and keep them or leave them out.

    A WAV cut to a third still decodes, as a third of the song; without this it would pass for a
    whole one. Each such file gets a report row with the seconds promised and the seconds read,
    whether it is kept or not. Files that do not decode at all are left to the decoder to report.

    Args:
        manifest: songs with ``path`` (and ``duration``).
        truncated: ``keep`` (the song is what decoded: its duration becomes the seconds read) or
            ``skip`` (left out), as ``data.truncated``.
        threads: files checked at once.

    Returns:
        ``(manifest, report)``: the songs to use, and one row per file cut short.
    """
    if truncated not in TRUNCATED:
        raise ValueError(f"truncated must be one of {', '.join(TRUNCATED)}, got {truncated!r}")
    paths = manifest["path"].astype(str).tolist()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        lengths = list(pool.map(_length, paths))
    cut = [(i, n) for i, n in enumerate(lengths) if n is not None and n.truncated]
    rows = [_truncated_row(paths[i], n, truncated) for i, n in cut]
    out = manifest.copy()
    where = out.index[[i for i, _ in cut]]
    if truncated == "skip":
        out = out.drop(index=where)
    elif cut and "duration" in out:
        out.loc[where, "duration"] = [n.read_s for _, n in cut]
    if rows:
        log.warning("%d files end before their header says (%s); each is in the data report", len(rows),
                    "kept with what decoded" if truncated == "keep" else "left out")
    return out.reset_index(drop=True), pd.DataFrame(rows, columns=SKIPPED_COLUMNS)


def _length(path: str) -> Length | None:
    if os.path.splitext(path)[1].lower() not in AUDIO_EXTENSIONS:
        return None
    try:
        return audio_length(path)
    except AudioError:
        return None


def _truncated_row(path: str, length: Length, truncated: str) -> dict[str, Any]:
    name = os.path.basename(path)
    read = f"the decoder read {length.read_s:.1f} s"
    why = (f"{name} ends early: its header promises {length.promised_s:.1f} s, {read}" if length.promised_s
           else f"{name} ends early: its Ogg stream stops before the end-of-stream page; {read}")
    what = ("kept with what decoded (data.truncated: skip leaves such files out)" if truncated == "keep"
            else "left out (data.truncated: keep would use what decoded)")
    done = "kept" if truncated == "keep" else "skipped"
    return {"path": path, "stage": "scan", "reason": f"truncated ({done})",
            "detail": f"{why}; {what}", "read_s": round(length.read_s, 3),
            "promised_s": round(length.promised_s, 3) if length.promised_s else math.nan}


def _audio_files(root: str | Path, fs: pafs.FileSystem, base: str) -> list[tuple[str, str]]:
    """``(path, path relative to the root)`` of every audio file under the root, sorted.

    A local folder is walked by pathlib, which does not follow symbolic links to folders (so a
    link loop ends); other filesystems are listed by pyarrow, and give URIs.
    """
    def audio(name: str) -> bool:
        return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS

    if isinstance(fs, pafs.LocalFileSystem):
        top = Path(base)
        return [(str(p), p.relative_to(top).as_posix()) for p in sorted(top.rglob("*"))
                if audio(p.name) and p.is_file()]
    found = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    rels = sorted(f.path[len(base.rstrip("/")) + 1:] for f in found
                  if f.type == pafs.FileType.File and audio(f.path))
    return [(storage.join(str(root), rel), rel) for rel in rels]
