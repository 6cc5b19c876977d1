"""``python -m genre_ray.search SPACE.yaml``: featurize, search, evaluate once, register.

The whole YAML, with the ``--set`` overrides applied, is validated before anything heavy is
imported, so a bad file or a bad ``--set`` fails in well under two seconds with one line naming the
file, the key, the rule and the value.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from genre_ray import cli
from genre_ray.config import SMOKE_OVERRIDES, ConfigError, SearchConfig, load_config

__all__ = ["build_parser", "main", "run_search", "task_name"]

log = logging.getLogger("genre_ray.search")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=cli.prog("search"),
        description="Search for the best genre classifier for a music collection: featurize the audio "
        "with Ray Data, search the YAML's space with Ray Tune (Optuna TPE + ASHA early stopping), "
        "evaluate the best trial once on held-out test songs, and record everything in MLflow.",
        epilog=f"Example: {cli.prog('search')} search_spaces/cnn.yaml --data ~/music/gtzan --set "
        f"train.lr=0.001. {cli.EXIT_STATUS}",
    )
    p.add_argument("space", help="the search space YAML (e.g. search_spaces/cnn.yaml)")
    p.add_argument("--data", metavar="DIR_OR_CSV", help="what to search on instead of the YAML's data "
                   "(default: the embedded demo collection): a folder-per-genre collection "
                   "(<genre>/<file>.wav, the GTZAN layout), a CSV manifest of audio files (path and label "
                   "columns: data.source csv), or a feature table (the GTZAN features_30_sec.csv layout: "
                   "data.source table; a zoo then keeps the models that take table rows). A CSV is told apart "
                   "by its columns; --set data.source=csv or --set data.source=table decides")
    p.add_argument("--task", help="the genre task: its MLflow experiment and the registered model genre-TASK "
                   "(default: the YAML's task; with --data, the folder's or the CSV's name)")
    p.add_argument("--name", help="the search's name: results go to RESULTS_DIR/NAME/ (default: YAML name "
                   "or file stem)")
    p.add_argument("--num-samples", type=int, metavar="N", help="number of trials (search.num_samples)")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="trials run at once (search.max_concurrent)")
    p.add_argument("--max-epochs", type=int, metavar="N", help="ASHA's maximum epochs per trial "
                   "(search.max_epochs; train.epochs is capped to it)")
    p.add_argument("--cpus-per-trial", type=float, metavar="C", help="CPUs per trial (resources.cpu); also "
                   "the trial's torch thread count")
    p.add_argument("--gpus-per-trial", type=float, metavar="G", help="GPU share per trial, e.g. 0.25 puts 4 "
                   "trials on a card (resources.gpu)")
    p.add_argument("--seed", type=int, help="seed of the searcher (search.seed)")
    p.add_argument("--results-dir", metavar="DIR", help="where results, the feature cache default and the "
                   "local MLflow store go (output.results_dir, default: results)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (tracking.uri; default: "
                   "$MLFLOW_TRACKING_URI, else sqlite:///RESULTS_DIR/mlflow.db)")
    p.add_argument("--promote", action="store_true", help="make the new model the champion even if it does "
                   "not beat the current one")
    p.add_argument("--resume", action="store_true", help="continue the interrupted search of the same name "
                   "(same YAML and options): Tune's trials, ASHA and the Optuna searcher are restored from its "
                   "experiment folder, and MLflow keeps its parent run and one child run per trial")
    p.add_argument("--smoke", action="store_true", help="shrink the search to a run of seconds: a tiny demo "
                   "collection (for data.source demo), 3 clips per song, 2 trials of 1 epoch, one at a time; to "
                   "check a YAML end to end")
    cli.add_set_option(p)
    p.add_argument("--check", action="store_true", help="validate the YAML, print the resolved config, exit")
    p.add_argument("--json", action="store_true", help="print the outcome as one JSON document on stdout "
                   "(each task: best configuration, validation and test scores with their song counts, the "
                   "registered model, where the results are; with --check, the resolved config); the log and "
                   "Ray's output go to stderr")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final report: no "
                   "progress (featurizing and Tune's status table)")
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The dotted config keys the options set; ``--set`` last, so it wins.

    Raises:
        UsageError: for a malformed ``--set``, or a ``--data`` CSV that is neither a manifest nor a
            feature table.
    """
    sets = cli.parse_sets(getattr(args, "set", None))
    pairs = {
        "name": args.name, "search.num_samples": args.num_samples, "search.max_concurrent": args.max_concurrent,
        "search.max_epochs": args.max_epochs, "resources.cpu": args.cpus_per_trial,
        "resources.gpu": args.gpus_per_trial, "search.seed": args.seed,
        "output.results_dir": args.results_dir, "tracking.uri": args.tracking_uri,
    }
    out = dict(SMOKE_OVERRIDES) if getattr(args, "smoke", False) else {}
    out.update({k: v for k, v in pairs.items() if v is not None})
    if args.data:
        out.update(cli.data_overrides(args.data, sets.get("data.source")))
        source = out["data.source"]
        # Another collection is another task: never register it over the demo's champion.
        out["task"] = task_name(args.data if source == "folder" else str(Path(args.data).with_suffix("")))
    if args.task:
        out["task"] = args.task
    return {**out, **sets}


def task_name(folder: str) -> str:
    """The task that ``--data FOLDER`` names: the folder's (or a URI path's) last part, made safe for
    an MLflow experiment and a registered model name (``~/music/gtzan`` -> ``gtzan``,
    ``s3://bucket/music/gtzan?...`` -> ``gtzan``, ``gs://bucket/`` -> ``bucket``); ``collection``
    when nothing is left."""
    from urllib.parse import urlsplit

    from genre_ray.storage import is_uri

    # A URI names the task after the last part of its path (s3://bucket/gtzan?... -> gtzan).
    base = urlsplit(folder).path.rstrip("/").rsplit("/", 1)[-1] or urlsplit(folder).netloc if is_uri(folder) \
        else Path(folder).expanduser().resolve().name
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-")
    return name or "collection"


_task_name = task_name  # its name before it was public (tests/test_storage.py imports it)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (:data:`genre_ray.cli.EXIT_STATUS`)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # MLflow's bar over the few files of a model it reads back: noise in a log, progress under -q.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        cfg = load_config(args.space, _overrides(args))
    except (ConfigError, cli.UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_USAGE
    if args.set:  # MLflow's search_space parameter then says how the file was changed
        sets = " ".join(f"--set {shlex.quote(item)}" for item in args.set)
        cfg = dataclasses.replace(cfg, source_file=f"{cfg.source_file} {sets}")
    if args.check:
        import yaml

        if args.json:
            cli.print_json(cfg.to_dict())
        else:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return cli.EXIT_OK
    from genre_ray.search.runner import SearchFailed, SearchInterrupted
    from genre_ray.search.runner import run_search as _run

    try:
        with cli.stdout_to_stderr() if args.json else contextlib.nullcontext():
            summaries = _run(cfg, promote=args.promote, resume=args.resume)
    except SearchInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return 128 + exc.signum  # as a shell reports a process the signal ended: 130 for Ctrl-C, 143 for SIGTERM
    except SearchFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        return cli.EXIT_FAILED
    if args.json:
        cli.print_json({"search": cfg.name, "space": args.space, "overrides": cli.parse_sets(args.set),
                    "tasks": [_summary_doc(s) for s in summaries]})
    else:
        if not summaries and args.resume:
            print("Nothing to resume: every task of this search had finished; its results are in "
                  f"{cfg.output.results_dir}/{cfg.name}")
        for summary in summaries:
            _print_report(summary)
    from genre_ray.search.report import kept_damaged

    # exit 3 when input files were left out; a damaged file kept with what decoded is only reported
    skipped = any(s.get("skipped") is not None and (~kept_damaged(s["skipped"])).any() for s in summaries)
    return cli.EXIT_SKIPPED if skipped else cli.EXIT_OK


def _summary_doc(s: dict[str, Any]) -> dict[str, Any]:
    """One task's summary as JSON-able data (see :func:`genre_ray.cli.jsonable`)."""
    totals = s["split_table"].loc["total"]
    cross = "cross-validation" in str(s.get("split_method", ""))  # every non-test song is validated once
    out = Path(s["out_dir"])
    return {
        "task": s["task"], "classes": s["classes"], "split_method": s.get("split_method"),
        "best_trial": s["leaderboard"].loc[0, "trial_id"], "best_config": s["best_config"],
        "validation": {"metric": s["metric"], "value": s["best_val"],
                       "songs": int(totals["train"] + totals["val"]) if cross else int(totals["val"])},
        "test": {**s["test"], "songs": s["test_songs"], "clips": s.get("test_clips")},
        "baseline": s["baseline"], "trials": s["trials"], "scored_model": s.get("scored_model"),
        "registered": s.get("registered"), "zero_shot": s.get("zero_shot"),
        "skipped_files": 0 if s.get("skipped") is None else len(s["skipped"]),
        "paths": {"results": out, "summary": out / "summary.md", "leaderboard": out / "leaderboard.csv",
                  "data_report": out / "data_report.csv", "tracking_uri": s.get("tracking_uri"),
                  "study_journal": s.get("study_journal")},
        "wall_s": s.get("wall_s"),
    }


def run_search(cfg: SearchConfig, promote: bool = False, resume: bool = False) -> list[dict[str, Any]]:
    """Run a validated search end to end (see :mod:`genre_ray.search.runner`)."""
    from genre_ray.search.runner import run_search as _run

    return _run(cfg, promote=promote, resume=resume)


def _print_report(s: dict[str, Any]) -> None:
    board = s["leaderboard"]
    cols = [c for c in ["rank", "trial_id", f"best_{s['metric']}", "best_val_song_f1", "epochs", "stopped",
                        "wall_s"] if c in board.columns]
    params = [c for c in board.columns if c.startswith(("train.", "model."))]
    print()
    print(f"Task {s['task']}: leaderboard (top 5 of {len(board)} trials, by {s['metric']} on validation "
          "songs):")
    print(board[cols + params].head(5).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    t = s["test"]
    print()
    print(f"Best trial on the TEST split ({s['test_songs']} songs, scored once): song accuracy {t['acc']:.4f}, "
          f"macro-F1 {t['f1']:.4f}; majority-class baseline {s['baseline']['acc']:.4f}")
    if s.get("scored_model"):
        print(f"Scored and registered: {s['scored_model']}")
    zs = s.get("zero_shot")
    if zs:
        print(f"Zero-shot {zs['kind']} tags (no training, {len(zs['classes_covered'])} classes mapped): test song "
              f"accuracy {zs['test_acc']:.4f} ({zs['test_songs']} songs), validation {zs['val_acc']:.4f} "
              f"({zs['val_songs']} songs)")
    from genre_ray.search.report import selection_lines

    for line in selection_lines(s):
        print(line[2:])
    reg = s.get("registered")
    if reg:
        print(f"Registered {reg['name']} v{reg['version']} as @{reg['alias']}: {reg['reason']}")
    print(f"Results: {s['out_dir']}  (leaderboard.csv, summary.md, confusion_matrix.png, suspect_labels.csv)")
    print(f"MLflow:  {s['tracking_uri']}  (open with: mlflow ui --backend-store-uri {s['tracking_uri']})")
    if s.get("study_journal"):
        print(f"Optuna:  {s['study_journal']}  (open with: optuna-dashboard {s['study_journal']})")
    disk = s.get("disk")
    if disk:
        from genre_ray.search.report import mib

        print(f"Disk:    {mib(disk['experiment_bytes'])} in {disk['experiment']} ({disk['checkpoints']} checkpoints, "
              f"best and last per trial); feature cache {mib(disk['cache_bytes'])}")
    print(f"Wall time: {s['wall_s']:.0f} s")

