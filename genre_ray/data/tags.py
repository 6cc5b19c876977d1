"""Genre tags -> a manifest: a library in any folder layout, each song labelled by its genre tag.

Tags are read with mutagen: ID3 ``TCON`` (ID3v1 numeric genres such as ``17``, ``(17)`` or
``(17)Rock`` resolve to ``Rock``), Vorbis/FLAC/Opus ``GENRE`` comments and MP4 ``©gen``; artist from
``TPE1``/``ARTIST``/``©ART`` (else the album artist) and album from ``TALB``/``ALBUM``/``©alb``.
A tag may hold several genres (several values, or one value with ``;`` between them).

An optional mapping (YAML or dict) turns raw tag spellings into canonical genres::

    rock: ["classic rock", "prog rock", "*rock"]         # exact spellings and fnmatch globs
    hip-hop: ["hip hop", "rap", "re:^hip.?hop"]          # re: = a regular expression (re.search)

Matching ignores case and runs of spaces (:func:`~genre_ray.data.tasks.normalise_label`); each
canonical name matches itself; exact spellings win over patterns, then patterns in file order. Of
several genres, the first that maps is the label (a value like ``Rock/Pop`` is also tried as its
parts). Without a mapping each raw genre is its own label, spelled as first seen.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mutagen
import pandas as pd
import yaml
from mutagen.id3 import TCON

from genre_ray.data.audio import AUDIO_EXTENSIONS
from genre_ray.data.collection import MANIFEST_COLUMNS, SKIPPED_COLUMNS, CollectionError
from genre_ray.data.manifests import (
    finish_manifest,
    none_for_missing,
    probe_duration,
    skip_row,
    unique_song_ids,
)
from genre_ray.data.tasks import normalise_label

__all__ = ["NO_GENRE", "TAG_COLUMNS", "UNMAPPED_COLUMNS", "GenreMapping", "TagInfo", "choose_label",
           "extract_tags", "load_mapping", "read_tags", "scan_tags", "tag_manifest", "walk_audio"]

log = logging.getLogger(__name__)

#: Columns of the unmapped-genre report.
UNMAPPED_COLUMNS = ["raw_genre", "files"]
#: Columns a tag manifest has after MANIFEST_COLUMNS (``raw_genres``: every genre value, ``; ``-joined).
TAG_COLUMNS = ["album", "raw_genres"]
#: Tag values that mean "no genre" (compared after normalise_label).
NO_GENRE = frozenset({"", "unknown", "<unknown>", "none", "n/a", "-", "?"})

# Tag keys per field, case-folded: ID3 frame, MP4 atom, then the Vorbis/APE/easy name.
_KEYS = {"genre": ("tcon", "©gen", "genre"), "artist": ("tpe1", "©art", "artist"),
         "albumartist": ("tpe2", "aart", "albumartist", "album artist", "album_artist"),
         "album": ("talb", "©alb", "album")}
_SCALAR = (str, int, float)
_ID3V1_CODE = re.compile(r"(?:\((?:\d+|RX|CR)\))+|\d+$")


@dataclass(frozen=True)
class TagInfo:
    """What the tags of one file say: every genre value (in tag order), artist and album."""

    genres: tuple[str, ...] = ()
    artist: str | None = None
    album: str | None = None


# ------------------------------------------------------------------------------------------ reading

def walk_audio(root: Path) -> list[Path]:
    """Audio files under ``root``, sorted; hidden files and folders skipped, symlinked folders not entered."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS]
    return found


def _texts(value: Any) -> list[str]:
    """The text values of one tag: an ID3 frame, a list of strings (MP4, Vorbis) or a scalar."""
    if hasattr(value, "genres"):  # ID3 TCON: mutagen resolves ID3v1 codes
        return [str(v) for v in value.genres]
    if hasattr(value, "text"):  # other ID3 text frames
        return [str(v) for v in value.text]
    if isinstance(value, bytes):
        return [value.decode("utf-8", "replace")]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def _values(tags: Any, names: Sequence[str]) -> list[str]:
    """Non-empty values of the first of ``names`` (case-insensitive keys) that ``tags`` has."""
    keys = {str(k).casefold(): k for k in tags.keys()}
    for name in names:
        if name in keys:
            values = [v.strip() for v in _texts(tags[keys[name]]) if v and v.strip()]
            if values:
                return values
    return []


def _genres(values: Sequence[str]) -> tuple[str, ...]:
    """Split ``;``/NUL-joined values, resolve ID3v1 codes, drop "unknown" and repeats."""
    out: dict[str, str] = {}
    for value in values:
        for part in re.split(r"[;\x00]", value):
            part = part.strip()
            resolved = TCON(encoding=3, text=[part]).genres if _ID3V1_CODE.match(part) else [part]
            for genre in resolved:
                key = normalise_label(genre)
                if key not in NO_GENRE:
                    out.setdefault(key, genre.strip())
    return tuple(out.values())


def extract_tags(tags: Any) -> TagInfo:
    """Genres, artist and album from a mutagen tag object (ID3, MP4Tags, VComment) or any mapping.

    Args:
        tags: ``mutagen.File(path).tags``, or a dict like ``{"©gen": ["Rock"], "©ART": ["X"]}``; None.

    Returns:
        A :class:`TagInfo`; empty fields when the tag is absent.
    """
    if tags is None:
        return TagInfo()
    artist = _values(tags, _KEYS["artist"]) or _values(tags, _KEYS["albumartist"])
    album = _values(tags, _KEYS["album"])
    return TagInfo(genres=_genres(_values(tags, _KEYS["genre"])), artist=artist[0] if artist else None,
                   album=album[0] if album else None)


def read_tags(path: str | Path) -> TagInfo:
    """Read one file's tags (any format mutagen knows); a file without tags gives an empty TagInfo.

    Raises:
        mutagen.MutagenError, OSError: when the tags cannot be read.
    """
    audio = mutagen.File(str(path))
    return extract_tags(None if audio is None else audio.tags)


# ------------------------------------------------------------------------------------------ mapping

@dataclass(frozen=True)
class GenreMapping:
    """Raw tag spellings -> canonical genres (see the module docstring for the rules)."""

    exact: dict[str, str]
    patterns: tuple[tuple[str, Callable[[str], bool]], ...]
    genres: tuple[str, ...]
    source: str = "the mapping"

    def map(self, raw: str) -> str | None:
        """The canonical genre of one raw genre string, or None."""
        key = normalise_label(raw)
        if key in self.exact:
            return self.exact[key]
        return next((genre for genre, test in self.patterns if test(key)), None)


def _pattern(pattern: str, source: str) -> Callable[[str], bool] | None:
    """A test for a ``re:`` or glob pattern; None for an exact spelling."""
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:].strip(), re.IGNORECASE)
        except re.error as exc:
            raise CollectionError(f"{source}: bad regular expression {pattern!r} ({exc}); fix it") from None
        return lambda key: rx.search(key) is not None
    if any(c in pattern for c in "*?["):
        glob = normalise_label(pattern)
        return lambda key: fnmatch.fnmatchcase(key, glob)
    return None


def _build_mapping(spec: Mapping[Any, Any], source: str) -> GenreMapping:
    exact: dict[str, str] = {}
    patterns: list[tuple[str, Callable[[str], bool]]] = []
    for canonical, raw in spec.items():
        genre = str(canonical).strip()
        values = [] if raw is None else [raw] if isinstance(raw, _SCALAR) else raw
        if not genre or not isinstance(values, list) or not all(isinstance(v, _SCALAR) for v in values):
            raise CollectionError(f"{source}: {canonical!r} must be a genre name with a list of tag "
                                  f"spellings, e.g. rock: [\"classic rock\", \"prog*\"]; got {raw!r}")
        for value in [genre, *(str(v) for v in values)]:
            test = None if value == genre else _pattern(value, source)
            if test is not None:
                patterns.append((genre, test))
                continue
            key = normalise_label(value)
            if exact.setdefault(key, genre) != genre:
                raise CollectionError(f"{source}: {value!r} is listed under both {exact[key]!r} and "
                                      f"{genre!r}; keep it under one genre")
    if not spec:
        raise CollectionError(f"{source}: the mapping lists no genre; write genre: [tag spellings] lines")
    return GenreMapping(exact, tuple(patterns), tuple(str(k).strip() for k in spec), source)


def load_mapping(mapping: str | Path | Mapping[Any, Any] | None) -> GenreMapping | None:
    """Read a genre mapping from a YAML file or a dict; None stays None (each raw genre is its own label).

    Raises:
        CollectionError: when the file is missing or not a mapping of genre -> list of spellings.
    """
    if mapping is None or isinstance(mapping, GenreMapping):
        return mapping
    if isinstance(mapping, Mapping):
        return _build_mapping(mapping, "the genre mapping")
    path = Path(mapping).expanduser()
    if not path.is_file():
        raise CollectionError(f"{path}: genre mapping not found; pass a YAML file of genre: [tag spellings]")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CollectionError(f"{path}: not valid YAML ({exc}); "
                              "quote spellings that start with * or [") from None
    if not isinstance(spec, Mapping):
        raise CollectionError(f"{path}: must be a YAML mapping of genre: [tag spellings], "
                              f"not {type(spec).__name__}")
    return _build_mapping(spec, str(path))


def choose_label(genres: Sequence[str], mapping: GenreMapping) -> str | None:
    """The canonical genre of the first raw genre that maps (``A/B`` and ``A, B`` also tried as parts)."""
    for raw in genres:
        parts = [p.strip() for p in re.split(r"[/,|]", raw) if p.strip()]
        for candidate in [raw, *(parts if len(parts) > 1 else [])]:
            label = mapping.map(candidate)
            if label is not None:
                return label
    return None


# ---------------------------------------------------------------------------------------- manifest

def _unmapped_table(counts: Counter[str], spelling: dict[str, str]) -> pd.DataFrame:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return pd.DataFrame([(spelling[k], n) for k, n in rows], columns=UNMAPPED_COLUMNS)


def _read_one(path: Path) -> tuple[float, TagInfo | None, dict[str, str] | None]:
    """Duration and tags of one file, or the ``skipped`` row: missing, undecodable, untagged."""
    duration, bad = probe_duration(path)
    if bad is not None:
        return duration, None, bad
    try:
        info = read_tags(path)
    except Exception as exc:  # mutagen raises many types on damaged files; one file must not stop a scan
        return duration, None, skip_row(path, "unreadable_tags", f"cannot read its tags "
                                        f"({type(exc).__name__}: {exc}); re-save the tags with a tag editor")
    if not info.genres:
        return duration, None, skip_row(path, "no_genre_tag", "has no genre tag; add one with a tag editor, "
                                        "or list the file in a CSV manifest (data.source: csv)")
    return duration, info, None


def _label(info: TagInfo, rules: GenreMapping | None, labels: dict[str, str]) -> str | None:
    """The mapped genre; without a mapping the first raw genre, spelled as first seen in the scan."""
    if rules is not None:
        return choose_label(info.genres, rules)
    return labels.setdefault(normalise_label(info.genres[0]), info.genres[0])


def scan_tags(root: str | Path, mapping: str | Path | Mapping[Any, Any] | None = None
              ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Like :func:`tag_manifest`, but an empty or one-genre result is returned, not refused."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise CollectionError(f"{root}: not a folder; pass the folder that holds your music library")
    rules = load_mapping(mapping)
    files = walk_audio(root)
    ids = unique_song_ids(p.relative_to(root).as_posix() for p in files)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    labels: dict[str, str] = {}
    spelling: dict[str, str] = {}
    unmapped: Counter[str] = Counter()
    for path, song_id in zip(files, ids, strict=True):
        duration, info, bad = _read_one(path)
        label = None if info is None else _label(info, rules, labels)
        if info is not None and label is None and rules is not None:
            for genre in info.genres:
                spelling.setdefault(normalise_label(genre), genre)
                unmapped[normalise_label(genre)] += 1
            bad = skip_row(path, "unmapped_genre", f"genre {'; '.join(info.genres)!r} matches no genre in "
                           f"{rules.source}; add the spelling there to use the file")
        if bad is not None:
            skipped.append(bad)
            continue
        assert info is not None  # _read_one gives the tags or the reason there are none
        rows.append({"path": str(path), "song_id": song_id, "artist": info.artist, "label": label,
                     "duration": duration, "album": info.album, "raw_genres": "; ".join(info.genres)})
    manifest = pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, *TAG_COLUMNS])
    return (none_for_missing(manifest, ["artist", *TAG_COLUMNS]),
            pd.DataFrame(skipped, columns=SKIPPED_COLUMNS), _unmapped_table(unmapped, spelling))


def tag_manifest(root: str | Path, mapping: str | Path | Mapping[Any, Any] | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """List a music library of any folder layout, labelled by each file's genre tag.

    Args:
        root: the library folder (searched recursively; hidden folders skipped, symlinked folders
            not entered).
        mapping: a YAML file or dict of canonical genre -> tag spellings/patterns; None makes each
            raw genre its own label.

    Returns:
        ``(manifest, skipped, unmapped)``: the songs (MANIFEST_COLUMNS plus ``album`` and
        ``raw_genres``); files left out with their reason (``no_genre_tag``, ``unmapped_genre``,
        ``unreadable_tags``, ``undecodable``); and ``unmapped`` (``raw_genre``, ``files``), the raw
        genres no mapping entry matched, most files first.

    Raises:
        CollectionError: when ``root`` or the mapping is unusable, or fewer than two genres remain.
    """
    manifest, skipped, unmapped = scan_tags(root, mapping)
    why = ", ".join(f"{n} {r}" for r, n in skipped["reason"].value_counts().items())
    top = ", ".join(f"{g!r} ({n})" for g, n in unmapped.head(5).itertuples(index=False))
    log.info("tags: %d songs in %d genres under %s; skipped %d%s%s", len(manifest),
             manifest["label"].nunique(), root, len(skipped), f" ({why})" if why else "",
             f"; most common unmapped: {top}" if top else "")
    hint = ("; extend the mapping with the spellings in the unmapped report" if len(unmapped)
            else "; add genre tags to the files" if len(skipped)
            else f"; no audio files ({', '.join(AUDIO_EXTENSIONS)}) found under it")
    manifest, skipped = finish_manifest(manifest.to_dict("records"), skipped.to_dict("records"),
                                        str(Path(root).expanduser().resolve()), TAG_COLUMNS, hint)
    return manifest, skipped, unmapped
