"""A search on a three-node Ray cluster on one machine, losing a worker node mid-search.

Run by tests/test_cluster_nodes.py in its own process (so that its cluster never meets the test
session's local Ray): ``python tests/_cluster_scenario.py WORKDIR``. It prints one JSON line.

Nodes: a head with no CPUs (the driver and the object store only), and two workers with one CPU
each, so two trials run at once, one on each worker. The collection is featurized first (on the
workers); then the search starts, and once a trial on worker 1 has saved a checkpoint (with several
epochs still to go), worker 1 is killed without warning; the other worker carries on alone.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _spaces import tiny_space  # noqa: E402

#: Epochs per trial: enough that a trial is still running when the kill lands on its node.
EPOCHS = 20


def main(work: Path) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from genre_ray.config import load_config
    from genre_ray.search.runner import load_collection, run_search

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    cluster.wait_for_nodes()
    space = work / "space.yaml"
    space.write_text(yaml.safe_dump(tiny_space("nodes", "nodes", str(work / "demo"), epochs=EPOCHS,
                                                num_samples=4, batch_size=16)))
    cfg = load_config(space, {"output.results_dir": str(work / "results"),
                              "tracking.uri": f"sqlite:///{work / 'mlflow.db'}"})
    _, _, table, _ = load_collection(cfg, work / "results")  # featurized once, before the search
    featurized = {"computed": list(table.info["computed"]), "path": table.cache_path}

    killed: dict = {}

    def running_on(node_id: str) -> str | None:
        """A trial running on ``node_id`` with a checkpoint saved and many epochs still to go."""
        import pandas as pd

        for progress in glob.glob(str(work / "results" / "ray" / "*" / "*" / "progress.csv")):
            trial_dir = Path(progress).parent
            try:
                last = pd.read_csv(progress).iloc[-1]
            except Exception:  # noqa: BLE001 - being written, or still empty
                continue
            under_way = 1 <= int(last.get("epoch", 0)) <= EPOCHS - 8
            if (last.get("node_id") == node_id and not bool(last.get("done", False)) and under_way
                    and list(trial_dir.glob("checkpoint_*"))):
                return trial_dir.name
        return None

    def kill_a_worker() -> None:
        # The worker is killed while one of its trials is well under way: past its first saved
        # epoch, with several still to run, so the kill cannot miss it (however fast this machine
        # trains) and the retry has a checkpoint to resume from. A trial whose actor is still being
        # placed on the node (PENDING) when it dies is failed, not retried, by Tune.
        deadline = time.time() + 600
        victim = workers[0].node_id
        trial = None
        while trial is None and time.time() < deadline:
            trial = running_on(victim)
            if trial is None:
                time.sleep(0.05)
        killed["trial"] = trial
        killed["node_id"] = victim
        killed["at"] = time.time()
        cluster.remove_node(workers[0], allow_graceful=False)  # the other worker carries on alone

    thread = threading.Thread(target=kill_a_worker, daemon=True)
    thread.start()
    summary = run_search(cfg)[0]
    thread.join(timeout=60)

    board = summary["leaderboard"]
    out = {"planned_epochs": EPOCHS, "featurized": featurized, "cache": summary["cache"], "killed": killed,
           "trials": len(board), "stopped": board["stopped"].tolist(), "epochs": board["epochs"].tolist(),
           "out_dir": summary["out_dir"], "experiment": summary["disk"]["experiment"],
           "checkpoints": summary["disk"]["checkpoints"]}
    nodes, restored = set(), []
    for path in glob.glob(str(work / "results" / "ray" / "*" / "*" / "progress.csv")):
        import pandas as pd

        progress = pd.read_csv(path)
        if "node_id" in progress:
            nodes.update(progress["node_id"].dropna().astype(str))
        if "restored_from_epoch" in progress:
            restored += [int(v) for v in progress["restored_from_epoch"].dropna() if v > 0]
    out.update(nodes=sorted(nodes), restored_from_epochs=restored)
    ray.shutdown()
    cluster.shutdown()
    return out


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    result = main(Path(sys.argv[1]))
    print("SCENARIO " + json.dumps(result, default=str))
