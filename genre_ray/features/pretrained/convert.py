"""Convert the musicnn wheel's TF1 checkpoints into the torch state dicts shipped in ``weights/``.

Usage::

    pip download --no-deps musicnn==0.1.0 -d /tmp/musicnn
    python -m genre_ray.features.pretrained.convert /tmp/musicnn/musicnn-0.1.0-py3-none-any.whl
    python -m genre_ray.features.pretrained.convert WHEEL --check   # shipped weights == a fresh conversion

No TensorFlow is needed: the checkpoints are read by :mod:`.tfbundle`. Weights are stored in
float32 (float16 on disk was measured to move the taggram by more than the 1e-4 parity budget).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from genre_ray.features.pretrained import NETWORKS, WEIGHTS_DIR
from genre_ray.features.pretrained.musicnn import VGG, Musicnn
from genre_ray.features.pretrained.tfbundle import read_bundle

__all__ = ["convert", "main", "state_dicts"]


def _unpacked(source: Path, tmp: Path) -> Path:
    """The folder holding the ``musicnn`` package: ``source`` itself, or the wheel unpacked."""
    if source.is_file():
        with zipfile.ZipFile(source) as whl:
            whl.extractall(tmp)
        source = tmp
    for candidate in (source / "musicnn", source):
        if (candidate / "MSD_musicnn" / ".index").is_file():
            return candidate
    raise FileNotFoundError(f"{source}: no musicnn checkpoints (MSD_musicnn/.index) in it; give the "
                            "musicnn-0.1.0 wheel or its unpacked folder")


def state_dicts(package: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Checkpoint folder name -> the ported network's float32 state dict."""
    out = {}
    for net in NETWORKS.values():
        variables = read_bundle(f"{package / net.checkpoint}/")
        model = (Musicnn if net.arch == "musicnn" else VGG).from_tf(variables)
        out[net.checkpoint] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out


def convert(source: Path, out_dir: Path = WEIGHTS_DIR) -> list[Path]:
    """Write one ``<checkpoint>.pt`` per network and the licence notice into ``out_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        package = _unpacked(source, Path(tmp))
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, state in state_dicts(package).items():
            path = out_dir / f"{name}.pt"
            torch.save(state, path)
            written.append(path)
        licence = next(package.parent.glob("musicnn-*.dist-info/LICENSE*"), None)
        if licence is not None:
            shutil.copyfile(licence, out_dir / "LICENSE-musicnn.md")
    return written


def check(source: Path, weights: Path = WEIGHTS_DIR) -> list[str]:
    """The differences between the shipped weights and a fresh conversion (empty when equal)."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, fresh in state_dicts(_unpacked(source, Path(tmp))).items():
            shipped = torch.load(weights / f"{name}.pt", map_location="cpu", weights_only=True)
            if set(shipped) != set(fresh):
                problems.append(f"{name}: tensors differ in name")
                continue
            problems += [f"{name}: {k} differs" for k in fresh if not torch.equal(shipped[k], fresh[k])]
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m genre_ray.features.pretrained.convert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="the musicnn-0.1.0 wheel, or the folder it was unpacked into")
    ap.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where to write the weights (default: the "
                    "package's own weights folder)")
    ap.add_argument("--check", action="store_true", help="compare the weights in --out with a fresh "
                    "conversion instead of writing; exit 1 when they differ")
    args = ap.parse_args(argv)
    try:
        if args.check:
            problems = check(args.source, args.out)
            for p in problems:
                print(p, file=sys.stderr)
            print("shipped weights equal a fresh conversion" if not problems else f"{len(problems)} differences")
            return 1 if problems else 0
        for path in convert(args.source, args.out):
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    except (OSError, ValueError, KeyError) as exc:
        print(f"convert: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
