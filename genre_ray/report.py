"""The files a search leaves in ``results/<search name>/``: leaderboard and summary.

No Ray and no MLflow here: the search hands over plain rows and numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["leaderboard_frame", "stop_reason", "write_summary"]


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
        f"- Objective: `{info['metric']}` on the validation split; best {info['best_val']:.4f}.",
        f"- Classes: {', '.join(info['classes'])}. Split made {info.get('split_method', 'by song')}: no song"
        + (" and no artist" if info.get("split_method") == "by artist" else "") + " is in two splits.",
        f"- Features: cache `{info['cache']['path']}` ({'hit' if info['cache']['hit'] else 'computed'}, "
        f"{info['cache']['clips']} clips of {info['cache']['files']} files).",
        "",
        "## Test (held-out songs, scored once)",
        "",
        f"Song-level accuracy **{t['acc']:.4f}**, balanced accuracy {t['bacc']:.4f} and macro-F1 "
        f"{t['f1']:.4f}" + (f", ROC-AUC {t['auc']:.4f}" if "auc" in t else "") + " on the **test split of "
        f"{info['test_songs']} songs** ({info['test_clips']} clips; clip-level accuracy "
        f"{t['clip_acc']:.4f}). A majority-class guess scores {info['baseline']['acc']:.4f} on the "
        "same songs.",
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
        lines += ["", f"## Skipped files ({len(skipped)})", "", _md_table(skipped)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
