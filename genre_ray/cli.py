"""``genre-ray search|predict|tag|bench ...``: one entry for every command line, and what they share.

Each command keeps its own ``main(argv) -> int`` (``python -m genre_ray.search`` and the others
still work); this module dispatches to them and holds what they have in common: the exit codes,
``--set KEY=VALUE`` overrides, telling a CSV manifest from a feature table for ``--data``, JSON
output, and a quiet end when the reader of the output goes away (``| head``).

Nothing heavy is imported here: a bad ``--set`` must fail in well under two seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_SKIPPED", "EXIT_STATUS", "EXIT_USAGE",
           "UsageError",
           "add_set_option", "csv_source", "data_overrides", "data_source", "jsonable", "main", "parse_sets",
           "print_json", "prog", "run",
           "stdout_to_stderr"]

EXIT_OK = 0  #: done
EXIT_FAILED = 1  #: the command ran and failed (every trial failed, a tag could not be written, ...)
EXIT_USAGE = 2  #: a bad config, option, path or model: nothing was done
EXIT_SKIPPED = 3  #: done, but some input files were skipped (unreadable, undecodable or unlabelled)
EXIT_INTERRUPTED = 130  #: stopped by Ctrl-C (SIGINT), as a shell reports it; what was done is kept

#: The exit codes as every ``--help`` ends them.
EXIT_STATUS = (f"Exit status: {EXIT_OK} done; {EXIT_FAILED} failed; {EXIT_USAGE} bad config or usage "
               f"(nothing done); {EXIT_SKIPPED} done, but some input files were skipped (each is reported "
               f"with why); {EXIT_INTERRUPTED} interrupted (Ctrl-C; a search stopped by SIGTERM: 143): what was "
               "done is kept, and running the command again (a search with --resume) goes on from there.")

#: ``genre-ray COMMAND`` -> the module whose ``main(argv)`` runs it.
COMMANDS: dict[str, str] = {
    "search": "genre_ray.search",
    "predict": "genre_ray.serving.predict",
    "tag": "genre_ray.serving.tag",
    "bench": "genre_ray.bench.__main__",
}
SCRIPT = "genre-ray"
_via_script = False  # set by main(): usage lines then say "genre-ray search", else "python -m ..."


class UsageError(ValueError):
    """A command line that cannot run as given; the message is one line that says what to change."""


def prog(command: str) -> str:
    """The command's name in its usage line: ``genre-ray search`` or ``python -m genre_ray.search``."""
    return f"{SCRIPT} {command}" if _via_script else f"python -m genre_ray.{command}"


# ------------------------------------------------------------------------------------ overrides

def add_set_option(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` the repeatable ``--set KEY=VALUE`` (read back with :func:`parse_sets`)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set one value of "
                        "the YAML, by its dotted key, before the file is validated (repeatable); VALUE is "
                        "read as YAML (write 1.0e-3: YAML reads 1e-3 as text): --set "
                        "model.params.dropout=0.3 --set 'features.kind={choice: [logmel, mfcc]}'. It wins "
                        "over the file and over the other options")


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``, each value read with ``yaml.safe_load``.

    Raises:
        UsageError: for an item without ``=``, an empty key or key part, or a value that is not YAML.
    """
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key or any(not part for part in key.split(".")):
            raise UsageError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. --set "
                             "model.params.dropout=0.3")
        try:
            out[key] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise UsageError(f"--set {item!r}: the value is not valid YAML ({problem})") from None
    return out


# ---------------------------------------------------------------------------------- --data x.csv

#: Columns a CSV manifest may have besides its path and label (genre_ray.data.manifests.csv_manifest).
_MANIFEST_COLUMNS = {"path", "label", "artist", "album", "split", "song_id"}
_CHOOSE = ("choose with --set data.source=csv (a manifest: path,label) or --set data.source=table (a "
           "feature table)")


def data_source(data: str) -> str:
    """``data.source`` for ``--data``: a CSV's columns say manifest or feature table, else a folder."""
    from genre_ray.storage import is_uri

    path = Path(data).expanduser()
    if not is_uri(data) and not path.is_dir() and (path.suffix.lower() == ".csv" or path.is_file()):
        return csv_source(data)
    return "folder"


def data_overrides(data: str, source: str | None = None) -> dict[str, Any]:
    """The config keys ``--data PATH`` sets (every command that takes it): source, path, and for a
    feature table its own columns as the features.

    Raises:
        UsageError: for a CSV that is neither a manifest nor a feature table.
    """
    source = source or data_source(data)
    return {"data.source": source, "data.path": data, **({"features.kind": "auto"} if source == "table" else {})}


def csv_source(path: str | os.PathLike[str], rows: int = 5) -> str:
    """What a CSV given to ``--data`` is, from its header and first ``rows`` rows.

    ``csv``: a manifest of audio files (``path`` and ``label`` columns, or the aliases that
    :func:`genre_ray.data.manifests.csv_manifest` accepts). ``table``: a feature table in the
    GTZAN layout (``filename``, ``label`` and numbers in every other column).

    Raises:
        UsageError: for a missing or unreadable file, and for one that is both or neither; the
            message says how to choose.
    """
    from genre_ray.data.manifests import CSV_ALIASES

    header, data = _csv_head(Path(path).expanduser(), rows)
    names = [n.strip().casefold() for n in header]
    canonical = [CSV_ALIASES.get(n, n) for n in names]
    kinds = [_kind([row[i] for row in data if i < len(row)]) for i, n in enumerate(canonical)
             if n not in _MANIFEST_COLUMNS]  # every other column: "number", "text" or "empty"
    gtzan = "filename" in names and "label" in names
    table = gtzan and "number" in kinds and "text" not in kinds
    maybe_table = gtzan and any(k != "text" for k in kinds)  # a column that may hold features
    manifest = {"path", "label"} <= set(canonical)
    shown = ", ".join(header[:8]) + (", ..." if len(header) > 8 else "")
    if table and not {"path", "file", "filepath"} & set(names):
        return "table"
    if manifest and not maybe_table:
        return "csv"
    if manifest or table:
        raise UsageError(f"--data {path}: cannot tell a manifest of audio files from a feature table by its "
                         f"columns ({shown}); {_CHOOSE}")
    raise UsageError(f"--data {path}: neither a manifest (path and label columns) nor a feature table "
                     f"(filename, label and numeric feature columns); it has {shown or 'no columns'}; "
                     f"{_CHOOSE}")


def _csv_head(path: Path, rows: int) -> tuple[list[str], list[list[str]]]:
    """The header and up to ``rows`` data rows of a CSV (UTF-8, with or without a BOM)."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            return header, [row for _, row in zip(range(rows), reader, strict=False)]
    except FileNotFoundError:
        raise UsageError(f"--data {path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"--data {path}: cannot read it as a UTF-8 CSV ({exc})") from None


def _kind(values: list[str]) -> str:
    """``number`` when every filled value is one, ``empty`` when none is filled, else ``text``."""
    filled = [v.strip() for v in values if v.strip()]
    if not filled:
        return "empty"
    try:
        for v in filled:
            float(v)
    except ValueError:
        return "text"
    return "number"


# ----------------------------------------------------------------------------------------- output

def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: numpy scalars and arrays, pandas frames (a list of rows) and
    series, paths and timestamps converted; NaN and infinities become ``null``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, float):  # numpy's float64 too
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "columns") and hasattr(value, "to_dict"):  # a DataFrame: its rows
        return jsonable(value.to_dict("records"))
    if hasattr(value, "to_dict"):  # a Series: index -> value
        return jsonable(value.to_dict())
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def print_json(doc: Any) -> None:
    """Print ``doc`` (through :func:`jsonable`) as one indented JSON document on stdout."""
    print(json.dumps(jsonable(doc), indent=2), flush=True)


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout, by Python or below it (Ray, Tune), to stderr for a while:
    with ``--json``, stdout holds the JSON document alone."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def run(command: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's ``main(argv)`` and return its exit status; a reader that closed the pipe
    (``genre-ray predict ... | head -1``) ends it quietly, with status 0 and no traceback, and a
    Ctrl-C that the command lets through ends it with :data:`EXIT_INTERRUPTED` and no traceback."""
    try:
        code = command(argv)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
    except KeyboardInterrupt:  # a command that saves its work on Ctrl-C has said so already
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered goes nowhere at exit
        os.close(devnull)
        return EXIT_OK
    return int(code or 0)


# ------------------------------------------------------------------------------------ genre-ray

_USAGE = f"""usage: {SCRIPT} COMMAND [options]

Find, use and measure music-genre classifiers.

commands:
  search   search for the best genre classifier of a collection (python -m genre_ray.search)
  predict  the genres of songs, from a registered model (python -m genre_ray.predict)
  tag      predict a whole music library, resumable; optionally write genre tags (python -m genre_ray.tag)
  bench    run a benchmark and write its report (python -m genre_ray.bench)

Run '{SCRIPT} COMMAND --help' for a command's options.
""" + textwrap.fill(EXIT_STATUS, 100)


def main(argv: list[str] | None = None) -> int:
    """``genre-ray COMMAND [options]``: run one command; returns the exit status."""
    global _via_script
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_USAGE, file=sys.stdout if args else sys.stderr)
        return EXIT_OK if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"error: {command!r}: not a command; choose from {', '.join(COMMANDS)} ({SCRIPT} --help)",
              file=sys.stderr)
        return EXIT_USAGE
    _via_script = True
    return run(importlib.import_module(COMMANDS[command]).main, rest)
