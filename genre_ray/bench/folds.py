"""``python -m genre_ray.bench folds``: below how many songs does a k-fold objective choose better models?

A search picks the configuration with the best validation score. On one validation split of a small
collection that score is noisy (one song of 13 moves it by 7.7%), so the pick is often not the
configuration that is best on new songs. k-fold cross-validation scores every non-test song once,
at k times the training cost. This measures what that buys, by collection size, with the model the
search's tabular spaces use most (an RBF SVM on standardised rows):

- For each size N, a collection of N songs is drawn R times from a synthetic 10-genre population
  (scikit-learn's ``make_classification``: 57 columns like the GTZAN feature table, tuned so an
  SVM scores about 0.7, as on GTZAN), and a test set of 4000 more songs from the same population.
- The same candidate pool, ``candidates`` random (C, gamma) draws as a search's trials, is scored
  two ways on the N songs: one stratified validation split of ``val_fraction`` (the search's
  ``split.val_fraction``), and ``k``-fold cross-validation.
- Each way's pick is refitted on all N songs and scored on the test songs; the regret is the best
  candidate's test accuracy (refitted the same way) minus the pick's.

The threshold of ``split.folds: auto`` comes from this table: the first size measured above the
largest at which k-fold chose better (lower mean regret, and better in more collections than worse).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from genre_ray.bench import command_line, machine_summary, markdown_table, write_report

HELP = "regret of choosing on one validation split vs k-fold cross-validation, by collection size"

SIZES = (100, 300, 1000, 2000, 4000)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="N", help="collection sizes "
                   f"(songs; default: {' '.join(map(str, SIZES))})")
    p.add_argument("--repeats", type=int, default=8, metavar="R", help="collections drawn per size (default: 8)")
    p.add_argument("--candidates", type=int, default=16, metavar="M", help="configurations in the pool, as a "
                   "search's trials (default: 16)")
    p.add_argument("--folds", type=int, default=5, metavar="K", help="k of the cross-validation (default: 5)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="the single split's validation share "
                   "(default: 0.15, split.val_fraction's default)")
    p.add_argument("--results-dir", default="results", help="where bench_folds.md goes (default: results)")
    p.add_argument("--smoke", action="store_true", help="two small sizes, 2 repeats, 4 candidates (for tests)")


def population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` songs of the synthetic 10-genre population (the same population for every seed); a
    negative seed gives the held-out test songs."""
    from sklearn.datasets import make_classification

    # One fixed population of 30000 songs (random_state 0; its size too fixes the draw); seed picks n of them
    x, y = _POPULATION or make_classification(n_samples=30000, n_features=57, n_informative=24, n_redundant=12,
                               n_classes=10, n_clusters_per_class=2, class_sep=1.5, flip_y=0.05,
                               random_state=0)
    _POPULATION[:] = [x, y]
    if seed < 0:  # the test songs: the last 5000, never drawn into a collection
        return x[-5000:][:n], y[-5000:][:n]
    take = np.random.default_rng(seed).choice(len(y) - 5000, size=n, replace=False)
    return x[take], y[take]


_POPULATION: list[np.ndarray] = []  # made once per process


def _model(c: float, gamma: float) -> Any:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return make_pipeline(StandardScaler(), SVC(C=c, gamma=gamma))


def regrets(n: int, seed: int, pool: list[tuple[float, float]], k: int, val_fraction: float,
            test: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    """One collection of ``n`` songs: test accuracy of each way's pick, and of the best candidate."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    x, y = population(n, seed)
    xt, yt = test
    tr_x, va_x, tr_y, va_y = train_test_split(x, y, test_size=val_fraction, stratify=y, random_state=seed)
    single = [_model(c, g).fit(tr_x, tr_y).score(va_x, va_y) for c, g in pool]
    cv = StratifiedKFold(k, shuffle=True, random_state=seed)
    kfold = [cross_val_score(_model(c, g), x, y, cv=cv).mean() for c, g in pool]
    true = [_model(c, g).fit(x, y).score(xt, yt) for c, g in pool]  # every candidate refitted on all n songs
    best = max(true)
    return {"single": best - true[int(np.argmax(single))], "kfold": best - true[int(np.argmax(kfold))],
            "best": best}


def run_cli(args: argparse.Namespace) -> int:
    sizes, repeats, m = (([100, 300], 2, 4) if args.smoke else (args.sizes, args.repeats, args.candidates))
    rng = np.random.default_rng(0)
    pool = [(float(10 ** rng.uniform(-1, 2)), float(10 ** rng.uniform(-4, -0.5))) for _ in range(m)]
    xt, yt = population(1000 if args.smoke else 4000, -1)  # the same test songs for every size
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        got = [regrets(n, 1000 * n + r, pool, args.folds, args.val_fraction, (xt, yt)) for r in range(repeats)]
        single = np.array([g["single"] for g in got])
        kfold = np.array([g["kfold"] for g in got])
        rows.append({"songs": n, "val_songs": int(round(n * args.val_fraction)), "repeats": repeats,
                     "best_test_acc": round(float(np.mean([g["best"] for g in got])), 4),
                     "regret_single": round(100 * float(single.mean()), 2),
                     "regret_kfold": round(100 * float(kfold.mean()), 2),
                     "gain_pp": round(100 * float(single.mean() - kfold.mean()), 2),
                     "kfold_better": int((kfold < single).sum()), "kfold_worse": int((kfold > single).sum()),
                     "wall_s": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    helps = [i for i, r in enumerate(rows) if r["gain_pp"] > 0 and r["kfold_better"] > r["kfold_worse"]]
    if not helps:
        verdict = "k-fold never chose better than one validation split here"
    else:
        last = rows[max(helps)]
        after = rows[max(helps) + 1]["songs"] if max(helps) + 1 < len(rows) else None
        verdict = (f"k-fold chose better than one validation split up to {last['songs']} songs ({last['gain_pp']:+.2f} "
                   f"points of regret, better in {last['kfold_better']} of {last['repeats']} collections)"
                   + (f"; from {after} songs on it no longer helped, so split.folds auto cross-validates below "
                      f"{after} songs" if after else ""))
    columns = {"songs": "songs", "val_songs": "validation songs (one split)", "repeats": "collections",
               "best_test_acc": "best candidate's test acc", "regret_single": "regret, one split",
               "regret_kfold": f"regret, {args.folds}-fold", "gain_pp": "gain",
               "kfold_better": "k-fold better", "kfold_worse": "k-fold worse", "wall_s": "wall s"}
    out = Path(args.results_dir) / "bench_folds.md"
    header = {**machine_summary(("scikit-learn",)), "command": f"`{command_line(getattr(args, 'argv', None))}`",
              "candidates": f"{m} random (C, gamma) of an RBF SVM, C in [0.1, 100], gamma in [1e-4, 0.3]",
              "test songs": str(len(yt)), "date": time.strftime("%Y-%m-%d %H:%M")}
    write_report(out, "Choosing on one validation split or on k folds, by collection size", header,
                 [("Verdict", verdict), ("Regret by size", markdown_table(rows, columns)),
                  ("How to read it", "Regret, in percentage points: the best candidate's test accuracy minus the "
                   "pick's (both refitted on all the collection's songs), mean over the collections drawn; gain: "
                   "one split's regret minus k-fold's. k-fold costs k fits per candidate instead of one.")], rows)
    print(verdict)
    print(f"report: {out}")
    return 0
