"""Write predicted genres into audio files safely, with an undo log that restores them byte for byte.

Each file is tagged through a copy: the original is copied (and hashed) to a hidden temporary file
in its own folder, mutagen writes the genre into the copy (ID3 ``TCON`` for MP3, WAV and AIFF;
Vorbis ``GENRE`` for FLAC, Ogg Vorbis/Opus/FLAC; MP4 ``©gen``), the copy is flushed to disk and
checked (it still decodes, every decoded sample equals the original's, the genre reads back), and
only then ``os.replace`` puts it in the original's place. A failure at any step removes the copy
and leaves the original as it was; ``os.replace`` is atomic, so no reader ever sees half a file.

Undo keeps the original bytes themselves: before the replace, the original file is hard-linked
(copied where the undo folder is on another file system) into ``<undo dir>/originals/``, and a
line of ``<undo dir>/undo.jsonl`` records the path, the backup and the SHA-256 of the file before
and after tagging. :func:`undo` puts each backup back the same safe way, after checking that the
file's hash is still the one tagging left (a file changed since is refused and not touched) and
that the restored file hashes to the original's. The backups take the originals' disk space until
the undo folder is deleted.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from genre_ray._faults import pause_point
from genre_ray.data.tags import read_tags
from genre_ray.data.tasks import normalise_label

__all__ = ["PLAN_COLUMNS", "RESULT_COLUMNS", "TagWriteError", "UndoLog", "apply_plan", "plan_tags",
           "sha256_file", "undo", "write_genre"]

log = logging.getLogger(__name__)

#: Columns of :func:`plan_tags`; ``action`` is ``tag`` or ``skip`` (then ``reason`` says why).
PLAN_COLUMNS = ["path", "genre", "confidence", "action", "reason"]
#: Columns of :func:`apply_plan` and :func:`undo`.
RESULT_COLUMNS = ["path", "genre", "previous", "status", "detail"]

# mutagen file type -> tag family; other types (AU, APEv2-only formats...) are refused.
_FAMILIES = {"MP3": "id3", "WAVE": "id3", "AIFF": "id3", "FLAC": "vorbis", "OggVorbis": "vorbis",
             "OggOpus": "vorbis", "OggFLAC": "vorbis", "MP4": "mp4"}
_TMP_SUFFIX = ".genre-tmp"
_BLOCK_FRAMES = 1 << 18  # audio is compared in blocks, so a long file needs little memory
_CHUNK = 1 << 20


class TagWriteError(Exception):
    """A file that was not tagged (or not restored); the original is untouched. ``reason``: a category."""

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.reason, self.detail = reason, detail


# ------------------------------------------------------------------------------------------ helpers

def sha256_file(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_hashing(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` (which exists), flush it to disk, return the SHA-256 of the bytes copied."""
    digest = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for chunk in iter(lambda: fin.read(_CHUNK), b""):
            digest.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copymode(src, dst)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some platforms cannot open a folder; the replace is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clear_stale_temps(path: Path, every: bool = False) -> None:
    """Remove temporary copies of ``path`` (``every``: of any file in its folder) that a killed
    tagging run left beside it; only tagging writes names like ``.<file>.<random>.genre-tmp``."""
    for stale in path.parent.glob(f".{'*' if every else glob_escape(path.name)}.*{_TMP_SUFFIX}"):
        stale.unlink(missing_ok=True)


def _temp_beside(path: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    return Path(name)


def _same_audio(a: Path, b: Path) -> bool:
    """True when both files decode to the same format and exactly the same samples."""
    with sf.SoundFile(a) as fa, sf.SoundFile(b) as fb:
        if (fa.frames, fa.samplerate, fa.channels) != (fb.frames, fb.samplerate, fb.channels):
            return False
        while True:  # float64 holds every integer PCM sample exactly
            xa = fa.read(_BLOCK_FRAMES, dtype="float64")
            xb = fb.read(_BLOCK_FRAMES, dtype="float64")
            if not np.array_equal(xa, xb, equal_nan=True):
                return False
            if len(xa) == 0:
                return True


def _open_taggable(path: Path) -> tuple[Any, str]:
    """The mutagen object of a file and its tag family (``id3``, ``vorbis``, ``mp4``).

    Raises:
        TagWriteError: for a file mutagen cannot read or a format genres are not written to.
    """
    import mutagen

    try:
        audio = mutagen.File(str(path))
    except Exception as exc:  # mutagen raises many types on damaged files
        raise TagWriteError(path, "unreadable_tags",
                            f"mutagen cannot read it ({type(exc).__name__}: {exc})") from None
    family = _FAMILIES.get(type(audio).__name__) if audio is not None else None
    if family is None:
        kind = "an unknown format" if audio is None else type(audio).__name__
        raise TagWriteError(path, "unsupported_format", f"{kind}: genre tags are written only to "
                            f"{', '.join(sorted(_FAMILIES))} files")
    return audio, family


def _set_genre(path: Path, genre: str) -> None:
    """Write ``genre`` as the only genre of the file at ``path`` (in place: call it on a copy)."""
    from mutagen.id3 import TCON

    audio, family = _open_taggable(path)
    if audio.tags is None:
        audio.add_tags()
    if family == "id3":
        audio.tags.setall("TCON", [TCON(encoding=3, text=[genre])])
    elif family == "vorbis":
        audio.tags["GENRE"] = [genre]  # replaces every genre comment, whatever its case
    else:
        audio.tags["\xa9gen"] = [genre]
    audio.save()


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns


# ------------------------------------------------------------------------------------------ undo log

@dataclass
class UndoLog:
    """An undo folder: ``undo.jsonl`` (one JSON object per tagged file) and ``originals/`` (the backups)."""

    folder: Path
    _kept: int | None = None  # backups in originals/, counted once

    def __post_init__(self) -> None:
        self.folder = Path(self.folder).expanduser().resolve()
        (self.folder / "originals").mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        return self.folder / "undo.jsonl"

    @classmethod
    def new(cls, parent: str | os.PathLike[str]) -> UndoLog:
        """A fresh undo folder ``<parent>/tag-<UTC time>[-n]`` (each tagging run gets its own)."""
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
        parent = Path(parent).expanduser()
        parent.mkdir(parents=True, exist_ok=True)
        for n in range(1000):
            folder = parent / (f"tag-{stamp}" + (f"-{n}" if n else ""))
            try:
                folder.mkdir()
                return cls(folder)
            except FileExistsError:
                continue
        raise TagWriteError(parent, "undo_folder", "cannot create a new undo folder there")

    def keep(self, path: Path, sha: str) -> str:
        """Keep the original bytes of ``path`` (SHA-256 ``sha``); returns the backup's name in the folder."""
        if self._kept is None:
            self._kept = sum(1 for _ in (self.folder / "originals").iterdir())
        rel = f"originals/{self._kept:06d}-{sha[:12]}{path.suffix}"
        self._kept += 1
        try:
            os.link(path, self.folder / rel)  # the original inode itself: no copy, no time
        except OSError:  # another file system, or links not allowed
            shutil.copy2(path, self.folder / rel)
            if sha256_file(self.folder / rel) != sha:
                raise TagWriteError(path, "backup_failed", "its backup copy does not match it") from None
        return rel

    def record(self, entry: dict[str, Any]) -> None:
        """Append one entry and flush it to disk before the tagged file replaces the original."""
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line[:len(line) // 2])
            pause_point("tagwrite.mid_record", flush=fh)
            fh.write(line[len(line) // 2:])
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[dict[str, Any]]:
        """The entries written so far, oldest first."""
        return read_entries(self.path)


def read_entries(log_file: Path) -> list[dict[str, Any]]:
    """The entries of an undo log, oldest first.

    A last line cut short (a run killed while writing it) is left out with a warning: its entry is
    written before its file is replaced, so that file still holds its original bytes.
    """
    if not log_file.is_file():
        return []
    lines = [line for line in log_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    entries = []
    for i, line in enumerate(lines):
        try:
            entries.append(json.loads(line))
        except ValueError:
            if i != len(lines) - 1:
                raise TagWriteError(log_file, "undo_log", f"line {i + 1} is not an undo entry; the log was "
                                    "changed by hand") from None
            log.warning("%s: its last line was cut short (a tagging run killed while writing it); that "
                        "file had not been replaced yet and is left out", log_file)
    return entries


# ------------------------------------------------------------------------------------------ writing

def write_genre(path: str | os.PathLike[str], genre: str, undo_log: UndoLog) -> str:
    """Tag one file with ``genre`` through a checked temporary copy, keeping its original in ``undo_log``.

    Args:
        path: the audio file.
        genre: the genre to write (replaces any genre the file has).
        undo_log: where the original bytes and the undo entry go.

    Returns:
        The SHA-256 of the tagged file.

    Raises:
        TagWriteError: when the file could not be tagged safely; the original is then untouched and
            no temporary file is left behind.
    """
    path = Path(path).expanduser().resolve()
    before = os.stat(path)
    if before.st_nlink > 1:
        raise TagWriteError(path, "hard_linked", "has other hard links, which tagging a copy would break "
                            "apart; tag one of them by hand")
    _clear_stale_temps(path)
    tmp = _temp_beside(path)
    try:
        sha_before = _copy_hashing(path, tmp)
        try:
            _set_genre(tmp, genre)
        except TagWriteError as exc:  # name the user's file, not the temporary copy
            raise TagWriteError(path, exc.reason, exc.detail) from None
        _fsync_file(tmp)
        _verify(path, tmp, genre)
        sha_after = sha256_file(tmp)
        if _stat_key(os.stat(path)) != _stat_key(before):
            raise TagWriteError(path, "changed", "changed while it was being tagged; not touched")
        backup = undo_log.keep(path, sha_before)
        undo_log.record({"path": str(path), "backup": backup, "sha256_before": sha_before,
                         "sha256_after": sha_after, "genre": genre, "size_before": before.st_size,
                         "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
        pause_point("tagwrite.before_replace")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return sha_after


def _verify(original: Path, tagged: Path, genre: str) -> None:
    """The tagged copy decodes to the original's samples and its genre reads back."""
    try:
        same = _same_audio(original, tagged)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise TagWriteError(original, "unverifiable", f"the tagged copy cannot be decoded to check it "
                            f"({exc}); not touched") from None
    if not same:
        raise TagWriteError(original, "audio_changed", "tagging changed its decoded audio; not touched")
    genres = read_tags(tagged).genres
    if not genres or normalise_label(genres[0]) != normalise_label(genre):
        raise TagWriteError(original, "tag_not_written", f"the genre did not read back (got {genres}); "
                            "not touched")


def plan_tags(predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Which files get which genre: those predicted without error at ``confidence >= threshold``.

    Args:
        predictions: one row per song with ``path``, ``genre``, ``confidence`` and optionally
            ``error`` (``python -m genre_ray.tag``'s table); ``size`` and ``mtime_ns`` when present
            are kept, so that a file changed since its prediction is not tagged.
        threshold: the least confidence that is written, in [0, 1].

    Returns:
        One row per song: :data:`PLAN_COLUMNS` (plus ``size``/``mtime_ns`` when given), ``action``
        ``tag`` or ``skip`` with ``reason`` ``prediction_failed`` or ``below_threshold``.

    Raises:
        ValueError: for a threshold outside [0, 1] or a table without the needed columns.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: must be in [0, 1], got {threshold}")
    missing = {"path", "genre", "confidence"} - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions: missing column(s) {sorted(missing)}; pass the table that "
                         "python -m genre_ray.tag wrote")
    keep = [c for c in ("path", "genre", "confidence", "size", "mtime_ns") if c in predictions]
    plan = predictions[keep].copy()
    error = predictions["error"] if "error" in predictions else pd.Series(None, index=predictions.index)
    failed = error.notna() & (error.astype(str) != "") | plan["genre"].isna()
    low = ~failed & ~(plan["confidence"].astype(float) >= threshold)
    plan["action"] = np.where(failed | low, "skip", "tag")
    plan["reason"] = np.select([failed, low], ["prediction_failed", "below_threshold"], "")
    return plan.reset_index(drop=True)


def _changed_since_prediction(row: Any) -> bool:
    size, mtime = getattr(row, "size", None), getattr(row, "mtime_ns", None)
    if size is None or mtime is None or pd.isna(size) or pd.isna(mtime):
        return False
    st = os.stat(row.path)
    return (st.st_size, st.st_mtime_ns) != (int(size), int(mtime))


def _one(row: Any, undo_log: UndoLog | None, overwrite: bool) -> dict[str, Any]:
    """Tag (or, without ``undo_log``, only check) one planned file; never raises for a file's problem."""
    out = {"path": row.path, "genre": row.genre, "previous": "", "status": "skipped", "detail": ""}
    try:
        if not Path(row.path).is_file():
            return {**out, "detail": "missing: the file is gone"}
        if _changed_since_prediction(row):
            return {**out, "detail": "changed_since_prediction: predict it again before tagging"}
        previous = read_tags(row.path).genres
        out["previous"] = "; ".join(previous)
        if previous and normalise_label(previous[0]) == normalise_label(row.genre) and len(previous) == 1:
            return {**out, "detail": "same_genre: already tagged with it"}
        if previous and not overwrite:
            return {**out, "detail": "already_tagged: has a genre (--overwrite replaces it)"}
        if undo_log is None:
            _open_taggable(Path(row.path))
            return {**out, "status": "would_write"}
        write_genre(row.path, row.genre, undo_log)
        return {**out, "status": "written"}
    except TagWriteError as exc:
        return {**out, "status": "failed", "detail": f"{exc.reason}: {exc.detail}"}
    except Exception as exc:  # a damaged file must not stop the others
        return {**out, "status": "failed", "detail": f"{type(exc).__name__}: {exc}"}


def apply_plan(plan: pd.DataFrame, undo_dir: str | os.PathLike[str] | None = None, *,
               overwrite: bool = False) -> tuple[pd.DataFrame, UndoLog | None]:
    """Carry out a :func:`plan_tags` plan: a dry run without ``undo_dir``, else write the tags.

    Args:
        plan: the plan; only ``action == "tag"`` rows are looked at.
        undo_dir: the parent folder of this run's undo folder (see :meth:`UndoLog.new`); None: dry run,
            nothing is written anywhere.
        overwrite: also replace a genre a file already has (default: such files are skipped).

    Returns:
        One row per planned file (:data:`RESULT_COLUMNS`; ``status`` ``written``, ``would_write``,
        ``skipped`` or ``failed``), and the undo log (None for a dry run).
    """
    undo_log = UndoLog.new(undo_dir) if undo_dir is not None else None
    rows = [_one(row, undo_log, overwrite) for row in plan[plan["action"] == "tag"].itertuples(index=False)]
    if undo_log is not None and not undo_log.entries():  # nothing written: leave no empty undo folder
        (undo_log.folder / "originals").rmdir()
        undo_log.folder.rmdir()
        undo_log = None
    return pd.DataFrame(rows, columns=RESULT_COLUMNS), undo_log


# ------------------------------------------------------------------------------------------ undo

def _restore(path: Path, backup: Path, sha_before: str) -> None:
    """Put ``backup`` in place of ``path`` through a temporary file beside it; check the hash."""
    tmp = _temp_beside(path)
    try:
        tmp.unlink()
        try:
            os.link(backup, tmp)
        except OSError:
            shutil.copy2(backup, tmp)
            _fsync_file(tmp)
        if sha256_file(tmp) != sha_before:
            raise TagWriteError(path, "backup_damaged", f"its backup {backup} does not hash to the original; "
                                "not touched")
        pause_point("undo.before_replace")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _undo_one(entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    path, backup = Path(entry["path"]), folder / entry["backup"]
    out = {"path": str(path), "genre": entry.get("genre", ""), "previous": "", "status": "refused",
           "detail": ""}
    if not path.is_file():
        return {**out, "detail": "missing: the file is gone; its original is kept at " + str(backup)}
    _clear_stale_temps(path, every=True)  # a run killed mid-entry left its file's copy, and no entry for it
    current = sha256_file(path)
    if current == entry["sha256_before"]:
        return {**out, "status": "already_original"}
    if current != entry["sha256_after"]:
        return {**out, "detail": "changed since tagging (its hash is neither the tagged nor the original "
                f"one); not touched, its original is kept at {backup}"}
    try:
        _restore(path, backup, entry["sha256_before"])
    except (TagWriteError, OSError) as exc:
        return {**out, "detail": str(exc)}
    if sha256_file(path) != entry["sha256_before"]:  # not after a checked replace; but say so if it does
        return {**out, "status": "failed", "detail": "restored file does not hash to the original"}
    return {**out, "status": "restored"}


def undo(log_path: str | os.PathLike[str]) -> pd.DataFrame:
    """Restore every file of an undo log to its original bytes, newest entry first.

    Args:
        log_path: the ``undo.jsonl`` file, or the undo folder that holds it.

    Returns:
        One row per entry (:data:`RESULT_COLUMNS`): ``status`` ``restored``, ``already_original`` or
        ``refused`` (a file changed since tagging, a missing file or backup), with the reason.

    Raises:
        FileNotFoundError: when there is no undo log there.
    """
    path = Path(log_path).expanduser().resolve()
    log_file = path / "undo.jsonl" if path.is_dir() else path
    if not log_file.is_file():
        raise FileNotFoundError(f"{log_file}: no undo log there; pass the undo.jsonl (or its folder) "
                                "that a tagging run wrote")
    rows = [_undo_one(entry, log_file.parent) for entry in reversed(read_entries(log_file))]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)
