"""The embedded demo collection: real WAVs in the GTZAN layout, deterministic, reused, atomic."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genre_ray.data import demo
from genre_ray.data.demo import STYLES, DemoSpec, ensure_demo_collection, render_song


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.wav")):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_and_format(tiny_demo: Path) -> None:
    genres = sorted(p.name for p in tiny_demo.iterdir() if p.is_dir())
    assert genres == sorted(list(STYLES)[:3])
    files = sorted(tiny_demo.rglob("*.wav"))
    assert len(files) == 18
    assert files[0].name.startswith(files[0].parent.name + ".") and files[0].name.endswith("00000.wav")
    info = sf.info(files[0])
    assert info.samplerate == 22050 and info.channels == 1 and info.subtype == "PCM_16"
    assert abs(info.duration - 4.0) < 0.01


def test_deterministic(tmp_path: Path) -> None:
    spec = DemoSpec(genres=2, songs_per_genre=2, seconds=3.0)
    a = ensure_demo_collection(tmp_path / "a", spec)
    b = ensure_demo_collection(tmp_path / "b", spec)
    assert _digest(a) == _digest(b)
    c = ensure_demo_collection(tmp_path / "c", DemoSpec(genres=2, songs_per_genre=2, seconds=3.0, seed=1))
    assert _digest(a) != _digest(c)


def test_reused_when_complete_and_regenerated_when_settings_change(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    spec = DemoSpec(genres=2, songs_per_genre=2, seconds=3.0)
    root = ensure_demo_collection(tmp_path / "demo", spec)
    calls = []
    monkeypatch.setattr(demo, "render_song", lambda *a, **k: calls.append(1) or np.zeros(100, np.float32))
    ensure_demo_collection(root, spec)
    assert calls == []
    ensure_demo_collection(root, DemoSpec(genres=2, songs_per_genre=3, seconds=3.0))
    assert len(calls) == 6


def test_interrupted_generation_leaves_nothing_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "render_song", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_demo_collection(tmp_path / "demo", DemoSpec(genres=2, songs_per_genre=2, seconds=3.0))
    assert not (tmp_path / "demo").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".demo.lock"]  # only the (empty) lock of concurrent runs


def test_styles_differ_in_tempo_rhythm_timbre_and_harmony() -> None:
    assert len(STYLES) >= 6
    tempos = {s.tempo for s in STYLES.values()}
    rhythms = {(s.kick, s.snare, s.hat) for s in STYLES.values()}
    timbres = {(s.lead, s.bass, s.drive) for s in STYLES.values()}
    harmony = {s.chords for s in STYLES.values()}
    assert min(len(tempos), len(rhythms), len(timbres), len(harmony)) >= 6


def test_songs_are_distinct_within_a_style() -> None:
    spec = DemoSpec(seconds=3.0)
    a = render_song("rock", spec, np.random.default_rng(1))
    b = render_song("rock", spec, np.random.default_rng(2))
    assert a.shape == b.shape == (3 * 22050,)
    assert np.abs(a).max() <= 1.0 and np.isfinite(a).all()
    assert np.corrcoef(a, b)[0, 1] < 0.5


@pytest.mark.parametrize("timbre", ["saw", "square", "organ", "strings", "piano"])
@pytest.mark.parametrize("freq", [55.0, 440.0, 1808.0])
def test_harmonics_by_recurrence_equal_the_direct_sum_of_sines(timbre: str, freq: float) -> None:
    """The generator sums sin(k x) by a recurrence; it must equal sum_k a_k sin(k x) below Nyquist."""
    sr, n = 22050, 4000
    amps = {"saw": 1 / demo._K, "square": np.where(demo._K % 2 == 1, 1 / demo._K, 0),
            "organ": np.array([1, 0.8, 0, 0.6, 0, 0.3, 0, 0.3]), "strings": 1 / demo._K[:12] ** 1.2,
            "piano": 0.6 ** demo._K[:10]}[timbre]
    vibrato = 1.0 if timbre == "strings" else 0.0
    got = demo._harmonics(freq, n, sr, amps, np.random.default_rng(3), vibrato=vibrato)
    t = np.arange(n) / sr
    phase = 2 * np.pi * freq * t
    if vibrato:  # the same draw from the same generator
        phase += vibrato * np.sin(2 * np.pi * 5.5 * t + np.random.default_rng(3).uniform(0, 6.28)) * freq / 5.5 * 0.02
    k = np.arange(1, len(amps) + 1)
    keep = k * freq < sr / 2 - 200  # at 1808 Hz the 6th harmonic (10848 Hz) is 23 Hz too high
    want = (amps[keep, None] * np.sin(k[keep, None] * phase[None, :])).sum(axis=0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-11)
