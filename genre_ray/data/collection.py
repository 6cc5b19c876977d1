"""Collections -> a manifest: one row per song, the same columns whatever the source.

Columns: ``path`` (absolute, or a URI), ``song_id`` (stable, relative to the collection root),
``artist`` (None when unknown), ``label`` (the raw genre), ``duration`` (seconds, from the
file header). Files that cannot even be opened are returned apart, with the reason, so that
the caller can report them and carry on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import soundfile as sf

from genre_ray import storage
from genre_ray.data.audio import AUDIO_EXTENSIONS, open_audio

__all__ = ["MANIFEST_COLUMNS", "SKIPPED_COLUMNS", "CollectionError", "folder_manifest"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "song_id", "artist", "label", "duration"]
SKIPPED_COLUMNS = ["path", "stage", "reason", "detail"]


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
            skipped.append({"path": path, "stage": "scan", "reason": "undecodable",
                            "detail": f"cannot read the audio header ({exc})"})
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
