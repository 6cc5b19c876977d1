"""Pause points for the kill tests: a process stops at a named point so that a test can SIGKILL it there.

``GENRE_RAY_PAUSE_AT=<name>`` makes :func:`pause_point` with that name write the file named by
``GENRE_RAY_PAUSE_FILE`` (so the test knows the process got there) and then sleep until it is
killed; ``GENRE_RAY_PAUSE_SKIP=n`` lets the first n passes through go on (kill at the third file).
Without the variable a pause point costs one dictionary lookup. The named points are where
a kill would do the most harm: between writing a feature cache's data and its marker
(``cache.before_marker``), between a tagging run's whole part and its name
(``tag.part_before_replace``), between registering a model version and moving the champion alias
(``register.before_alias``), between an undo entry and the file
replace (and an undo's restore), and in the middle of an undo entry.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import IO, Any

__all__ = ["pause_point"]

_PASSES: dict[str, int] = {}  # passes through each point in this process


def pause_point(name: str, flush: IO[Any] | None = None) -> None:
    """Stop here for good when ``GENRE_RAY_PAUSE_AT`` names this point (``flush``: a file to flush first)."""
    if os.environ.get("GENRE_RAY_PAUSE_AT") != name:
        return
    _PASSES[name] = _PASSES.get(name, 0) + 1
    if _PASSES[name] <= int(os.environ.get("GENRE_RAY_PAUSE_SKIP", "0")):
        return
    if flush is not None:
        flush.flush()
        os.fsync(flush.fileno())
    marker = os.environ.get("GENRE_RAY_PAUSE_FILE")
    if marker:
        Path(marker).write_text(f"{os.getpid()}\n")
    while True:  # until the test kills the process
        time.sleep(3600)
