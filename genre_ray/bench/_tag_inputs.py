"""The inputs of ``python -m genre_ray.bench tag``: the generated library, the model, and a per-stage timing.

Kept apart from :mod:`genre_ray.bench.tag` (the timing and the report); heavy imports stay inside
the functions, so that ``--help`` stays instant.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from genre_ray.data.demo import DemoSpec

__all__ = ["LibrarySpec", "bench_model", "ceiling", "ensure_library", "stages"]

log = logging.getLogger("genre_ray.bench")

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LibrarySpec:
    """A generated library: ``files`` MP3 files of ``distinct`` synthetic songs, each copied in turn."""

    files: int = 1024
    distinct: int = 32
    song: DemoSpec = DemoSpec(seconds=30.0, sample_rate=44100)  # the length and rate of every song
    stereo: bool = True

    def describe(self) -> str:
        return (f"{self.files} MP3 files, {self.song.seconds:g} s, {self.song.sample_rate / 1000:g} kHz, "
                f"{'stereo' if self.stereo else 'mono'} ({self.distinct} distinct synthetic songs of the "
                "demo's styles, each copied to several files)")


def ensure_library(root: Path, spec: LibrarySpec) -> Path:
    """Generate the MP3 library under ``root`` once (reused while its spec is the same). Not timed.

    Real libraries are compressed 44.1 kHz stereo files of 30 s and more (FMA's clips are 30 s MP3s),
    where decoding and resampling are a large part of a prediction.
    """
    import numpy as np
    import soundfile as sf

    from genre_ray.data.demo import STYLES, render_song

    marker, stamp = root / ".library.json", json.dumps(asdict(spec), sort_keys=True)
    if marker.is_file() and marker.read_text() == stamp:
        return root
    shutil.rmtree(root, ignore_errors=True)
    tmp = root.with_name(f".{root.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    styles = list(STYLES)
    log.info("generating %s into %s (once)", spec.describe(), root)
    (tmp / ".songs").mkdir(parents=True)
    for i in range(spec.distinct):
        wave = render_song(styles[i % len(styles)], spec.song, np.random.default_rng([7, i]))
        if spec.stereo:  # a slightly different right channel: a real stereo file to mix down
            wave = np.stack([wave, 0.9 * np.roll(wave, 11)], axis=1)
        sf.write(tmp / ".songs" / f"{i:03d}.mp3", wave.astype(np.float32), spec.song.sample_rate,
                 format="MP3", subtype="MPEG_LAYER_III")
    for k in range(spec.files):
        genre = styles[(k % spec.distinct) % len(styles)]
        (tmp / genre).mkdir(exist_ok=True)
        shutil.copyfile(tmp / ".songs" / f"{k % spec.distinct:03d}.mp3", tmp / genre / f"{genre}.{k:05d}.mp3")
    shutil.rmtree(tmp / ".songs")
    (tmp / marker.name).write_text(stamp)
    os.replace(tmp, root)
    return root


def bench_model(cache: Path) -> tuple[str, str]:
    """A registered model for the benchmark: a quick search of cnn.yaml, made once under ``cache``.

    Returns:
        The model URI (``models:/genre-bench-tag@champion``) and its tracking URI.
    """
    from genre_ray.config import SMOKE_OVERRIDES, load_config
    from genre_ray.search.runner import run_search
    from genre_ray.serving import ServingError, load

    folder = (cache / "model").resolve()
    tracking, uri = f"sqlite:///{folder / 'mlflow.db'}", "models:/genre-bench-tag@champion"
    try:
        load(uri, tracking)
        return uri, tracking
    except ServingError:
        pass
    # Smoke-sized training, but features as cnn.yaml has them (every clip of a song, not 3).
    overrides = {**SMOKE_OVERRIDES, "features.max_clips_per_song": None, "task": "bench-tag",
                 "output.results_dir": str(folder), "tracking.uri": tracking}
    log.info("training the benchmark's model (a smoke search of cnn.yaml) into %s", folder)
    run_search(load_config(ROOT / "search_spaces" / "cnn.yaml", overrides))  # the store's first: champion
    return uri, tracking


def stages(uri: str, tracking: str, paths: list[str], threads: int) -> dict[str, float]:
    """Milliseconds per file of each stage of a prediction, one file at a time, with ``threads``."""
    import numpy as np
    import torch

    from genre_ray.data.audio import decode_clips
    from genre_ray.serving import load

    clf, before = load(uri, tracking), torch.get_num_threads()
    s = clf.settings
    assert s is not None
    torch.set_num_threads(threads)
    spent = {"decode": 0.0, "features": 0.0, "network": 0.0}
    clf.predict_batch(paths[:1])  # warm-up (lazy imports, first allocations), not counted
    try:
        for path in paths:
            t0 = time.perf_counter()
            clips = decode_clips(path, s.sample_rate, s.clip_samples, s.clip_overlap, s.max_clips_per_song)
            t1 = time.perf_counter()
            x = clf.features(clips)
            t2 = time.perf_counter()
            clf.predict_songs(x, np.zeros(len(x), np.int64), 1)
            for key, dt in zip(spent, (t1 - t0, t2 - t1, time.perf_counter() - t2), strict=True):
                spent[key] += dt
    finally:
        torch.set_num_threads(before)
    return {k: 1000 * v / len(paths) for k, v in spent.items()}


def ceiling(uri: str, tracking: str, paths: list[str], batch_files: int,
            rounds: int = 6) -> tuple[list[float], list[float]]:
    """Milliseconds per file, round by round: the loop's work (the pyfunc model, one file per
    ``predict``, torch's default threads) and one ``tag`` worker's (the classifier, ``batch_files``
    files per call, one torch thread), alternating in this process so that a slow spell of the
    machine hits both. Twice the first over the second is what two one-thread workers could give
    over the loop with no Ray cost and no start-up."""
    import mlflow
    import pandas as pd
    import torch

    mlflow.set_tracking_uri(tracking)
    model = mlflow.pyfunc.load_model(uri)
    clf = model.unwrap_python_model().classifier
    before = torch.get_num_threads()
    model.predict(pd.DataFrame({"path": paths[:1]}))  # warm-up, not counted
    loop, one = [], []
    try:
        for _ in range(rounds):
            torch.set_num_threads(before)
            t0 = time.perf_counter()
            for path in paths:
                model.predict(pd.DataFrame({"path": [path]}))
            loop.append(1000 * (time.perf_counter() - t0) / len(paths))
            torch.set_num_threads(1)
            t0 = time.perf_counter()
            for i in range(0, len(paths), batch_files):
                clf.predict_batch(paths[i:i + batch_files])
            one.append(1000 * (time.perf_counter() - t0) / len(paths))
    finally:
        torch.set_num_threads(before)
    return loop, one
