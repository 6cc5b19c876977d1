"""The environment for the real processes that tests start.

``mlflow.set_tracking_uri`` also sets ``MLFLOW_TRACKING_URI`` in this process's environment, so a
child process would track to whatever store an earlier test used; and a console script the child
runs (``uvicorn`` for ``mlflow models serve``) must be found beside this Python even when the venv
is not activated.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without an inherited tracking URI, with this Python's bin folder first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, **extra}
