"""Collections -> a manifest: one row per song, the same columns whatever the source.

Columns: ``path`` (absolute), ``song_id`` (stable, relative to the collection root),
``artist`` (None when unknown), ``label`` (the raw genre), ``duration`` (seconds, from the
file header). Files that cannot even be opened are returned apart, with the reason, so that
the caller can report them and carry on.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import soundfile as sf

from genre_ray.data.audio import AUDIO_EXTENSIONS

__all__ = ["MANIFEST_COLUMNS", "SKIPPED_COLUMNS", "CollectionError", "folder_manifest"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["path", "song_id", "artist", "label", "duration"]
SKIPPED_COLUMNS = ["path", "stage", "reason", "detail"]


class CollectionError(ValueError):
    """A collection that cannot be searched at all (missing folder, no audio, one genre)."""


def folder_manifest(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """List a folder-per-genre collection (``<genre>/**/<file>``, the GTZAN layout).

    The genre is the first folder under ``root``; deeper folders are allowed. Extensions are
    matched case-insensitively; other files are ignored.

    Args:
        root: the collection folder.

    Returns:
        ``(manifest, skipped)``: the songs, and the audio files whose header could not be read.

    Raises:
        CollectionError: when ``root`` is missing or holds no audio in genre folders.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CollectionError(f"{root}: not a folder; pass a folder with one sub-folder per genre")
    rows, skipped = [], []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        rel = path.relative_to(root)
        if len(rel.parts) < 2 or any(p.startswith(".") for p in rel.parts):
            continue  # files at the top have no genre folder; hidden folders are scratch space
        try:
            duration = sf.info(str(path)).duration
        except (sf.LibsndfileError, RuntimeError, OSError) as exc:
            skipped.append({"path": str(path), "stage": "scan", "reason": "undecodable",
                            "detail": f"cannot read the audio header ({exc})"})
            continue
        rows.append({"path": str(path), "song_id": rel.with_suffix("").as_posix(), "artist": None,
                     "label": rel.parts[0], "duration": float(duration)})
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if manifest.empty:
        raise CollectionError(f"{root}: no audio files in genre sub-folders "
                              f"(looked for {', '.join(AUDIO_EXTENSIONS)} under <genre>/)")
    if manifest["label"].nunique() < 2:
        raise CollectionError(f"{root}: only one genre folder ({manifest['label'].iloc[0]}); "
                              "a classifier needs at least two")
    for row in skipped:
        log.warning("skipping %s: %s", row["path"], row["detail"])
    return manifest, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
