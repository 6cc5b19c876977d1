"""``python -m genre_ray.predict --model URI FILE_OR_DIR...``: the genres of songs, from a registered model.

URI is ``models:/genre-<task>@champion`` (or any alias or version), a run's model
(``runs:/<run_id>/model``), or a local model folder; the older form, the model as the first
argument (``MODEL FILE_OR_DIR...``), still works. Files may be WAV, MP3, FLAC, OGG, ... at any
sample rate; folders are searched for audio files. Each song gets its top genres with their
probabilities; ``--timeline`` adds one line per clip; ``--json`` prints one JSON document.

Exit status (:mod:`genre_ray.cli`): 0 when every file was classified, 3 when some could not be
(each is reported and the others go on), 2 for a usage error (unknown model, missing file).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from genre_ray import cli

__all__ = ["build_parser", "find_audio", "main"]


def build_parser() -> argparse.ArgumentParser:
    name = cli.prog("predict")
    p = argparse.ArgumentParser(
        prog=name,
        usage=f"{name} --model URI [options] FILE_OR_DIR...\n       {name} [options] MODEL FILE_OR_DIR... "
        "(the older form)",
        description="Classify songs with a registered genre model: the top genres of each song with their "
        "probabilities, optionally clip by clip.",
        epilog=f"Example: {name} --model models:/genre-gtzan@champion song.mp3 ~/music/new/ "
        f"(the same as {name} models:/genre-gtzan@champion song.mp3 ~/music/new/). {cli.EXIT_STATUS}",
    )
    p.add_argument("paths", metavar="FILE_OR_DIR", nargs="*", help="audio files (WAV, MP3, FLAC, OGG, ... at "
                   "any sample rate) or folders, searched recursively for audio files; without --model, the "
                   "first is the model")
    p.add_argument("--model", metavar="URI", help="models:/genre-<task>@champion (or @challenger, or "
                   "/<version>), runs:/<run_id>/model, or a local model folder (as for tag --model)")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="genres shown per song (default: 3)")
    p.add_argument("--timeline", action="store_true", help="also show the genre of every clip, with its time")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    p.add_argument("--results-dir", metavar="DIR", default="results", help="where the local MLflow store is "
                   "(default: results, i.e. results/mlflow.db)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI to resolve models:/ and runs:/ "
                   "(default: $MLFLOW_TRACKING_URI, else sqlite:///RESULTS_DIR/mlflow.db)")
    return p


def find_audio(paths: list[str]) -> tuple[list[Path], list[str]]:
    """The audio files named or found under the folders named, and the problems (missing paths,
    folders without audio)."""
    from genre_ray.data.audio import AUDIO_EXTENSIONS

    files: list[Path] = []
    problems: list[str] = []
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                problems.append(f"{name}: no audio files in this folder "
                                f"(looked for {', '.join(AUDIO_EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{name}: no such file or folder")
    return files, problems


def _missing_store(model: str, uri: str) -> str | None:
    """Why a registry URI cannot resolve: a local SQLite store that does not exist (MLflow would
    create an empty one and then report a missing model)."""
    if not model.startswith(("models:/", "runs:/")) or not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///"):])
    if db.exists():
        return None
    return (f"{model}: there is no MLflow store at {db}; run a search first (python -m genre_ray.search "
            "SPACE.yaml), or pass --tracking-uri / --results-dir where the model was registered")


def _top(classes: list[str], probs: Any, k: int) -> list[tuple[str, float]]:
    order = sorted(range(len(classes)), key=lambda i: -float(probs[i]))[:k]
    return [(classes[i], float(probs[i])) for i in order]


def _text(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{genre} {p:.2f}" for genre, p in pairs)


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def _classify(classifier: Any, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One file -> its JSON entry (with ``error`` instead of genres when it cannot be read)."""
    from genre_ray.data.audio import AudioError

    try:
        song, clips, starts = classifier.predict_file(path)
    except AudioError as exc:
        return {"path": str(path), "error": f"{exc.reason}: {exc.detail}"}
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
        return {"path": str(path), "error": f"{type(exc).__name__}: {exc}"}
    classes = classifier.classes
    entry: dict[str, Any] = {
        "path": str(path), "genre": classes[int(song.argmax())], "confidence": float(song.max()),
        "top": [{"genre": g, "probability": p} for g, p in _top(classes, song, args.top_k)],
        "probabilities": {c: float(p) for c, p in zip(classes, song, strict=True)}}
    if args.timeline:
        length = classifier.settings.clip_seconds
        entry["clips"] = [
            {"clip": i, "start_s": float(t), "end_s": float(t) + length, "genre": classes[int(p.argmax())],
             "probabilities": {c: float(q) for c, q in zip(classes, p, strict=True)}}
            for i, (t, p) in enumerate(zip(starts, clips, strict=True))]
    return entry


def _print_entry(entry: dict[str, Any], args: argparse.Namespace) -> None:
    if "error" in entry:
        print(f"{entry['path']}: cannot classify ({entry['error']})", file=sys.stderr, flush=True)
        return
    print(f"{entry['path']}: {_text([(t['genre'], t['probability']) for t in entry['top']])}", flush=True)
    for clip in entry.get("clips", []):
        pairs = sorted(clip["probabilities"].items(), key=lambda kv: -kv[1])[:args.top_k]
        print(f"  {_clock(clip['start_s'])}-{_clock(clip['end_s'])}  {_text(pairs)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (:data:`genre_ray.cli.EXIT_STATUS`)."""
    args = build_parser().parse_intermixed_args(argv)  # files may come before and after options
    if args.model is None and args.paths:  # the older form: MODEL FILE_OR_DIR...
        args.model, args.paths = args.paths[0], args.paths[1:]
    if not args.model or not args.paths:
        print("error: give --model URI and at least one FILE_OR_DIR", file=sys.stderr)
        return cli.EXIT_USAGE
    if args.top_k < 1:
        print("error: --top-k: must be at least 1", file=sys.stderr)
        return cli.EXIT_USAGE
    files, problems = find_audio(args.paths)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return cli.EXIT_USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mlflow").setLevel(logging.ERROR)  # dependency notes on load; errors still show
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from genre_ray.serving import ServingError, load
    from genre_ray.tracking import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri(args.results_dir)
    why = _missing_store(args.model, uri)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return cli.EXIT_USAGE
    try:
        classifier = load(args.model, uri)
    except ServingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    if not classifier.audio:
        print(f"error: {args.model} classifies {classifier.kind} features, not audio; use it from Python "
              "with feature rows (see genre_ray.serving)", file=sys.stderr)
        return cli.EXIT_USAGE
    entries = []
    for path in files:
        entry = _classify(classifier, path, args)
        entries.append(entry)
        if not args.json or "error" in entry:
            _print_entry(entry, args)
    if args.json:
        doc = {"model": args.model, "classes": classifier.classes, "aggregation": classifier.aggregation,
               "model_info": classifier.info, "results": entries}
        cli.print_json(doc)
    return cli.EXIT_SKIPPED if any("error" in e for e in entries) else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(cli.run(main))
