"""``python -m genre_ray.bench zoo``: the zoo search against a tuned SVM, on the same songs.

Both searches run on the same collection (the demo, a folder-per-genre collection, or a feature
table) with the same song-level split (and the same folds with ``--folds``), so their test songs
are the same songs; the split's identity is checked. The SVM searches ``svm.yaml`` (C and gamma
of an RBF SVM) on the 57 GTZAN table features computed from the audio, or on the table's own
columns; the zoo searches every architecture and feature variant of ``zoo.yaml``; on audio, the
same zoo also runs without the pretrained kinds (``zoo_scratch``: every model learns from scratch),
and ``embeddings.yaml`` searches heads on the pretrained networks' embeddings. Each best model is
scored once on the test songs. The verdicts compare song-level test accuracy, with validation
scores and the number of songs beside it.

Runs go to ``RESULTS_DIR/bench_zoo_runs/`` with their own MLflow store, so a benchmark never
moves the champion of a real task.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from genre_ray.bench import command_line, machine_summary, markdown_table, write_report
from genre_ray.cli import data_overrides

CONFIG_OVERRIDES = True  # takes --set KEY=VALUE (genre_ray.bench.__main__)

HELP = "the zoo search against a tuned SVM on the same data, split and folds"

log = logging.getLogger("genre_ray.bench")

ROOT = Path(__file__).resolve().parents[2]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="PATH", help="a folder-per-genre collection or a feature table (.csv, "
                   "GTZAN features layout); default: the demo collection")
    p.add_argument("--zoo", default=str(ROOT / "search_spaces" / "zoo.yaml"), help="the zoo search space")
    p.add_argument("--svm", default=str(ROOT / "search_spaces" / "svm.yaml"), help="the SVM search space")
    p.add_argument("--embeddings", default=str(ROOT / "search_spaces" / "embeddings.yaml"),
                   help="the pretrained-embedding search space, on audio only ('none': leave it out)")
    p.add_argument("--no-scratch", action="store_true", help="leave out the zoo without its pretrained kinds")
    p.add_argument("--skip-zoo", action="store_true", help="leave out the full zoo (keep the SVMs, the "
                   "from-scratch zoo and the embeddings): a quicker second seed")
    p.add_argument("--embeddings-samples", type=int, metavar="N", help="trials of the embedding search "
                   "(default: the YAML's)")
    p.add_argument("--zoo-samples", type=int, metavar="N", help="trials of the zoo (default: the YAML's)")
    p.add_argument("--svm-samples", type=int, metavar="N", help="trials of the SVM (default: the YAML's)")
    p.add_argument("--folds", type=int, metavar="K", help="k-fold cross-validation over the non-test songs, "
                   "the same folds for every search (default: split.folds auto, 5 folds below 2000 non-test songs)")
    p.add_argument("--outer-folds", type=int, metavar="K", help="rotate the test split over K outer song folds "
                   "of a folder collection, so that every song is a test song once; each search runs K times and "
                   "the verdicts pool the K test splits")
    p.add_argument("--max-epochs", type=int, metavar="N", help="the zoo's maximum epochs per trial")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of both searchers")
    p.add_argument("--results-dir", default="results", help="where the report goes (default: results)")
    p.add_argument("--out", help="the report file (default: RESULTS_DIR/bench_zoo[_DATA].md)")
    p.add_argument("--smoke", action="store_true", help="tiny data, 2 trials each, 1 epoch (for tests)")


def _overrides(args: argparse.Namespace, runs: Path, which: str, manifest: Path | None = None) -> dict[str, Any]:
    from genre_ray.config import SMOKE_OVERRIDES
    from genre_ray.search import task_name

    out: dict[str, Any] = dict(SMOKE_OVERRIDES) if args.smoke else {}
    out.update({"output.results_dir": str(runs), "tracking.uri": f"sqlite:///{runs / 'mlflow.db'}",
                "split.seed": args.seed, "search.seed": args.seed, "name": f"{which}", "task": "bench"})
    if args.data:
        out.update(data_overrides(args.data))
        out["task"] = f"bench-{task_name(str(Path(args.data).with_suffix('')))}"
    if manifest is not None:  # one outer fold: the collection as a manifest whose split column holds its test songs
        out.update({"data.source": "csv", "data.path": str(manifest), "name": f"{which}_{manifest.stem}"})
    # The same split for every search, whatever its YAML says.
    out["split.folds"] = args.folds or (None if args.smoke else "auto")
    samples = {"zoo": args.zoo_samples, "zoo_scratch": args.zoo_samples, "svm": args.svm_samples,
               "embeddings": args.embeddings_samples}[which]
    if samples:
        out["search.num_samples"] = samples
    if which == "zoo_scratch":
        out["features.kind"] = {"choice": _scratch_kinds(args.zoo)}
    if args.max_epochs and which.startswith("zoo"):
        out["search.max_epochs"] = args.max_epochs
    return {**out, **getattr(args, "overrides", {})}  # --set last: it wins, for every search of the run


def _scratch_kinds(zoo: str) -> list[str]:
    """The zoo's feature kinds without the pretrained networks' embeddings."""
    import yaml

    from genre_ray.features.pretrained import NETWORKS

    kind = (yaml.safe_load(Path(zoo).read_text(encoding="utf-8")).get("features") or {}).get("kind")
    kinds = kind["choice"] if isinstance(kind, dict) and "choice" in kind else [kind or "logmel"]
    return [str(k) for k in kinds if k not in NETWORKS] or ["logmel"]


def _verdict(what: str, a: dict[str, Any], b: dict[str, Any], b_name: str, folds: int | None) -> str:
    margin = a["test_song_acc"] - b["test_song_acc"]
    outer = str(a["split_id"]).count("+") + 1
    split = f"split `{a['split_id']}`" if outer == 1 else f"{outer} outer song folds, every song a test song once"
    return (f"{what} **{'beats' if margin > 0 else 'does not beat'}** {b_name} on the same {a['test_songs']} "
            f"test songs: test song accuracy {a['test_song_acc']:.4f} against {b['test_song_acc']:.4f} "
            f"({margin:+.4f}); " + split + (f", {folds}-fold cross-validation for all" if folds else ""))


def gridsearch_baseline(cfg: Any, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """What a user writes by hand with scikit-learn, outside genre_ray's search machinery.

    The SVM search's own features (one row per song: the mean of its clips' rows, as the Kaggle
    table is one row per song), ``GridSearchCV(StandardScaler + SVC(rbf))`` over C and gamma with an
    inner stratified 3-fold (fewer when a genre has fewer songs) and ``refit=True``, so the chosen
    model is fitted on every non-test song; scored once on the same test songs (``splits.csv`` of
    the SVM search).
    """
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    from genre_ray.search.runner import load_collection

    t0 = time.perf_counter()
    songs, rows, table, _ = load_collection(cfg, Path(cfg.output.results_dir).expanduser().resolve())
    kind = cfg.feature_kinds[0]
    splits = pd.read_csv(out_dir / "splits.csv").set_index("song_id")
    song_of_clip = rows.drop_duplicates("sha").set_index("sha")["song_id"].reindex(table.clips["sha"]).to_numpy()
    frame = pd.DataFrame(table.features[kind].reshape(len(song_of_clip), -1))
    by_song = frame.groupby(song_of_clip).mean()
    by_song = by_song.loc[by_song.index.isin(splits.index)]
    split, label = splits.loc[by_song.index, "split"].to_numpy(), splits.loc[by_song.index, "label"].to_numpy()
    x, dev, test = by_song.to_numpy(), split != "test", split == "test"
    folds = int(max(2, min(3, pd.Series(label[dev]).value_counts().min())))
    grid = GridSearchCV(make_pipeline(StandardScaler(), SVC(kernel="rbf")),
                        {"svc__C": np.logspace(-1, 3, 9).tolist(), "svc__gamma": ["scale", *np.logspace(-4, 0, 9)]},
                        cv=StratifiedKFold(folds, shuffle=True, random_state=seed), refit=True, n_jobs=1)
    grid.fit(x[dev], label[dev])
    pred = grid.predict(x[test])
    acc = float((pred == label[test]).mean())
    from sklearn.metrics import balanced_accuracy_score, f1_score

    return {"search": "sklearn_gridsearch", "best_model": "svm (GridSearchCV)", "features": kind,
            "aggregation": "song mean of clip rows", "trials": len(grid.cv_results_["params"]),
            "best_val": round(float(grid.best_score_), 4), "test_song_acc": round(acc, 4),
            "test_song_bacc": round(float(balanced_accuracy_score(label[test], pred)), 4),
            "test_song_f1": round(float(f1_score(label[test], pred, average="macro")), 4),
            "test_songs": int(test.sum()), "split_id": None, "wall_s": round(time.perf_counter() - t0, 1),
            "note": f"inner {folds}-fold, refit on {int(dev.sum())} songs, best {grid.best_params_}"}


def _row(which: str, summary: dict[str, Any], wall: float) -> dict[str, Any]:
    from genre_ray.config.spaces import resolve

    plan = resolve(summary["best_config"])
    test = summary["test"]
    ens = summary.get("ensemble") or {}
    model, kind = plan.model, plan.kind
    if ens.get("chosen"):  # the registered (and scored) model is the greedy ensemble of the best trials
        model = "ensemble of " + " + ".join(m["model"] for m in ens["members"])
        kind = " + ".join(dict.fromkeys(m["kind"] for m in ens["members"]))
    return {"search": which, "best_model": model, "features": kind,
            "aggregation": plan.train.get("aggregation", "mean"), "trials": summary["trials"]["total"],
            "best_val": round(summary["best_val"], 4), "test_song_acc": round(test["acc"], 4),
            "test_song_bacc": round(test["bacc"], 4), "test_song_f1": round(test["f1"], 4),
            "test_songs": summary["test_songs"], "split_id": summary["split_id"], "wall_s": round(wall, 1)}


def outer_fold_manifests(data: str, k: int, seed: int, out_dir: Path) -> list[Path]:
    """One manifest CSV per outer fold of a folder collection: fold ``i``'s songs are its test split.

    The folds are stratified by genre (and grouped by artist where known), so every song is a test
    song exactly once over the ``k`` manifests; the other songs are ``train`` (the searches' own
    ``split.folds`` then cross-validate over them).
    """
    from genre_ray.data.collection import folder_manifest
    from genre_ray.data.splits import song_folds

    manifest, _ = folder_manifest(data)
    songs = manifest.drop_duplicates("song_id").reset_index(drop=True)
    fold = song_folds(songs, k, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(k):
        split = np.where(fold == i, "test", "train").astype(object)
        dev = np.flatnonzero(fold != i)  # a fifth of the others validate (with split.folds they all cross-validate)
        split[dev[song_folds(songs.iloc[dev], 5, seed) == 0]] = "val"
        frame = songs[["path", "label"]].assign(song_id=songs["song_id"], split=split)
        paths.append(out_dir / f"outer{i}.csv")
        frame.to_csv(paths[-1], index=False)
    return paths


def _run_searches(args: argparse.Namespace, runs: Path, searches: list[tuple[str, str]],
                  manifest: Path | None = None) -> list[dict[str, Any]] | int:
    """Each search once on one split (rows of the report), or an exit code."""
    from genre_ray.config import ConfigError, load_config
    from genre_ray.search.runner import SearchFailed, run_search

    rows = []
    for which, space in searches:
        try:
            cfg = load_config(space, _overrides(args, runs, which, manifest))
        except ConfigError as exc:
            print(f"error: {exc}")
            return 2
        t0 = time.perf_counter()
        try:
            [summary] = run_search(cfg)
        except SearchFailed as exc:
            print(f"error: the {which} search failed: {exc}")
            return 1
        rows.append(_row(which, summary, time.perf_counter() - t0))
        log.info("%s: best %s on %s, test song accuracy %.4f on %d songs", which, rows[-1]["best_model"],
                 rows[-1]["features"], rows[-1]["test_song_acc"], rows[-1]["test_songs"])
        if which == "svm":  # the hand-written scikit-learn baseline on the same features and test songs
            base = gridsearch_baseline(cfg, Path(summary["out_dir"]), args.seed)
            base["split_id"] = summary["split_id"]
            rows.append(base)
            log.info("sklearn GridSearchCV: test song accuracy %.4f on %d songs (%s)", base["test_song_acc"],
                     base["test_songs"], base["note"])
    if len({r["split_id"] for r in rows}) > 1:
        print("error: the searches were tested on different splits ("
              + ", ".join(f"{r['search']} {r['split_id']}" for r in rows) + ")")
        return 1
    return rows


def _pooled(per_fold: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per search over all outer folds: test songs summed, accuracies pooled over them."""
    out = []
    for rows in zip(*per_fold, strict=True):
        songs = sum(r["test_songs"] for r in rows)
        row = {k: rows[0][k] for k in ("search",)}
        row.update({
            "best_model": ", ".join(r["best_model"] for r in rows), "features": ", ".join(r["features"] for r in rows),
            "aggregation": ", ".join(str(r["aggregation"]) for r in rows), "trials": sum(r["trials"] for r in rows),
            "best_val": round(float(np.mean([r["best_val"] for r in rows])), 4),
            **{k: round(sum(r[k] * r["test_songs"] for r in rows) / songs, 4)
               for k in ("test_song_acc", "test_song_bacc", "test_song_f1")},
            "test_songs": songs, "split_id": "+".join(str(r["split_id"]) for r in rows),
            "wall_s": round(sum(r["wall_s"] for r in rows), 1),
            "note": "per outer fold: " + ", ".join(f"{r['test_song_acc']:.2f}" for r in rows)})
        out.append(row)
    return out


def run_cli(args: argparse.Namespace) -> int:
    results = Path(args.results_dir).expanduser()
    runs = (results / "bench_zoo_runs").resolve()
    audio = not (args.data and data_overrides(args.data)["data.source"] == "table")
    searches = [("svm", args.svm)] + ([] if args.skip_zoo else [("zoo", args.zoo)])
    if audio and not args.no_scratch:
        searches.append(("zoo_scratch", args.zoo))
    if audio and args.embeddings != "none":
        searches.append(("embeddings", args.embeddings))
    if args.outer_folds:
        if not (args.data and audio and Path(args.data).is_dir()):
            print("error: --outer-folds needs --data FOLDER (a folder-per-genre collection)")
            return 2
        per_fold = []
        for manifest in outer_fold_manifests(args.data, args.outer_folds, args.seed, runs / "outer_folds"):
            got = _run_searches(args, runs, searches, manifest)
            if isinstance(got, int):
                return got
            per_fold.append(got)
        rows = _pooled(per_fold)
    else:
        got = _run_searches(args, runs, searches)
        if isinstance(got, int):
            return got
        rows = got
    by = {r["search"]: r for r in rows}
    # the stronger of the two SVM baselines: the project's own search, and scikit-learn's GridSearchCV
    svm = max(by["svm"], by["sklearn_gridsearch"], key=lambda r: r["test_song_acc"])
    svm_name = ("scikit-learn's GridSearchCV SVM" if svm is by["sklearn_gridsearch"] else "the tuned SVM search") \
        + " (the stronger SVM)"
    # the project's own SVM search against what a user writes by hand, on the same features and songs
    verdicts = [_verdict("the SVM search's registered model", by["svm"], by["sklearn_gridsearch"],
                         "scikit-learn's GridSearchCV SVM", args.folds)]
    if "zoo" in by:
        verdicts.append(_verdict("the zoo's best model", by["zoo"], svm, svm_name, args.folds))
    if "embeddings" in by:
        emb = by["embeddings"]
        verdicts.append(_verdict("the best embedding model", emb, svm, svm_name, args.folds))
        if "zoo_scratch" in by:
            verdicts.append(_verdict("the best embedding model", emb, by["zoo_scratch"],
                                     "the from-scratch zoo", args.folds))
    verdict = "\n".join(f"- {v}" for v in verdicts)
    for r in rows:
        r.setdefault("note", "")
    columns = {"search": "search", "best_model": "best model", "features": "features", "aggregation":
               "song aggregation", "trials": "trials", "best_val": "best validation song acc",
               "test_song_acc": "test song acc", "test_song_bacc": "test balanced acc", "test_song_f1":
               "test macro-F1", "test_songs": "test songs", "wall_s": "wall s", "note": "note"}
    name = f"bench_zoo_{Path(args.data).stem}" if args.data else "bench_zoo"
    out = Path(args.out) if args.out else results / f"{name}.md"
    header = {**machine_summary(("ray", "torch", "optuna", "scikit-learn")), "command": f"`{command_line()}`",
              "data": args.data or "the demo collection", "date": time.strftime("%Y-%m-%d %H:%M")}
    write_report(out, "Zoo and pretrained embeddings against a tuned SVM", header,
                 [("Verdict", verdict), ("The searches", markdown_table(rows, columns)),
                  ("How to read it", "Each search's best trial (by validation) was scored once on the test songs. "
                   "With few test songs one song moves the accuracy by 1/songs; read the margin against that.")],
                 rows)
    print(verdict.replace("**", ""))
    print(f"report: {out}")
    return 0
