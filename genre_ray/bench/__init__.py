"""Benchmarks, run as ``python -m genre_ray.bench SUBCOMMAND``.

Each subcommand is a module of this package that defines ``HELP`` (one line for ``--help``),
``add_arguments(parser)`` and ``run_cli(args) -> int``, and keeps heavy imports (Ray, torch,
librosa) inside its functions so that ``--help`` stays instant. To add one, write the module and
name it in :data:`SUBCOMMANDS`.

The helpers below write every benchmark's result the same way: a Markdown file with a short
header (machine, date, command) and tables, and a CSV of the main table beside it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["SUBCOMMANDS", "Timing", "command_line", "load_average", "machine_summary", "markdown_table",
           "wait_for_quiet", "write_report"]

#: Subcommand name -> module under ``genre_ray.bench``.
SUBCOMMANDS: dict[str, str] = {
    "embed": "genre_ray.bench.embed",
    "featurize": "genre_ray.bench.featurize",
    "folds": "genre_ray.bench.folds",
    "overhead": "genre_ray.bench.overhead",
    "search": "genre_ray.bench.search",
    "tag": "genre_ray.bench.tag",
    "zoo": "genre_ray.bench.zoo",
}


@dataclass
class Timing:
    """One method's measurement: its timed runs (the median counts) and its start-up, apart."""

    method: str
    songs: int
    clips: int
    runs: list[float]
    startup_s: float
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return statistics.median(self.runs)

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else float("nan")

    def runs_text(self) -> str:
        return f"median of {len(self.runs)} runs: " + ", ".join(f"{x:.2f}" for x in self.runs) + " s"


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed, for a report's header."""
    args = list(sys.argv[1:] if argv is None else argv)
    return shlex.join(["python", "-m", "genre_ray.bench", *args])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _versions(packages: Sequence[str]) -> str:
    out = []
    for name in packages:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(out)


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none): other processes slow every timing."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def wait_for_quiet(max_load: float, timeout_s: float = 900.0, poll_s: float = 5.0) -> float:
    """Wait until the 1-minute load average is below ``max_load`` or ``timeout_s`` has passed.

    Returns:
        The load average when the wait ended.
    """
    deadline = time.monotonic() + timeout_s
    while load_average() >= max_load and time.monotonic() < deadline:
        time.sleep(poll_s)
    return load_average()


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, all) CPU ticks since boot from ``/proc/stat`` (Linux); None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (fields[7], sum(fields)) if len(fields) == 8 else None


class StealMeter:
    """The share of CPU time the hypervisor took from this virtual machine while a block ran.

    On a shared cloud host, a neighbour's load shows up as *steal* in ``/proc/stat``: the guest's
    load average stays low while every timing slows down, and not every method alike. A run with
    steal above a few percent is not comparable with one without. ``fraction`` is NaN where the OS
    does not report steal.

    Example:
        >>> with StealMeter() as meter:
        ...     work()
        >>> meter.fraction
        0.004
    """

    def __init__(self) -> None:
        self.fraction = float("nan")
        self._start: tuple[int, int] | None = None

    def __enter__(self) -> StealMeter:
        self._start = _cpu_ticks()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _cpu_ticks()
        if self._start is not None and end is not None and end[1] > self._start[1]:
            self.fraction = (end[0] - self._start[0]) / (end[1] - self._start[1])


def machine_summary(packages: Sequence[str] = ("ray", "torch", "librosa", "pyarrow")) -> dict[str, str]:
    """What a reader needs to judge timings: CPU, cores, memory, OS, date, versions."""
    mem = _memory_gib()
    return {
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores" + (f", {mem:.0f} GiB RAM" if mem else ""),
        "os": f"{platform.system()} {platform.release()}, Python {platform.python_version()}",
        "versions": _versions(packages),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return "" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: dict[str, str]) -> str:
    """Rows as a Markdown table.

    Args:
        rows: one dict per row.
        columns: row key -> column title, in display order.

    Returns:
        The table, one line per row, without a trailing newline.
    """
    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out: str | os.PathLike[str], title: str, header: dict[str, str],
                 sections: Sequence[tuple[str, str]],
                 csv_rows: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``out`` (Markdown) and the CSV beside it (same name, ``.csv``).

    Args:
        out: the Markdown file to write; folders are created.
        title: the first heading.
        header: label -> value lines under the title (machine, date, command...).
        sections: (heading, Markdown body) pairs, in order.
        csv_rows: the rows of the CSV; its columns are the keys of the first row.

    Returns:
        The paths of the Markdown and CSV files.
    """
    md = Path(out)
    md.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", "", *[f"- **{k}**: {v}" for k, v in header.items()], ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body, ""]
    md.write_text("\n".join(parts))
    path_csv = md.with_suffix(".csv")
    with path_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(csv_rows[0]) if csv_rows else [])
        writer.writeheader()
        writer.writerows(csv_rows)
    return md, path_csv
