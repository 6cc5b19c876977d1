"""Time pretrained-embedding extraction through the pipeline against a plain loop, in one run.

pipeline    genre_ray.features.pipeline.featurize with the embedding kind alone, as a search runs it: content
            hashing, a Ray Data pool of actors (one per core, or one per GPU) that each load the
            network once, decode, cut clips, embed and write the Parquet cache, then the read-back.
            Each run starts from an empty cache. ray.init and a first, small pass are timed apart,
            but each pass starts its own actors: their start (~2.5 s of Ray Data, ~2.5 s of
            imports, traced on 2 cores) is inside every timed run, a fixed cost per pass.
loop        what a careful user writes by hand with the same port: one file after another,
            genre_ray's own decoding (soundfile + soxr), then the clips through the network in
            batches in one process, torch using every core (its default threads).
bound       what a pool of one-thread workers reaches with no overhead at all, against the loop
            that already uses every core through torch's threads: one process per core, each a
            one-thread loop over its share of the files with its network loaded before the clock
            starts, all at once (measured: two workers on a machine's cores share its caches and
            memory bandwidth). Beside it, the loop's work on one thread alone times the cores:
            perfect scaling, which the machine does not give.
ceiling     the most clips/s the network's arithmetic allows here: the floating-point operations of
            one 3-s patch (counted by torch's FlopCounterMode) against the rate of a large float32
            matrix product measured on every core (a bound no convolution reaches).

Memory per worker is the peak resident memory of each pipeline actor process, sampled while it
runs. With a CUDA GPU present, both methods run on it too (rows marked ``cuda``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from genre_ray.bench import command_line, load_average, machine_summary, markdown_table, write_report
from genre_ray.data.demo import DemoSpec

__all__ = ["ceiling", "concurrent_loops", "loop", "run_embed_bench"]

log = logging.getLogger(__name__)

HELP = "time pretrained-embedding extraction (musicnn_msd ...) through Ray Data against a plain loop"
DEFAULT_OUT = Path("results/bench_embed.md")
DEMO_ROOT = Path("results/cache/bench_embed_demo")
DEMO_SPEC = DemoSpec(genres=8, songs_per_genre=5, seconds=30.0, sample_rate=16000)  # 40 songs, 400 clips


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", metavar="DIR", help="a folder-per-genre collection (default: a generated demo of "
                   f"{DEMO_SPEC.genres * DEMO_SPEC.songs_per_genre} songs of {DEMO_SPEC.seconds:g} s)")
    p.add_argument("--kind", default="musicnn_msd", help="the embedding kind (default: musicnn_msd)")
    p.add_argument("--layer", default="all", help="features.embedding_layer (default: all)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each method (the median counts)")
    p.add_argument("--batch", type=int, default=16, help="clips per forward pass in the loop (default: 16)")
    p.add_argument("--songs", type=int, help="use only the first N songs")
    p.add_argument("--demo-songs", type=int, default=DEMO_SPEC.songs_per_genre, metavar="N",
                   help=f"songs per genre of the generated demo, {DEMO_SPEC.genres} genres (default: "
                   f"{DEMO_SPEC.songs_per_genre}); more songs show the pipeline once its actors' start is paid")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"the report (default: {DEFAULT_OUT})")


def _settings(kind: str, layer: str) -> Any:
    from genre_ray.features import FeatureSettings

    return FeatureSettings(kinds=(kind,), sample_rate=16000, clip_seconds=3.0, clip_overlap=0.0,
                           embedding_layer=layer, max_clips_per_song=None)


def loop(paths: list[str], settings: Any, device: str = "cpu", batch: int = 16) -> tuple[float, int]:
    """The hand-written loop: ``(seconds, clips)`` for every file, one after another."""
    import torch

    from genre_ray.data.audio import AudioError, decode_clips
    from genre_ray.features.pretrained import embed

    kind = settings.kinds[0]
    n = 0
    t0 = time.perf_counter()
    for path in paths:
        try:
            clips = decode_clips(path, settings.sample_rate, settings.clip_samples, settings.clip_overlap, None)
        except AudioError:
            continue
        x = torch.from_numpy(clips).to(device)
        for i in range(0, len(x), batch):
            embed(x[i:i + batch], kind, settings.embedding_layer, settings.embedding_pool).cpu().numpy()
        n += len(clips)
    return time.perf_counter() - t0, n


def _loop_worker(paths: list[str], settings: Any, batch: int, ready: Any, results: Any) -> None:
    """One one-thread worker of :func:`concurrent_loops` (a spawned process)."""
    import torch

    torch.set_num_threads(1)
    loop(paths[:1], settings, batch=batch)  # the network loaded and run once before the clock
    ready.wait()
    results.put(loop(paths, settings, batch=batch))


def concurrent_loops(paths: list[str], settings: Any, workers: int, batch: int = 16) -> tuple[float, int]:
    """``workers`` one-thread loops at once, each over every ``workers``-th file, in processes of
    their own: ``(seconds, clips)`` from the moment all have loaded their network until the last
    one is done. What a pool of one-thread workers reaches with no overhead at all."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Barrier(workers + 1), ctx.Queue()
    procs = [ctx.Process(target=_loop_worker, args=(paths[i::workers], settings, batch, ready, results))
             for i in range(workers)]
    for p in procs:
        p.start()
    try:
        ready.wait(timeout=300)
        t0 = time.perf_counter()
        done = [results.get(timeout=3600) for _ in procs]
        seconds = time.perf_counter() - t0
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return seconds, sum(n for _, n in done)


def _flops_per_patch(kind: str) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from genre_ray.features.pretrained import load_network

    net = load_network(kind)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 187, 96))
    return float(counter.get_total_flops())


def ceiling(kind: str, seconds: float = 3.0) -> dict[str, float]:
    """The network's float operations per patch, the measured float32 matmul rate, and their ratio."""
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    gflops = reps * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9
    flops = _flops_per_patch(kind)
    return {"gflop_per_clip": flops / 1e9, "matmul_gflops": gflops, "clips_per_s": gflops * 1e9 / flops}


class _PeakRSS:
    """Peak resident memory of each process whose command line names ``tag``, sampled in a thread;
    only processes that start inside the ``with`` (not the previous pass's actors still exiting)."""

    def __init__(self, tag: str, every_s: float = 0.2) -> None:
        self.tag, self.every_s = tag, every_s
        self.peak: dict[int, int] = {}
        self._before: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                try:
                    if proc.info["pid"] not in self._before and self._tagged(proc):
                        rss = proc.info["memory_info"].rss
                        self.peak[proc.info["pid"]] = max(self.peak.get(proc.info["pid"], 0), rss)
                except (TypeError, AttributeError):
                    continue
            self._stop.wait(self.every_s)

    def _tagged(self, proc: Any) -> bool:
        return any(self.tag in part for part in proc.info["cmdline"] or ())

    def __enter__(self) -> _PeakRSS:
        import psutil

        self._before = {proc.info["pid"] for proc in psutil.process_iter(["pid", "cmdline"]) if self._tagged(proc)}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_embed_bench(paths: list[str], kind: str, layer: str, repeats: int, batch: int) -> dict[str, Any]:
    """Both methods on the same files, alternating run by run; the result rows and start-up times."""
    import pandas as pd
    import ray
    import torch

    from genre_ray.features.pipeline import featurize

    settings = _settings(kind, layer)
    manifest = pd.DataFrame({"path": paths})
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    init_s = time.perf_counter() - t0
    cores = int(ray.cluster_resources().get("CPU", 1))
    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        t1 = time.perf_counter()
        featurize(manifest.iloc[:2 * cores], settings, Path(tmp) / "warm", batch_files=1, in_process=False)
        warm_s = time.perf_counter() - t1
        loop(paths[:1], settings, batch=batch)  # the loop's own warm-up: network loaded, first call
        times: dict[str, list[float]] = {"pipeline": [], **{f"loop ({d})": [] for d in devices}}
        clips = {}
        peak: dict[int, int] = {}
        workers = 0
        for r in range(repeats):
            with _PeakRSS("PretrainedFeaturizer") as rss:
                t2 = time.perf_counter()
                table = featurize(manifest, settings, Path(tmp) / f"run{r}", batch_files=8, in_process=False)
                times["pipeline"].append(time.perf_counter() - t2)
            peak.update({p: max(v, peak.get(p, 0)) for p, v in rss.peak.items()})
            workers = max(workers, len(rss.peak))
            clips["pipeline"] = len(table.clips)
            for d in devices:
                seconds, n = loop(paths, settings, device=d, batch=batch)
                times[f"loop ({d})"].append(seconds)
                clips[f"loop ({d})"] = n
            log.info("round %d of %d: %s", r + 1, repeats,
                     ", ".join(f"{m} {v[-1]:.1f} s" for m, v in times.items()))
    loop_cpu = statistics.median(times["loop (cpu)"])
    rows = []
    for method, runs in times.items():
        med = statistics.median(runs)
        rows.append({"method": method, "clips": clips[method], "median_s": round(med, 2),
                     "clips_per_s": round(clips[method] / med, 1),
                     "ratio_to_loop": round(loop_cpu / med * clips[method] / clips["loop (cpu)"], 2),
                     "runs_s": " ".join(f"{x:.1f}" for x in runs),
                     "memory_per_worker_mib": round(statistics.median(peak.values()) / 2**20) if method == "pipeline"
                     and peak else None,
                     "workers": workers if method == "pipeline" else 1})
    # The most a pool of one-thread workers can give over the loop: `cores` one-thread loops at
    # once, measured; and the loop's work on one thread alone times `cores`, which assumes that
    # the cores scale perfectly.
    loop_rate = clips["loop (cpu)"] / loop_cpu
    both_s, both_n = concurrent_loops(paths, settings, cores, batch=batch)
    rows.append({"method": f"{cores} one-thread loops at once (no-overhead bound for {cores} workers)",
                 "clips": both_n, "median_s": round(both_s, 2), "clips_per_s": round(both_n / both_s, 1),
                 "ratio_to_loop": round(both_n / both_s / loop_rate, 2), "runs_s": f"{both_s:.1f}",
                 "memory_per_worker_mib": None, "workers": cores})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one_s, one_n = loop(paths, settings, batch=batch)
    finally:
        torch.set_num_threads(threads)
    ideal = cores * one_n / one_s
    rows.append({"method": f"loop on 1 thread alone, x{cores} (perfect scaling)",
                 "clips": one_n, "median_s": round(one_s, 2), "clips_per_s": round(ideal, 1),
                 "ratio_to_loop": round(ideal / loop_rate, 2), "runs_s": f"{one_s:.1f}",
                 "memory_per_worker_mib": None, "workers": cores})
    return {"rows": rows, "ray_init_s": init_s, "warm_s": warm_s, "cores": cores, "devices": devices,
            "gpu_in_pipeline": bool(ray.cluster_resources().get("GPU", 0))}


def run_cli(args: argparse.Namespace) -> int:
    from genre_ray.data.collection import folder_manifest
    from genre_ray.data.demo import ensure_demo_collection
    from genre_ray.features.pretrained import NETWORKS

    if args.kind not in NETWORKS:
        print(f"error: --kind must be one of {', '.join(NETWORKS)}, got {args.kind!r}")
        return 2
    spec = replace(DEMO_SPEC, songs_per_genre=args.demo_songs)
    demo_root = DEMO_ROOT if spec == DEMO_SPEC else DEMO_ROOT.with_name(f"{DEMO_ROOT.name}_{args.demo_songs}")
    root = Path(args.data) if args.data else ensure_demo_collection(demo_root, spec)
    manifest, _ = folder_manifest(root)
    paths = manifest["path"].tolist()[: args.songs] if args.songs else manifest["path"].tolist()
    log.info("embedding %d songs with %s (layer %s), load average %.2f", len(paths), args.kind, args.layer,
             load_average())
    top = ceiling(args.kind)  # before Ray starts: its idle processes would take from the matmul rate
    res = run_embed_bench(paths, args.kind, args.layer, args.repeats, args.batch)
    rows = res["rows"]
    pipe = next(r for r in rows if r["method"] == "pipeline")
    bound = next(r for r in rows if "loops at once" in r["method"])
    loop_row = next(r for r in rows if r["method"] == "loop (cpu)")
    rows.append({"method": "ceiling (arithmetic)", "clips": None, "median_s": None,
                 "clips_per_s": round(top["clips_per_s"], 1), "ratio_to_loop": None, "runs_s": "",
                 "memory_per_worker_mib": None, "workers": None})
    verdict = (f"The pipeline embeds **{pipe['clips_per_s']:.1f} clips/s** of {args.kind}, "
               f"**{pipe['ratio_to_loop']:.2f}x** the hand-written loop in the same run, with "
               f"{pipe['workers']} actors of {pipe['memory_per_worker_mib']} MiB each; with no overhead at all, "
               f"{res['cores']} one-thread workers reach {bound['ratio_to_loop']:.2f}x (measured at once, "
               f"{bound['clips_per_s']:.1f} clips/s), so the pipeline gets "
               f"{pipe['clips_per_s'] / bound['clips_per_s']:.0%} of what its workers could. One 3-s clip costs "
               f"{top['gflop_per_clip']:.2f} GFLOP; at the {top['matmul_gflops']:.0f} GFLOP/s that a large float32 "
               f"matrix product reaches on these {res['cores']} cores, no implementation of this network "
               f"exceeds {top['clips_per_s']:.0f} clips/s here: the loop reaches "
               f"{loop_row['clips_per_s'] / top['clips_per_s']:.0%} of that, the pipeline "
               f"{pipe['clips_per_s'] / top['clips_per_s']:.0%}.")
    columns = {"method": "method", "clips": "clips", "median_s": "median s", "clips_per_s": "clips/s",
               "ratio_to_loop": "x loop (cpu)", "memory_per_worker_mib": "MiB per worker", "workers": "workers",
               "runs_s": "runs (s)"}
    header = {**machine_summary(("ray", "torch")), "command": f"`{command_line(getattr(args, 'argv', None))}`",
              "data": args.data or f"generated demo, {len(paths)} songs of {DEMO_SPEC.seconds:g} s at 16 kHz",
              "devices": ", ".join(res["devices"]) + (" (the pipeline's actors each hold a GPU)"
                                                        if res["gpu_in_pipeline"] else "")}
    write_report(args.out, f"Embedding extraction: {args.kind}", header, [
        ("Verdict", verdict),
        ("Methods", markdown_table(rows, columns)),
        ("Start-up (not counted)", f"ray.init {res['ray_init_s']:.1f} s; a first small pass (libraries and "
         f"networks loaded into the OS cache; every timed pass starts its own actors) {res['warm_s']:.1f} s."),
        ("How it was measured", __doc__ or ""),
    ], rows)
    print(verdict.replace("**", ""))
    print(f"report: {args.out}")
    return 0
