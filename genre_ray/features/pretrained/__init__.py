"""Pretrained music networks as feature kinds: the catalogue (no torch), their weights, and embedding.

Four networks of the ``musicnn`` 0.1.0 wheel (ISC licence, Music Technology Group, Universitat
Pompeu Fabra; ``weights/LICENSE-musicnn.md``), ported to torch (:mod:`.musicnn`) and shipped as
converted state dicts in ``weights/`` (``python -m genre_ray.features.pretrained.convert`` makes
them again from the wheel):

================ ================== =========================================================
feature kind     network            trained on
================ ================== =========================================================
``musicnn_msd``  ``MSD_musicnn``    Million Song Dataset, 50 Last.fm tags (many are genres)
``musicnn_mtt``  ``MTT_musicnn``    MagnaTagATune, 50 tags
``vgg_msd``      ``MSD_vgg``        Million Song Dataset (VGG-like baseline)
``vgg_mtt``      ``MTT_vgg``        MagnaTagATune (VGG-like baseline)
================ ================== =========================================================

Each clip of the collection gets one embedding: the network runs on the clip's consecutive 3-s
patches, and ``embedding_pool`` pools the chosen ``embedding_layer`` over them (``mean``, or
``mean_std``: means then standard deviations). Layers: ``taggram`` (the 50 tag probabilities),
``penultimate`` (musicnn's 200-unit dense layer), ``pooled`` (musicnn's back-end max and mean over
time, 2 x 753; VGG's flattened last pool, 256), ``all`` (taggram, pooled and penultimate, in that
order).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["LAYERS", "MIN_CLIP_SECONDS", "MSD_LABELS", "MTT_LABELS", "NETWORKS", "POOLS", "SAMPLE_RATE", "WEIGHTS_DIR",
           "Network", "audio_patches", "clip_error", "embed",
           "embedding_dim", "layer_error", "load_network"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SAMPLE_RATE = 16000  # what the networks were trained on
#: The shortest clip that holds one 187-frame patch: (187 - 1) * 256 / 16000 s.
MIN_CLIP_SECONDS = 2.976
LAYERS = ("taggram", "penultimate", "pooled", "all")
POOLS = ("mean", "mean_std")

# The tag vocabularies, in the networks' output order (musicnn/configuration.py of the wheel).
MSD_LABELS = (
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s", "alternative rock",
    "jazz", "beautiful", "metal", "chillout", "male vocalists", "classic rock", "soul", "indie rock", "Mellow",
    "electronica", "80s", "folk", "90s", "chill", "instrumental", "punk", "oldies", "blues", "hard rock",
    "ambient", "acoustic", "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock", "60s", "rnb",
    "indie pop", "sad", "House", "happy")
MTT_LABELS = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast", "piano", "ambient",
    "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male", "singing", "vocals", "no vocals",
    "harpsichord", "loud", "quiet", "flute", "woman", "male vocal", "no vocal", "pop", "soft", "sitar", "solo",
    "man", "classic", "choir", "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral")


@dataclass(frozen=True)
class Network:
    """One pretrained network: its architecture, the wheel's checkpoint folder, its tags, and the
    widths of its layers."""

    arch: str  # "musicnn" or "vgg"
    checkpoint: str  # the folder in the musicnn wheel
    labels: tuple[str, ...]

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.checkpoint}.pt"

    @property
    def layer_dims(self) -> dict[str, int]:
        """Width of each single layer of one patch's output (``all`` concatenates them)."""
        if self.arch == "musicnn":
            return {"taggram": len(self.labels), "pooled": 2 * 753, "penultimate": 200}
        return {"taggram": len(self.labels), "pooled": 256}


NETWORKS: dict[str, Network] = {
    "musicnn_msd": Network("musicnn", "MSD_musicnn", MSD_LABELS),
    "musicnn_mtt": Network("musicnn", "MTT_musicnn", MTT_LABELS),
    "vgg_msd": Network("vgg", "MSD_vgg", MSD_LABELS),
    "vgg_mtt": Network("vgg", "MTT_vgg", MTT_LABELS),
}


def _parts(kind: str, layer: str) -> tuple[str, ...]:
    return tuple(NETWORKS[kind].layer_dims) if layer == "all" else (layer,)


def layer_error(kind: str, layer: str) -> str | None:
    """Why ``layer`` cannot be taken from ``kind``'s network, or None when it can."""
    if layer not in LAYERS:
        return f"must be one of {', '.join(LAYERS)}"
    have = NETWORKS[kind].layer_dims
    if layer != "all" and layer not in have:
        return f"{kind} has no {layer} layer (it has: {', '.join([*have, 'all'])})"
    return None


def clip_error(clip_seconds: float) -> str | None:
    """Why clips of ``clip_seconds`` are too short for the networks, or None when they are not."""
    if clip_seconds < MIN_CLIP_SECONDS:
        return f"must be at least {MIN_CLIP_SECONDS} (one 3-s patch of 187 frames at 16 kHz)"
    return None


def embedding_dim(kind: str, layer: str, pool: str) -> int:
    """Width of one clip's embedding of ``kind``."""
    dims = NETWORKS[kind].layer_dims
    return sum(dims[p] for p in _parts(kind, layer)) * (2 if pool == "mean_std" else 1)


@lru_cache(maxsize=8)
def load_network(kind: str, device: str = "cpu") -> Any:
    """The ported network of ``kind`` with its shipped weights, in eval mode on ``device``.

    Loaded once per process and device (a Ray actor or a tagging worker keeps it).

    Raises:
        FileNotFoundError: when the package was installed without its weights.
    """
    import torch

    from genre_ray.features.pretrained.musicnn import VGG, Musicnn

    net = NETWORKS[kind]
    if not net.weights.is_file():
        raise FileNotFoundError(f"{net.weights}: the weights of {kind} are missing from the installed package; "
                                "reinstall genre_ray, or rebuild them with "
                                "python -m genre_ray.features.pretrained.convert")
    model = (Musicnn if net.arch == "musicnn" else VGG)(n_tags=len(net.labels))
    state = torch.load(net.weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval().to(device)


def audio_patches(audio: Any, k: int) -> Any:
    """How many of each clip's ``k`` patches hold audio: those that end before the clip's last
    non-zero sample, at least one.

    The rest is the zero padding of a song shorter than a clip (a 4-s song in a 30-s clip has one
    patch of music and nine of nothing), or digital silence at a clip's end.

    Args:
        audio: ``(n_clips, samples)`` torch tensor of 16 kHz audio.
        k: the patches of each clip (:func:`~genre_ray.features.pretrained.musicnn.patches`).

    Returns:
        ``(n_clips,)`` int64 torch tensor, each in ``1 .. k``.
    """
    import torch

    from genre_ray.features.pretrained.musicnn import HOP, N_FRAMES

    sound = audio != 0
    last = audio.shape[1] - sound.flip(1).to(torch.uint8).argmax(dim=1)  # one past the last non-zero
    last = torch.where(sound.any(dim=1), last, 0)
    frames = last // HOP + 1  # centred frames up to it
    return (frames // N_FRAMES).clamp(1, k)


def embed(audio: Any, kind: str, layer: str = "all", pool: str = "mean", batch_patches: int = 64) -> Any:
    """Clip embeddings from a pretrained network.

    The network runs on each clip's consecutive 3-s patches that hold audio
    (:func:`audio_patches`), and ``pool`` pools their outputs: the zero padding of a song shorter
    than a clip is neither computed nor averaged in.

    Args:
        audio: ``(n_clips, samples)`` float32 torch tensor of 16 kHz audio, each at least one 3-s
            patch (187 frames) long; on the device to compute on.
        kind: a key of :data:`NETWORKS`.
        layer: one of :data:`LAYERS`.
        pool: how a clip's patches are pooled, one of :data:`POOLS`.
        batch_patches: the most patches per forward pass.

    Returns:
        ``(n_clips, embedding_dim(kind, layer, pool))`` float32 torch tensor on ``audio``'s device.
    """
    import torch

    from genre_ray.features.pretrained.musicnn import log_mel, patches

    net = load_network(kind, str(audio.device))
    p = patches(log_mel(audio))  # (n, k, 187, 96)
    n, k = p.shape[:2]
    counts = audio_patches(audio, k).to(p.device)
    keep = torch.arange(k, device=p.device)[None, :] < counts[:, None]  # (n, k)
    flat = p[keep]  # the patches that hold audio, clip after clip
    owner = torch.arange(n, device=p.device).repeat_interleave(counts)
    outs = []
    with torch.inference_mode():
        for i in range(0, len(flat), batch_patches):
            o = net(flat[i:i + batch_patches])
            if "mean_pool" in o:
                o["pooled"] = torch.cat([o["max_pool"], o["mean_pool"]], dim=1)
            else:
                o["pooled"] = o["pool5"]
            outs.append(torch.cat([o[part] for part in _parts(kind, layer)], dim=1))
    per_patch = torch.cat(outs)  # (patches, width)
    weights = (1.0 / counts.to(per_patch.dtype))[:, None]
    mean = torch.zeros(n, per_patch.shape[1], dtype=per_patch.dtype, device=p.device)
    mean = mean.index_add_(0, owner, per_patch) * weights
    if pool == "mean":
        return mean
    spread = torch.zeros_like(mean).index_add_(0, owner, (per_patch - mean[owner]).square()) * weights
    return torch.cat([mean, spread.sqrt()], dim=1)
