"""Feature tables in the layout of the GTZAN features CSV, and spectrogram image folders.

A feature table (``filename, length, <feature columns>, label``) is searched without audio:
each row is one "clip" of its song, so the 3-second table (``blues.00000.3.wav``) gives ten rows
per song and song-level aggregation and song-level splits work as for audio. An image folder
(``<Class>/*.jpg|png``, as in the POG spectrogram set) gives one image per song.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from genre_ray.data.collection import MANIFEST_COLUMNS, SKIPPED_COLUMNS, CollectionError

__all__ = ["IMAGE_EXTENSIONS", "image_manifest", "song_of_filename", "table_manifest"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_NOT_FEATURES = {"filename", "length", "label", "song_id", "artist", "split", "path"}
_SEGMENT = re.compile(r"^(?P<song>.+\.\d+)\.(?P<segment>\d+)$")


def song_of_filename(filename: str) -> str:
    """``blues.00000.3.wav`` -> ``blues.00000`` (segments of one song share it); else the stem."""
    stem = Path(str(filename)).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    match = _SEGMENT.match(stem)
    return match.group("song") if match else stem


def table_manifest(csv_path: str | Path) -> tuple[pd.DataFrame, np.ndarray, list[str], pd.DataFrame]:
    """Read a feature table.

    Args:
        csv_path: a CSV with ``filename`` and ``label`` columns and numeric feature columns
            (``length`` is ignored; optional ``artist``, ``split`` and ``song_id``).

    Returns:
        ``(rows, features, names, skipped)``: one manifest row per table row (``song_id`` groups
        the segments of a song, ``sha`` identifies the row), the ``(n, d)`` float32 features,
        the feature names, and the rows left out with their reason.

    Raises:
        CollectionError: when the file is missing or has no label, filename or feature columns.
    """
    path = Path(csv_path).expanduser().resolve()
    if not path.is_file():
        raise CollectionError(f"{path}: feature table not found; give the CSV's path in data.path")
    table = pd.read_csv(path)
    missing = [c for c in ("filename", "label") if c not in table]
    if missing:
        raise CollectionError(f"{path}: feature table needs columns {missing}; it has {list(table.columns)[:8]}...")
    names = [c for c in table.columns if c not in _NOT_FEATURES and pd.api.types.is_numeric_dtype(table[c])]
    if not names:
        raise CollectionError(f"{path}: no numeric feature columns besides filename, length and label")
    values = table[names].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    skipped = pd.DataFrame({"path": [f"{path}#{f}" for f in table.loc[bad, "filename"]], "stage": "scan",
                            "reason": "nan_features", "detail": "a feature value is empty or not a number"},
                           columns=SKIPPED_COLUMNS)
    table, values = table[~bad].reset_index(drop=True), values[~bad]
    song = table["song_id"].astype(str) if "song_id" in table else table["filename"].map(song_of_filename)
    rows = pd.DataFrame({
        "path": [f"{path}#{f}" for f in table["filename"]], "song_id": song,
        "artist": table["artist"] if "artist" in table else None, "label": table["label"].astype(str),
        "duration": np.nan,
        "sha": [hashlib.sha256(f"{path}#{f}".encode()).hexdigest() for f in table["filename"]],
    })
    if "split" in table:
        rows["split"] = table["split"]
    log.info("feature table %s: %d rows, %d songs, %d features", path, len(rows), rows["song_id"].nunique(),
             len(names))
    return rows, values.astype(np.float32), names, skipped


def image_manifest(root: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """List a ``<Class>/*.jpg|png`` folder; one image is one song."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CollectionError(f"{root}: not a folder; give a folder with one sub-folder of images per class")
    rows = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and len(rel.parts) >= 2 \
                and not any(p.startswith(".") for p in rel.parts):
            rows.append({"path": str(path), "song_id": rel.with_suffix("").as_posix(), "artist": None,
                         "label": rel.parts[0], "duration": np.nan})
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    if manifest["label"].nunique() < 2:
        raise CollectionError(f"{root}: needs images in at least two class folders (<Class>/*.jpg or png)")
    return manifest, pd.DataFrame(columns=SKIPPED_COLUMNS)
