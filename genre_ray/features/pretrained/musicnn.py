"""musicnn and its VGG baseline in torch: the networks of Pons and Serra, "musicnn: pre-trained
convolutional neural networks for music audio tagging" (ISMIR LBD 2019), ported layer by layer from
the TF1 graphs of the ``musicnn`` 0.1.0 wheel (its ``models.py``), with their trained weights.

Both read ``(batch, 187, 96)`` log-mel patches: 16 kHz audio, 512-point STFT, hop 256, 96 slaney mel
bands, ``log10(10000 * S + 1)`` (:func:`log_mel`). TF's NHWC tensors are NCHW here, with time as H
and mel bands as W; every place where the layout changes the values (the kernels' axis order,
``same`` padding of even kernels, the interleaved max/mean flatten of the back-end, the NHWC flatten
of VGG's last pool) is done as TF does it. Batch norm runs with TF's epsilon (1e-3); dropout is off
outside training, as in the originals.

:meth:`Musicnn.from_tf` / :meth:`VGG.from_tf` map a checkpoint's variables (as read by
:func:`genre_ray.features.pretrained.tfbundle.read_bundle`) onto the modules, by the names TF gave
the layers in creation order.
"""

from __future__ import annotations

from functools import lru_cache
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["N_FRAMES", "N_MELS", "SAMPLE_RATE", "Musicnn", "VGG", "log_mel", "patches"]

SAMPLE_RATE, N_FFT, HOP, N_MELS = 16000, 512, 256, 96
N_FRAMES = 187  # frames of one 3-s patch: librosa.time_to_frames(3, sr=16000, hop_length=256, n_fft=512) + 1
_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default epsilon


def _bn(channels: int, two_d: bool) -> nn.Module:
    return nn.BatchNorm2d(channels, eps=_EPS) if two_d else nn.BatchNorm1d(channels, eps=_EPS)


def _same_time(k: int) -> tuple[int, int, int, int]:
    """F.pad amounts for TF's ``same`` padding of a (k, 1) kernel along time: the odd one after."""
    return 0, 0, (k - 1) // 2, k - 1 - (k - 1) // 2


def _band_max(conv: nn.Module, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``max over bands of bn(relu(conv(x)))``, as ``(B, C, T)``.

    With batch norm in inference mode, ``bn(relu(.))`` is monotone in each channel (increasing
    where its scale is >= 0, decreasing where it is < 0), so the max over bands is taken first,
    of the convolution's output or of its negation, and the element-wise steps run on a map
    59 to 96 times smaller. The result is the same to the bit; the front-end is ~25 % faster.
    """
    z = conv(x)
    if bn.training:
        return bn(F.relu(z)).amax(dim=3)
    return _bn_relu(bn, torch.where(_signs(bn)[None, :, None] > 0, z.amax(dim=3), z.amin(dim=3)))


def _signs(bn: nn.BatchNorm2d) -> torch.Tensor:
    """+1 where the batch norm's scale is >= 0 (the band max is wanted), -1 where it is < 0 (the min)."""
    return torch.where(bn.weight >= 0, 1.0, -1.0)


def _bn_relu(bn: nn.BatchNorm2d, z: torch.Tensor) -> torch.Tensor:
    """``bn(relu(z))`` of the ``(B, C, T)`` band extremes (with the convolution's bias)."""
    return bn(F.relu(z).unsqueeze(3)).squeeze(3)


def _from_signed_max(conv: nn.Conv2d, bn: nn.BatchNorm2d, signs: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """:func:`_band_max` from ``m``, the ``(B, T, C)`` band max of the bias-free convolution with the
    kernels multiplied by ``signs``: the bias is constant over bands, so it is added after the max."""
    bias = cast(torch.Tensor, conv.bias)
    return _bn_relu(bn, signs[:, None] * m.transpose(1, 2) + bias[:, None])


def _gemm_band_max(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """:func:`_band_max` of a timbral convolution as matrix products, for inference: ``x`` is
    ``(B, T + kh - 1, F)``.

    A 1-channel convolution with a 7 x 38 or 7 x 67 kernel is a poor shape for oneDNN (about half
    the matmul rate here); as im2col, ``(steps * bands, kh * kw) @ (kh * kw, C)`` runs near it.
    Chunks of ``rows`` output positions keep the patch matrix and the product in cache, and the
    band max of each chunk is taken at once, so the full map never exists. Kernels are negated
    where the batch norm's scale is, so that one max serves both directions (see :func:`_band_max`).
    """
    kh, kw = conv.kernel_size
    signs = _signs(bn)
    w = (conv.weight.flatten(1) * signs[:, None]).T.contiguous()  # (kh * kw, C)
    steps, bands = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    step = max(1, rows // bands)
    out = x.new_empty(x.shape[0], steps, len(signs))
    for b in range(x.shape[0]):
        for t in range(0, steps, step):
            n = min(step, steps - t)
            cols = x[b, t:t + n + kh - 1].unfold(0, kh, 1).unfold(1, kw, 1)  # (n, bands, kh, kw) view
            torch.amax((cols.reshape(n * bands, kh * kw) @ w).view(n, bands, -1), dim=1, out=out[b, t:t + n])
    return _from_signed_max(conv, bn, signs, out)


def _bmm_band_max(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """:func:`_band_max` of a temporal ``(k, 1)`` convolution for inference: ``x`` is ``(B, T + k - 1, F)``.

    The window of each time step is a ``(k, F)`` slice of ``x`` itself (rows ``F`` apart, windows
    overlapping), so ``(C, k) @ window`` for every step is one batched product on a view, with
    no patch matrix copied (which would cost more than the arithmetic at these small ``k * C``).
    """
    k = conv.kernel_size[0]
    signs = _signs(bn)
    w = conv.weight.flatten(1) * signs[:, None]  # (C, k)
    out = x.new_empty(x.shape[0], x.shape[1] - k + 1, len(signs))
    for b in range(x.shape[0]):
        windows = x[b].unfold(0, k, 1).transpose(1, 2)  # (T, k, F) view
        torch.amax(torch.matmul(w, windows), dim=2, out=out[b])
    return _from_signed_max(conv, bn, signs, out)


class Musicnn(nn.Module):
    """The musically motivated CNN (``MSD_musicnn``, ``MTT_musicnn``).

    Front-end: timbral convolutions (7 x 38 and 7 x 67 mel bands, 204 filters each) and temporal
    ones (128, 64 and 32 frames x 1 band, 51 filters each), each max-pooled over frequency. Mid-end:
    three dense-connected 1-D convolutions of 64 filters over time. Back-end: max and mean over time,
    a 200-unit dense layer (the penultimate embedding), and the 50 tag logits.
    """

    timbral_kernels = ((7, 38), (7, 67))  # int(0.4 * 96), int(0.7 * 96)
    temporal_kernels = (128, 64, 32)

    def __init__(self, n_tags: int = 50, mid: int = 64, dense: int = 200) -> None:
        super().__init__()
        self.bn_in = _bn(1, True)
        self.timbral = nn.ModuleList(nn.Conv2d(1, 204, k) for k in self.timbral_kernels)
        self.timbral_bn = nn.ModuleList(_bn(204, True) for _ in self.timbral_kernels)
        self.temporal = nn.ModuleList(nn.Conv2d(1, 51, (k, 1)) for k in self.temporal_kernels)
        self.temporal_bn = nn.ModuleList(_bn(51, True) for _ in self.temporal_kernels)
        front = 204 * 2 + 51 * 3
        self.mid = nn.ModuleList([nn.Conv1d(front, mid, 7), nn.Conv1d(mid, mid, 7), nn.Conv1d(mid, mid, 7)])
        self.mid_bn = nn.ModuleList(_bn(mid, False) for _ in range(3))
        self.pooled_dim = front + 3 * mid  # 753
        self.bn_pool = _bn(2 * self.pooled_dim, False)
        self.dense = nn.Linear(2 * self.pooled_dim, dense)
        self.bn_dense = _bn(dense, False)
        self.out = nn.Linear(dense, n_tags)
        self.dropout = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(batch, 187, 96)`` patches -> logits, taggram, penultimate, mean_pool, max_pool, cnn1."""
        feats = [self._front(self.bn_in(x.unsqueeze(1)))]  # (B, 561, T)
        h = feats[0]
        for i, (conv, bn) in enumerate(zip(self.mid, self.mid_bn, strict=True)):
            y = bn(F.relu(conv(F.pad(h, (3, 3)))))
            h = y if i == 0 else y + h
            feats.append(h)
        maps = torch.cat(feats, dim=1)  # (B, 753, T)
        max_pool, mean_pool = maps.amax(dim=2), maps.mean(dim=2)
        flat = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF flattens (753, 2) row-major
        pen = self.bn_dense(F.relu(self.dense(self.dropout(self.bn_pool(flat)))))
        logits = self.out(self.dropout(pen))
        return {"logits": logits, "taggram": torch.sigmoid(logits), "penultimate": pen, "mean_pool": mean_pool,
                "max_pool": max_pool, "cnn1": feats[1].mean(dim=2)}

    def _front(self, x: torch.Tensor) -> torch.Tensor:
        """The five band-maxed convolutions of the ``(B, 1, T, F)`` normalised input, concatenated.

        On the CPU, where no gradient is kept and the batch norms use their running statistics, as
        matrix products (:func:`_gemm_band_max`, :func:`_bmm_band_max`; ~2x faster, equal to float32
        rounding); otherwise as the modules' own convolutions, which training needs and which a
        GPU runs better than this loop of small products.
        """
        # ModuleList items are typed as Module: the ignores below say they are the convs and batch norms
        pairs = [*zip(self.timbral, self.timbral_bn, strict=True), *zip(self.temporal, self.temporal_bn, strict=True)]
        pads = [(0, 0, 3, 3)] * len(self.timbral) + [_same_time(k) for k in self.temporal_kernels]
        if self._plain(x):
            return torch.cat([_band_max(conv, bn, F.pad(x, pad))  # type: ignore[arg-type]
                              for (conv, bn), pad in zip(pairs, pads, strict=True)], dim=1)
        plane = x.squeeze(1)  # (B, T, F): the single input channel
        fast = [_gemm_band_max] * len(self.timbral) + [_bmm_band_max] * len(self.temporal)
        return torch.cat([f(conv, bn, F.pad(plane, pad))  # type: ignore[arg-type]
                          for f, (conv, bn), pad in zip(fast, pairs, pads, strict=True)], dim=1)

    def _plain(self, x: torch.Tensor) -> bool:
        """Whether the front end runs as convolutions: on a GPU, or batch statistics or a gradient are wanted."""
        front = [*self.timbral, *self.timbral_bn, *self.temporal, *self.temporal_bn]
        if x.device.type != "cpu" or any(m.training for m in front):
            return True
        return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for m in front
                                                                   for p in m.parameters()))

    @classmethod
    def from_tf(cls, v: dict[str, np.ndarray]) -> Musicnn:
        """A network holding a musicnn checkpoint's weights (TF layer names in creation order)."""
        net = cls(n_tags=v["dense_1/bias"].shape[0], mid=v["conv2d_5/bias"].shape[0],
                  dense=v["dense/bias"].shape[0])
        bns = [net.bn_in, *net.timbral_bn, *net.temporal_bn, *net.mid_bn, net.bn_pool, net.bn_dense]
        convs2d = [*net.timbral, *net.temporal]
        state = {}
        for i, bn in enumerate(bns):
            state.update(_bn_state(net, bn, v, "batch_normalization" + (f"_{i}" if i else "")))
        for i, conv in enumerate(convs2d):
            state.update(_conv2d_state(net, conv, v, "conv2d" + (f"_{i}" if i else "")))
        for i, conv in enumerate(net.mid, start=len(convs2d)):
            kernel = v[f"conv2d_{i}/kernel"]  # (7, C_in, 1, C_out): a 1-D convolution over time
            state[_param(net, conv, "weight")] = kernel[:, :, 0, :].transpose(2, 1, 0)
            state[_param(net, conv, "bias")] = v[f"conv2d_{i}/bias"]
        for name, layer in (("dense", net.dense), ("dense_1", net.out)):
            state.update(_dense_state(net, layer, v, name))
        _load(net, state)
        return net


class VGG(nn.Module):
    """The VGG-like baseline (``MSD_vgg``, ``MTT_vgg``): five 3x3 convolutions of 128 filters with
    max-pooling, then one dense layer from the flattened last pool (``pool5``, 256 values) to the
    50 tag logits."""

    pools = ((4, 1, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2, 2), (4, 4, 4, 4))  # size, then stride

    def __init__(self, n_tags: int = 50, filters: int = 128) -> None:
        super().__init__()
        self.bn_in = _bn(1, True)
        self.convs = nn.ModuleList(nn.Conv2d(1 if i == 0 else filters, filters, 3, padding=1) for i in range(5))
        self.bns = nn.ModuleList(_bn(filters, True) for _ in range(5))
        self.out = nn.Linear(2 * 1 * filters, n_tags)
        self.dropout = nn.Dropout(0.5)
        self.dropout_conv = nn.Dropout(0.25)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(batch, 187, 96)`` patches -> logits, taggram, pool5 (NHWC-flattened), pool1 (mean)."""
        h = self.bn_in(x.unsqueeze(1))
        pools = []
        for i, (conv, bn, (ph, pw, sh, sw)) in enumerate(zip(self.convs, self.bns, self.pools, strict=True)):
            if i:
                h = self.dropout_conv(h)
            h = F.max_pool2d(bn(F.relu(conv(h))), (ph, pw), (sh, sw))
            pools.append(h)
        pool5 = h.permute(0, 2, 3, 1).flatten(1)  # TF flattens NHWC: time, band, channel
        logits = self.out(self.dropout(pool5))
        return {"logits": logits, "taggram": torch.sigmoid(logits), "pool5": pool5,
                "pool1": pools[0].mean(dim=(2, 3))}

    @classmethod
    def from_tf(cls, v: dict[str, np.ndarray]) -> VGG:
        """A network holding a VGG checkpoint's weights (layers ``1CNN`` ... ``5CNN``, ``dense``)."""
        net = cls(n_tags=v["dense/bias"].shape[0], filters=v["1CNN/bias"].shape[0])
        state = {}
        for i, bn in enumerate([net.bn_in, *net.bns]):
            state.update(_bn_state(net, bn, v, "batch_normalization" + (f"_{i}" if i else "")))
        for i, conv in enumerate(net.convs):
            state.update(_conv2d_state(net, conv, v, f"{i + 1}CNN"))
        state.update(_dense_state(net, net.out, v, "dense"))
        _load(net, state)
        return net


def _param(net: nn.Module, module: nn.Module, attr: str) -> str:
    for name, m in net.named_modules():
        if m is module:
            return f"{name}.{attr}"
    raise KeyError(attr)


def _bn_state(net: nn.Module, bn: nn.Module, v: dict[str, np.ndarray], tf: str) -> dict[str, np.ndarray]:
    return {_param(net, bn, "weight"): v[f"{tf}/gamma"], _param(net, bn, "bias"): v[f"{tf}/beta"],
            _param(net, bn, "running_mean"): v[f"{tf}/moving_mean"],
            _param(net, bn, "running_var"): v[f"{tf}/moving_variance"]}


def _conv2d_state(net: nn.Module, conv: nn.Module, v: dict[str, np.ndarray], tf: str) -> dict[str, np.ndarray]:
    # TF kernels are (kh, kw, in, out); torch's are (out, in, kh, kw)
    return {_param(net, conv, "weight"): v[f"{tf}/kernel"].transpose(3, 2, 0, 1),
            _param(net, conv, "bias"): v[f"{tf}/bias"]}


def _dense_state(net: nn.Module, layer: nn.Linear, v: dict[str, np.ndarray], tf: str) -> dict[str, np.ndarray]:
    return {_param(net, layer, "weight"): v[f"{tf}/kernel"].T, _param(net, layer, "bias"): v[f"{tf}/bias"]}


def _load(net: nn.Module, state: dict[str, np.ndarray]) -> None:
    """Load a complete state (every parameter and running statistic); shapes must match exactly."""
    tensors = {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in state.items()}
    own = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    if own != set(tensors):
        raise KeyError(f"checkpoint mapping incomplete: missing {sorted(own - set(tensors))[:3]}, "
                       f"extra {sorted(set(tensors) - own)[:3]}")
    net.load_state_dict(tensors, strict=False)
    net.eval()


@lru_cache(maxsize=4)
def _mel_basis(device: str) -> torch.Tensor:
    import librosa

    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)  # slaney scale and norm
    return torch.from_numpy(basis.astype(np.float32)).to(device)


@lru_cache(maxsize=4)
def _window(device: str) -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True).to(device)


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """``(n, samples)`` 16 kHz float32 audio -> ``(n, frames, 96)`` musicnn input, in float32.

    What the wheel's ``batch_data`` computes with librosa (centred 512-point STFT with zero padding,
    power 2, slaney mel, ``log10(10000 * S + 1)``), except that its cast of the mel power to
    float16 before the log is left out: that cast overflows to ``inf`` on loud audio.
    """
    dev = str(audio.device)
    spec = torch.stft(audio.float(), N_FFT, HOP, window=_window(dev), center=True, pad_mode="constant",
                      return_complex=True)
    power = spec.real.square() + spec.imag.square()  # (n, 257, frames)
    mel = torch.matmul(_mel_basis(dev), power)
    return torch.log10(10000.0 * mel + 1.0).transpose(1, 2)


def patches(mel: torch.Tensor) -> torch.Tensor:
    """``(n, frames, 96)`` -> ``(n, k, 187, 96)``: each clip's consecutive, non-overlapping 3-s
    patches (``k = frames // 187``; the wheel's default ``input_overlap=False``)."""
    k = mel.shape[1] // N_FRAMES
    if k < 1:
        raise ValueError(f"a clip of {mel.shape[1]} frames is shorter than one {N_FRAMES}-frame patch (3 s)")
    return mel[:, :k * N_FRAMES].reshape(mel.shape[0], k, N_FRAMES, mel.shape[2])
