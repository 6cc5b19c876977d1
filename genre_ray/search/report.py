"""The files a search leaves in ``results/<search name>/``: leaderboard, summary, parameter
importances and the best-so-far curve.

No Ray and no MLflow here: the search hands over plain rows and numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["best_so_far", "best_so_far_png", "leaderboard_frame", "param_importances", "stop_reason",
           "write_param_importances", "write_summary"]

#: Leaderboard columns that are not part of a trial's config (the config's keys are dotted).
_NOT_PARAMS = {"rank", "trial_id", "best_epoch", "epochs", "wall_s", "stopped", "error", "finished_at"}


def stop_reason(error: str | None, epochs_run: int, epochs_planned: int, patience: bool = False) -> str:
    """Why a trial ended: an error, its own patience, ASHA's early stop, or all its epochs."""
    if error:
        return "error"
    if patience:
        return "stopped early by patience"
    if epochs_run < epochs_planned:
        return "stopped early by ASHA"
    return "completed"


def leaderboard_frame(rows: list[dict[str, Any]], metric: str, mode: str) -> pd.DataFrame:
    """Trials sorted best first by ``best_<metric>`` (ties: lower validation loss); failed trials last."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    keys = [f"best_{metric}"] + (["best_val_loss"] if metric != "val_loss" and "best_val_loss" in frame else [])
    frame = frame.sort_values(keys, ascending=[mode == "min", True][: len(keys)], na_position="last",
                              kind="stable")
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(path: Path, info: dict[str, Any]) -> Path:
    """Write ``summary.md``: best configuration, test metrics with song counts, the registered model.

    Args:
        path: the file to write.
        info: ``name``, ``task``, ``metric``, ``best_config``, ``best_val``, ``test`` (dict),
            ``test_songs``, ``baseline`` (dict), ``split_table`` (DataFrame), ``registered``
            (dict or None), ``trials`` (counts), ``cache`` (dict), ``skipped`` (DataFrame),
            ``wall_s``.
    """
    t = info["test"]
    reg = info.get("registered")
    lines = [
        f"# Search `{info['name']}` (task `{info['task']}`)",
        "",
        f"- Trials: {info['trials']['total']} ({info['trials']['early']} stopped early by ASHA, "
        f"{info['trials']['errors']} failed); wall time {info['wall_s']:.0f} s.",
        *([f"- Search space: `{info['search_space']}`."] if info.get("search_space") else []),
        f"- Objective: `{info['metric']}` on the validation split; best {info['best_val']:.4f}.",
        f"- Classes: {', '.join(info['classes'])}. Split made {info.get('split_method', 'by song')}: no song"
        + (" and no artist" if info.get("split_method") == "by artist" else "") + " is in two splits.",
        f"- Features: cache `{info['cache']['path']}` ({'hit' if info['cache']['hit'] else 'computed'}, "
        f"{info['cache']['clips']} clips of {info['cache']['files']} files).",
        *([_disk_line(info["disk"])] if info.get("disk") else []),
        *(["- Resumed with `--resume` after an interruption: one parent run, one child run per trial."]
          if info.get("resumed") else []),
        "",
        "## Test (held-out songs, scored once)",
        "",
        f"Song-level accuracy **{t['acc']:.4f}**, balanced accuracy {t['bacc']:.4f} and macro-F1 "
        f"{t['f1']:.4f}" + (f", ROC-AUC {t['auc']:.4f}" if "auc" in t else "") + " on the **test split of "
        f"{info['test_songs']} songs** ({info['test_clips']} clips"
        + (f"; clip-level accuracy {t['clip_acc']:.4f}" if "clip_acc" in t else "") \
        + f"). A majority-class guess scores {info['baseline']['acc']:.4f} on the "
        "same songs.",
        *(["", f"The model scored and registered: {info['scored_model']}."] if info.get("scored_model") else []),
        *_zero_shot_lines(info.get("zero_shot")),
        *(["", *selection_lines(info)] if selection_lines(info) else []),
        "",
        "## Best configuration",
        "",
        *[f"- `{k}`: {v}" for k, v in sorted(info["best_config"].items())],
        "",
        "## Registered model",
        "",
    ]
    if reg:
        lines += [f"`{reg['name']}` version {reg['version']}, alias `{reg['alias']}` ({reg['reason']}).",
                  f"Load it with `mlflow.pyfunc.load_model(\"models:/{reg['name']}@{reg['alias']}\")`."]
    else:
        lines += ["Not registered: tracking was unavailable (see the log)."]
    lines += ["", "## Songs per class and split (last row: clips)", "", _md_table(info["split_table"].reset_index())]
    skipped = info.get("skipped")
    if skipped is not None and len(skipped):
        kept = kept_damaged(skipped)
        if (~kept).any():
            lines += ["", f"## Skipped files ({int((~kept).sum())})", "", _md_table(skipped[~kept])]
        if kept.any():
            lines += ["", f"## Damaged files kept with what decoded ({int(kept.sum())})", "", _md_table(skipped[kept])]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def kept_damaged(report: pd.DataFrame) -> pd.Series:
    """Rows of a data report that name a damaged file kept in the search (``truncated (kept)``)."""
    return report["reason"].astype(str).str.endswith("(kept)") if "reason" in report else \
        pd.Series(False, index=report.index)


def selection_lines(info: dict[str, Any]) -> list[str]:
    """The best single trial beside the greedy ensemble (validation and test), and the suspect labels.

    The summary file and the command line print the same lines.
    """
    lines: list[str] = []
    single: dict[str, Any] = info.get("single") or {}
    ens = info.get("ensemble")
    oof = info.get("suspects", {}) or {}
    n_val = oof.get("songs")
    where = f"{n_val} out-of-fold validation songs" if n_val else "the validation songs"
    if ens:
        members = ", ".join(f"{m['trial_id']} ({m['model']} on {m['kind']}, weight {m['weight']:.2f})"
                            for m in ens["members"])
        verdict = "chosen and registered" if ens["chosen"] else \
            "not chosen: it did not beat the best trial on validation"
        sv = ens["best_single_val"]
        lines.append(f"- Ensemble (greedy selection over the {ens['candidates']} best trials): {members}; "
                     f"validation song accuracy {ens['val'][0]:.4f} (log loss {ens['val'][1]:.3f}) against the "
                     f"best single model's {sv[0]:.4f} ({sv[1]:.3f}) on {where}; {verdict}.")
        lines.append(f"- Test song accuracy on the same {info['test_songs']} test songs: ensemble "
                     f"{ens['test']['acc']:.4f} ({ens['test_from']}), best trial {single['test']['acc']:.4f}.")
    elif single and single.get("val") is not None:
        lines.append(f"- No ensemble: no mix of the best trials beat trial {single['trial_id']} "
                     f"(validation song accuracy {single['val'][0]:.4f} on {where}).")
    if oof:
        top = "; ".join(f"{r['song_id']} ({r['label']} -> {r['predicted']} {r['probability']:.2f})"
                        for r in oof["top"][:3])
        lines.append(f"- Suspect labels: {oof['count']} of {oof['songs']} validation songs are confidently predicted "
                     f"as another genre (`{Path(oof['path']).name}`)" + (f": {top}" if top else "") + ".")
    return lines


def _zero_shot_lines(zs: dict[str, Any] | None) -> list[str]:
    if not zs:
        return []
    return ["", f"Zero-shot baseline (no training: the {zs['kind']} network's own genre tags, mapped by "
            f"`{Path(zs['mapping']).name}` onto {len(zs['classes_covered'])} of the classes: "
            f"{', '.join(zs['classes_covered'])}): song accuracy {zs['test_acc']:.4f} on the same "
            f"{zs['test_songs']} test songs, {zs['val_acc']:.4f} on {zs['val_songs']} validation songs."]


def _disk_line(disk: dict[str, Any]) -> str:
    return (f"- Disk: {mib(disk['experiment_bytes'])} in the Tune experiment `{disk['experiment']}` "
            f"({disk['checkpoints']} checkpoints: best and last per trial), {mib(disk['cache_bytes'])} in the "
            "feature cache.")


def mib(n_bytes: float) -> str:
    """A byte count for people: ``12.3 MiB``."""
    return f"{n_bytes / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------- parameter importances
def _complete(board: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The trials Optuna would count as complete: a finite best value and no error."""
    key = f"best_{metric}"
    if board.empty or key not in board:
        return board.iloc[0:0]
    ok = np.isfinite(pd.to_numeric(board[key], errors="coerce").to_numpy(dtype=float))
    if "stopped" in board:
        ok &= (board["stopped"] != "error").to_numpy()
    return board[ok].reset_index(drop=True)


def _active_params(trials: pd.DataFrame) -> pd.DataFrame:
    """Each trial's searched values, NaN where the parameter is not part of that trial.

    :mod:`genre_ray.config.spaces` also writes merged copies into a trial's config: in a zoo, plain
    ``features.kind`` copies ``features.kind.<model>`` (or the only variant a model takes), and
    ``train.aggregation`` copies ``train.aggregation.classical`` in a classical model's trial. A
    copy would share its source's importance, so it is left out.
    """
    columns = [c for c in trials.columns if "." in c and not c.startswith("best_") and c not in _NOT_PARAMS]
    values = trials[columns].astype(object).where(trials[columns].notna(), None)
    if any(c.startswith("features.kind.") for c in columns):
        values = values.drop(columns="features.kind", errors="ignore")
    for col in list(values.columns):
        sources = [c for c in values.columns if c.startswith(col + ".")]
        if sources:
            values.loc[trials[sources].notna().any(axis=1).to_numpy(), col] = None
    return values


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _distribution(values: list[Any]) -> tuple[Any, Callable[[Any], Any], str]:
    """An Optuna distribution over the observed values, the value converter, and a description.

    Numbers get a range: integers an int range, floats a log scale when they look log-uniform
    (positive, spanning a decade or more, most of them in the lower half of the range); anything
    else is categorical.
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(_is_number(v) for v in values):
        nums = [float(v) for v in values]
        low, high = min(nums), max(nums)
        if all(n.is_integer() for n in nums):
            return IntDistribution(int(low), int(high)), lambda v: int(v), f"int [{int(low)}, {int(high)}]"
        log = low > 0 and high >= 10 * low and float(np.mean(np.array(nums) < (low + high) / 2)) >= 0.7
        return (FloatDistribution(low, high, log=log), lambda v: float(v),
                f"float [{low:.3g}, {high:.3g}]" + (" log" if log else ""))
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        choices: list[Any] = sorted({bool(v) for v in values})
        return CategoricalDistribution(choices), lambda v: bool(v), "{" + ", ".join(map(str, choices)) + "}"
    choices = sorted({str(v) for v in values})
    return CategoricalDistribution(choices), lambda v: str(v), "{" + ", ".join(choices) + "}"


def _no_importances(reason: str) -> pd.DataFrame:
    frame = pd.DataFrame(columns=["param", "importance", "trials", "distribution"])
    frame.attrs["reason"] = reason
    return frame


def param_importances(board: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """How much each searched parameter mattered, by Optuna's importance evaluator.

    The finished trials become an Optuna study (``create_trial`` with distributions inferred from the
    leaderboard's config columns over the observed values). Optuna's default evaluator, PED-ANOVA,
    scores a conditional parameter (a zoo model's own ``model.<name>.<param>``) within the trials that
    have it, so one table covers the whole zoo. It compares the best tenth of the trials with all of
    them, so with fewer than about 50 trials the numbers are rough.

    Args:
        board: the leaderboard (one row per trial, config columns ``model.name``, ``train.lr``, ...).
        metric: the objective (``best_<metric>`` is each trial's value).
        mode: ``max`` or ``min``.

    Returns:
        ``param``, ``importance`` (sums to 1), ``trials`` (complete trials that have the parameter),
        ``distribution``; most important first. Empty, with ``attrs["reason"]``, when there is nothing
        to attribute (fewer than 2 complete trials, all scored the same, or no parameter varied).
    """
    import optuna

    trials = _complete(board, metric)
    if len(trials) < 2:
        return _no_importances(f"{len(trials)} complete trial(s); importances need at least 2")
    scores = trials[f"best_{metric}"].astype(float).to_numpy()
    if np.ptp(scores) == 0:
        return _no_importances(f"all {len(trials)} complete trials scored best_{metric} = {scores[0]:.4g}; "
                               "nothing to attribute")
    values = _active_params(trials)
    dists: dict[str, Any] = {}
    for col in values.columns:
        seen = [v for v in values[col] if v is not None]
        if len({str(v) for v in seen}) > 1:  # a parameter that never varied explains nothing
            dists[col] = _distribution(seen)
    if not dists:
        return _no_importances(f"no parameter took more than one value in the {len(trials)} complete trials")
    frozen = []
    for i, score in enumerate(scores):
        params = {c: conv(values.at[i, c]) for c, (_, conv, _) in dists.items()
                  if values.at[i, c] is not None}
        frozen.append(optuna.trial.create_trial(params=params, distributions={c: dists[c][0] for c in params},
                                                value=float(score)))
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory"
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
        study.add_trials(frozen)
        with warnings.catch_warnings():  # "few trials" and "experimental argument" warnings
            warnings.simplefilter("ignore")
            raw = optuna.importance.get_param_importances(study, normalize=False)
    finally:
        optuna.logging.set_verbosity(verbosity)
    total = sum(raw.values())
    if not total > 0:  # normalize=True would spread 1.0 equally, which reads as a finding
        return _no_importances(f"the best of the {len(trials)} complete trials differ from the rest in no "
                               "parameter that PED-ANOVA can see; run more trials")
    rows = [{"param": p, "importance": v / total, "trials": int(values[p].notna().sum()),
             "distribution": dists[p][2]} for p, v in raw.items()]
    frame = pd.DataFrame(rows).sort_values(["importance", "param"], ascending=[False, True], kind="stable")
    frame.attrs["method"] = (f"Optuna PED-ANOVA over {len(trials)} complete trials, objective best_{metric} "
                             f"({mode}); a conditional parameter is scored within the trials that have it")
    return frame.reset_index(drop=True)


def write_param_importances(board: pd.DataFrame, metric: str, mode: str, path: Path) -> pd.DataFrame:
    """Write :func:`param_importances` as CSV; its ``note`` column says how, or why there are none."""
    frame = param_importances(board, metric, mode)
    out = frame.assign(note="") if len(frame) else pd.DataFrame(
        [{"param": "", "importance": math.nan, "trials": 0, "distribution": ""}])
    out.loc[0, "note"] = frame.attrs.get("method") or frame.attrs.get("reason", "")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return frame


# ---------------------------------------------------------------------------- best so far
def best_so_far(board: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """The best validation value so far, one row per complete trial in the order the trials finished.

    With a ``finished_at`` column (Unix seconds of each trial's last report) ``seconds`` is the
    time since the first trial started (``finished_at - wall_s``). Without one the finishing order
    is unknown: the trials' run times (``wall_s``) are added up in the leaderboard's row order, and
    ``attrs["clock"]`` says so.

    Returns:
        ``trial_id``, ``seconds``, ``value`` (the trial's ``best_<metric>``) and ``best`` (so far).
    """
    trials = _complete(board, metric)
    wall = pd.to_numeric(trials["wall_s"], errors="coerce").fillna(0.0) if "wall_s" in trials else \
        pd.Series(0.0, index=trials.index)
    if len(trials) and "finished_at" in trials and trials["finished_at"].notna().all():
        end = trials["finished_at"].astype(float)
        seconds = end - (end - wall).min()
        clock = "time since the first trial started (s), at each trial's finish"
    else:
        seconds = wall.cumsum()
        clock = "trial run times added up in leaderboard row order (s): finishing times not recorded"
    frame = pd.DataFrame({"trial_id": trials.get("trial_id", pd.Series(index=trials.index, dtype=object)),
                          "seconds": seconds.astype(float), "value": trials.get(f"best_{metric}", np.nan)})
    frame = frame.sort_values("seconds", kind="stable").reset_index(drop=True)
    values = frame["value"].astype(float)
    frame["best"] = values.cummax() if mode == "max" else values.cummin()
    frame.attrs["clock"] = clock
    return frame


def best_so_far_png(board: pd.DataFrame, metric: str, mode: str, path: Path) -> Path:
    """Plot :func:`best_so_far`: each trial's best value and the best so far, against time.

    Args:
        board: the leaderboard (``best_<metric>``, ``wall_s``, optionally ``finished_at``).
        metric: the objective; mode: ``max`` or ``min``.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = best_so_far(board, metric, mode)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if len(curve):
        ax.scatter(curve["seconds"], curve["value"], s=18, color="0.6", label="each trial's best")
        ax.step(curve["seconds"], curve["best"], where="post", color="C0", lw=2, label="best so far")
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "no trial reported the objective", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(curve.attrs["clock"], fontsize=9)
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(f"best {metric} so far ({len(curve)} complete trials of {len(board)})")
    ax.grid(alpha=0.3)
    from genre_ray.evaluate import save_figure

    return save_figure(fig, path)
