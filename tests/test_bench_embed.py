"""``python -m genre_ray.bench embed``: its hand-written loop and its arithmetic ceiling (no Ray)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_tone


def test_the_loop_embeds_every_clip_and_skips_an_undecodable_file(tmp_path: Path) -> None:
    from genre_ray.bench.embed import _settings, loop

    paths = [str(write_tone(tmp_path / "a.wav", seconds=7.0, sr=16000)),  # 2 clips of 3 s
             str(write_tone(tmp_path / "b.wav", seconds=3.5, sr=22050, freq=330.0))]  # 1 clip
    (tmp_path / "broken.wav").write_bytes(b"RIFF not audio")
    seconds, clips = loop([*paths, str(tmp_path / "broken.wav")], _settings("musicnn_msd", "penultimate"), batch=1)
    assert clips == 3 and seconds > 0


def test_concurrent_loops_share_the_files_and_count_every_clip(tmp_path: Path) -> None:
    """The bound: one-thread loops in processes of their own, each over its share of the files."""
    from genre_ray.bench.embed import _settings, concurrent_loops

    paths = [str(write_tone(tmp_path / f"{i}.wav", seconds=3.5 + 3 * i, sr=16000)) for i in range(3)]  # 1+2+3 clips
    seconds, clips = concurrent_loops(paths, _settings("musicnn_msd", "taggram"), workers=2, batch=4)
    assert clips == 6 and seconds > 0


def test_the_ceiling_counts_the_networks_arithmetic() -> None:
    from genre_ray.bench.embed import ceiling

    top = ceiling("musicnn_msd", seconds=0.2)
    # 2.8 GFLOP a 3-s patch, 80 % of it the two timbral convolutions (docs/pretrained.md)
    assert 2.7 < top["gflop_per_clip"] < 2.9
    assert top["matmul_gflops"] > 0
    assert np.isclose(top["clips_per_s"], top["matmul_gflops"] / top["gflop_per_clip"])


def test_demo_songs_makes_a_larger_demo_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from genre_ray.bench import embed

    parser = argparse.ArgumentParser()
    embed.add_arguments(parser)
    args = parser.parse_args(["--demo-songs", "1"])
    assert args.demo_songs == 1
    made = []
    monkeypatch.setattr(embed, "DEMO_ROOT", tmp_path / "bench_embed_demo")
    monkeypatch.setattr("genre_ray.data.demo.ensure_demo_collection",
                        lambda root, spec: made.append((root, spec)) or _stop())
    try:
        embed.run_cli(args)
    except _Stop:
        pass
    [(root, spec)] = made
    assert root.name == "bench_embed_demo_1" and spec.songs_per_genre == 1 and spec.genres == embed.DEMO_SPEC.genres
    assert not list(tmp_path.iterdir())  # nothing written before the demo is made


class _Stop(Exception):
    pass


def _stop() -> None:
    raise _Stop
