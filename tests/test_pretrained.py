"""The torch port of musicnn and its VGG baseline: parity with the original TF networks, the
checkpoint reader, the shipped weights, and the pretrained feature kinds through the pipeline.

``fixtures/musicnn/reference.npz`` holds the original networks' outputs on 7 input patches (4 real
recordings, a loud chirp, a quiet tone, silence), made once with TensorFlow by
``fixtures/musicnn/make_reference.py``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import write_tone

from genre_ray.features import FeatureSettings, compute_features
from genre_ray.features.pretrained import NETWORKS, audio_patches, embed, embedding_dim, load_network
from genre_ray.features.pretrained.musicnn import VGG, Musicnn, log_mel, patches
from genre_ray.features.pretrained.tfbundle import BundleError, read_bundle, read_index

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn" / "reference.npz"
# Our names for the fixture's outputs
_OURS = {"cnn1_time_mean": "cnn1", "pool5_flat": "pool5", "pool1_mean": "pool1"}
TOL = 1e-4


def _reference() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as ref:
        return {k: ref[k] for k in ref.files}


def _worst(net: torch.nn.Module, kind: str, ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: the largest difference to the original, relative to max(1, the output's scale)."""
    with torch.inference_mode():
        out = net(torch.from_numpy(ref["inputs"]))
    prefix = NETWORKS[kind].checkpoint + "/"
    worst = {}
    for key in (k for k in ref if k.startswith(prefix)):
        name = key[len(prefix):]
        want = ref[key]
        worst[name] = float(np.abs(out[_OURS.get(name, name)].numpy() - want).max() / max(1.0, np.abs(want).max()))
    return worst


@pytest.mark.parametrize("kind", list(NETWORKS))
def test_port_matches_the_original_tf_network(kind: str) -> None:
    ref = _reference()
    worst = _worst(load_network(kind), kind, ref)
    assert {"taggram", "logits"} <= set(worst)
    assert ("penultimate" in worst) == (NETWORKS[kind].arch == "musicnn")
    # taggram, logits and embeddings within 1e-4 (relative to the scale where it exceeds 1: the
    # back-end's max-pool reaches ~95, where float32 summation order alone moves it by ~2e-4)
    assert max(worst.values()) < TOL, worst
    assert list(ref["names"])[:4] == ["blues.00000@10s", "classical.00001@10s", "metal.00002@10s", "techno.mp3@10s"]


def test_a_mis_mapped_layer_breaks_parity() -> None:
    """The parity check has teeth: each plausible porting mistake moves the outputs far past 1e-4."""
    ref = _reference()
    state = load_network("musicnn_msd").state_dict()

    def broken(change) -> float:
        net = Musicnn()
        s = {k: v.clone() for k, v in state.items()}
        change(s)
        net.load_state_dict(s)
        return max(_worst(net.eval(), "musicnn_msd", ref).values())

    def transposed(s):  # a square 1-D kernel with in and out channels swapped
        s["mid.1.weight"] = s["mid.1.weight"].transpose(0, 1).contiguous()

    def swapped_bn(s):  # two batch norms of the same width in the wrong order
        for stat in ("weight", "bias", "running_mean", "running_var"):
            a, b = f"temporal_bn.0.{stat}", f"temporal_bn.1.{stat}"
            s[a], s[b] = s[b].clone(), s[a].clone()

    def flipped_time(s):  # a kernel applied reversed in time (correlation vs convolution)
        s["timbral.0.weight"] = s["timbral.0.weight"].flip(2)

    for change in (transposed, swapped_bn, flipped_time):
        assert broken(change) > 100 * TOL, change.__name__


def _random_musicnn(**sizes: int) -> Musicnn:
    """A Musicnn of random weights and batch-norm statistics, some scales negative (the band min)."""
    torch.manual_seed(0)
    net = Musicnn(**sizes)
    for bn in net.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.weight.data.normal_()
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("net", ["musicnn_msd", "musicnn_mtt", {"n_tags": 10, "mid": 32, "dense": 100}],
                         ids=["msd", "mtt", "small"])
@pytest.mark.parametrize("batch", [1, 5])
def test_fast_front_end_equals_the_convolutions(net: str | dict[str, int], batch: int,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Inference runs the front end as matrix products; training and gradients use the convolutions."""
    from genre_ray.features.pretrained import musicnn

    model = copy.deepcopy(load_network(net)) if isinstance(net, str) else _random_musicnn(**net)
    x = 3 * torch.randn(batch, 187, 96, generator=torch.Generator().manual_seed(batch))
    calls, gemm = [], musicnn._gemm_band_max
    monkeypatch.setattr(musicnn, "_gemm_band_max", lambda *a: calls.append("gemm") or gemm(*a))
    with torch.inference_mode():
        fast = model(x)
    assert calls == ["gemm", "gemm"]
    plain = model(x.clone().requires_grad_())  # a gradient is wanted: the modules' convolutions
    assert calls == ["gemm", "gemm"]
    for name, want in plain.items():
        want = want.detach()
        assert (fast[name] - want).abs().max() < 1e-5 * max(1.0, float(want.abs().max())), name
    plain["penultimate"].sum().backward()
    assert model.timbral[0].weight.grad is not None and model.timbral[0].weight.grad.abs().sum() > 0
    model.timbral_bn.train()
    with torch.no_grad():
        model(x)  # batch statistics: the convolutions too
    assert calls == ["gemm", "gemm"]


def test_vgg_flatten_order_matters() -> None:
    """VGG's pool5 must be flattened as TF's NHWC; NCHW order fails parity."""
    ref = _reference()
    net = load_network("vgg_msd")

    class NCHW(VGG):
        def forward(self, x):
            out = super().forward(x)
            h = out["pool5"].reshape(len(x), 2, 1, 128).permute(0, 3, 1, 2).flatten(1)
            logits = self.out(h)
            return {**out, "logits": logits, "taggram": torch.sigmoid(logits)}

    wrong = NCHW()
    wrong.load_state_dict(net.state_dict())
    assert _worst(wrong.eval(), "vgg_msd", ref)["logits"] > 100 * TOL


def test_log_mel_matches_librosa_in_float32() -> None:
    import librosa

    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(48000)).astype(np.float32)
    want = librosa.feature.melspectrogram(y=audio, sr=16000, hop_length=256, n_fft=512, n_mels=96).T
    want = np.log10(10000 * want.astype(np.float32) + 1)
    got = log_mel(torch.from_numpy(audio)[None])[0].numpy()
    assert got.shape == want.shape == (188, 96)
    assert np.abs(got - want).max() < 1e-4


def test_loud_audio_gives_finite_features() -> None:
    """The wheel casts the mel power to float16 before the log, which overflows on loud audio."""
    t = np.arange(48000) / 16000
    square = np.sign(np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # full-scale square wave
    mel = log_mel(torch.from_numpy(square)[None])
    assert torch.isfinite(mel).all() and float(mel.max()) > np.log10(65504)  # past float16's range
    for kind in NETWORKS:
        assert torch.isfinite(embed(torch.from_numpy(square)[None], kind)).all()


def test_embedding_layers_and_pools() -> None:
    audio = torch.from_numpy((0.1 * np.random.default_rng(1).standard_normal((2, 2 * 47872))).astype(np.float32))
    full = embed(audio, "musicnn_msd", "all", "mean_std")
    assert full.shape == (2, embedding_dim("musicnn_msd", "all", "mean_std")) == (2, 2 * (50 + 1506 + 200))
    tag = embed(audio, "musicnn_msd", "taggram", "mean")
    assert torch.allclose(full[:, :50], tag, atol=1e-6)  # "all" starts with the taggram means
    assert (full[:, 1756:] > 0).any()  # two different patches: a non-zero spread
    assert embed(audio, "vgg_mtt", "pooled").shape == (2, 256)


def test_the_padding_of_a_short_song_is_not_pooled_into_its_embedding() -> None:
    """A 4-s song in a 30-s clip is one patch of music and nine of zero padding: its embedding is the
    one patch's, as if the song were embedded alone; a 10-s song's is its 3 patches' mean and spread."""
    rng = np.random.default_rng(4)
    song4, song10 = (torch.from_numpy((0.1 * rng.standard_normal(s * 16000)).astype(np.float32)) for s in (4, 10))
    clips = torch.zeros(3, 30 * 16000)
    clips[0, :len(song4)], clips[1, :len(song10)] = song4, song10
    clips[2] = torch.from_numpy((0.1 * rng.standard_normal(30 * 16000)).astype(np.float32))
    assert audio_patches(clips, 10).tolist() == [1, 3, 10]
    assert audio_patches(torch.zeros(1, 30 * 16000), 10).tolist() == [1]  # silence: one patch, never none
    both = embed(clips, "musicnn_msd", "all", "mean_std")
    alone4 = embed(song4[None], "musicnn_msd", "all", "mean_std")
    alone10 = embed(song10[None], "musicnn_msd", "all", "mean_std")
    assert torch.allclose(both[0], alone4[0], atol=TOL) and torch.allclose(both[1], alone10[0], atol=TOL)
    assert float(both[0, 1756:].abs().max()) < 1e-6 < float(both[1, 1756:].abs().max())  # 1 patch: no spread
    # a clip of music all through pools all ten patches
    with torch.inference_mode():
        ten = load_network("vgg_msd")(patches(log_mel(clips[2:]))[0])["pool5"]
    assert torch.allclose(embed(clips[2:], "vgg_msd", "pooled", "mean_std")[0],
                          torch.cat([ten.mean(0), ten.std(0, unbiased=False)]), atol=1e-5)


def test_feature_settings_refuse_a_layer_the_network_lacks() -> None:
    with pytest.raises(ValueError, match="embedding_layer: vgg_msd has no penultimate layer"):
        FeatureSettings(kinds=("vgg_msd",), embedding_layer="penultimate")
    with pytest.raises(ValueError, match="clip_seconds"):
        FeatureSettings(kinds=("musicnn_msd",), clip_seconds=2.0)


def test_compute_features_resamples_to_16k() -> None:
    """At 22050 Hz the clip is resampled to the networks' 16 kHz; a 16 kHz clip goes in as it is."""
    s22 = FeatureSettings(kinds=("musicnn_mtt",), sample_rate=22050)
    s16 = FeatureSettings(kinds=("musicnn_mtt",), sample_rate=16000)
    t22, t16 = np.arange(s22.clip_samples) / 22050, np.arange(s16.clip_samples) / 16000
    a = compute_features((0.5 * np.sin(2 * np.pi * 440 * t22)).astype(np.float32)[None], s22)["musicnn_mtt"]
    b = compute_features((0.5 * np.sin(2 * np.pi * 440 * t16)).astype(np.float32)[None], s16)["musicnn_mtt"]
    assert a.shape == b.shape == (1, 1756)
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()  # the same tone, up to resampling


def test_bundle_reader_refuses_a_damaged_index(tmp_path: Path) -> None:
    (tmp_path / "x.index").write_bytes(b"\0" * 100)
    with pytest.raises(BundleError, match=r"x\.index: not a TensorFlow checkpoint index"):
        read_index(tmp_path / "x")
    with pytest.raises(BundleError, match="cannot read the checkpoint index"):
        read_bundle(tmp_path / "missing")


def _wheel() -> Path | None:
    path = os.environ.get("GENRE_RAY_MUSICNN_WHEEL")
    return Path(path) if path and Path(path).exists() else None


@pytest.mark.skipif(_wheel() is None, reason="set GENRE_RAY_MUSICNN_WHEEL to the musicnn-0.1.0 wheel "
                    "(pip download --no-deps musicnn==0.1.0); .ci/run does")
def test_shipped_weights_equal_a_fresh_conversion_of_the_wheel(tmp_path: Path) -> None:
    from genre_ray.features.pretrained import convert

    assert convert.check(_wheel()) == []
    # and the reader itself: every variable of a checkpoint, Adam's slots included
    import zipfile

    with zipfile.ZipFile(_wheel()) as whl:
        whl.extractall(tmp_path)
    v = read_bundle(f"{tmp_path}/musicnn/MSD_musicnn/")
    assert v["conv2d/kernel"].shape == (7, 38, 1, 204) and v["dense_1/kernel"].shape == (200, 50)
    assert len(v) == 150 and all(a.dtype == np.float32 for a in v.values())
    # truncate the data file: a clear error naming it
    data = tmp_path / "musicnn" / "MSD_musicnn" / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(BundleError, match="bytes at"):
        read_bundle(f"{tmp_path}/musicnn/MSD_musicnn/")


def test_pretrained_kind_through_the_pipeline(tmp_path: Path, ray_session: object) -> None:
    """Short, silent and NaN files get the same handling as for every kind: a reason, nothing else lost."""
    from genre_ray.data.collection import folder_manifest
    from genre_ray.features import pipeline

    root = tmp_path / "songs"
    write_tone(root / "a" / "tone.wav", seconds=7.0)
    write_tone(root / "a" / "short.wav", seconds=1.2, freq=330.0)  # shorter than one 3-s patch: zero-padded
    write_tone(root / "b" / "other.wav", seconds=4.0, freq=880.0)
    sf.write(root / "b" / "silence.wav", np.zeros(22050 * 4, np.float32), 22050)
    sf.write(root / "b" / "nan.wav", np.full(22050 * 4, np.nan, np.float32), 22050, subtype="FLOAT")
    manifest, _ = folder_manifest(root)
    settings = FeatureSettings(kinds=("musicnn_msd", "logmel"), clip_seconds=3.0, clip_overlap=0.0,
                               embedding_layer="penultimate")
    assert pipeline.pretrained_patches(manifest, settings) == 2 + 1 + 1 + 1 + 1  # 7 s -> 2 patches
    table = pipeline.featurize(manifest, settings, tmp_path / "cache", batch_files=2, in_process=False)
    reasons = {Path(p).name: r for p, r in zip(table.skipped["path"], table.skipped["reason"], strict=True)}
    assert reasons == {"silence.wav": "silent", "nan.wav": "nan"}
    emb = table.features["musicnn_msd"]
    assert emb.shape == (len(table.clips), 200) and np.isfinite(emb).all()
    assert len(table.clips) == 2 + 1 + 1  # 7 s -> 2 clips, 1.2 s and 4 s -> 1 each
    again = pipeline.featurize(manifest, settings, tmp_path / "cache", batch_files=2)
    assert again.cache_hit and np.array_equal(again.features["musicnn_msd"], emb)
    # 6 patches are less work than starting Ray's actors: by default they are computed here, the same
    here = pipeline.featurize(manifest, settings, tmp_path / "here", batch_files=2)
    assert here.info["in_process"] and not table.info["in_process"]
    np.testing.assert_allclose(here.features["musicnn_msd"], emb, rtol=0, atol=1e-5)
    assert here.skipped["reason"].tolist() == table.skipped["reason"].tolist()


@pytest.mark.parametrize("finetune", ["frozen", "last", "all"])
def test_pretrained_model_trains_what_finetune_says(finetune: str) -> None:
    from genre_ray.models import build_model

    torch.manual_seed(0)
    model = build_model("pretrained", n_classes=3, input_shape=(96, 187), backbone="musicnn_mtt",
                        finetune=finetune)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad and n.startswith("backbone")}
    assert trainable == {"frozen": set(), "last": {"bn_pool", "dense", "bn_dense"},
                         "all": {n.split(".")[1] for n, _ in model.named_parameters()
                                 if n.startswith("backbone")}}[finetune]
    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.from_numpy(_reference()["inputs"][:3]).transpose(1, 2)
    model.train()
    assert not model.backbone.training  # pretrained batch-norm statistics are kept
    torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()
    opt.step()
    moved = {n.split(".")[0] for n, p in model.backbone.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"frozen": set(), "last": {"bn_pool", "dense", "bn_dense"}, "all": moved | {"timbral"}}[finetune]
    # the backbone starts from the shipped weights: its embedding is the port's penultimate layer
    fresh = build_model("pretrained", n_classes=3, input_shape=(96, 187), backbone="musicnn_mtt").eval()
    with torch.inference_mode():
        pen = fresh.embed(x)
    assert np.abs(pen.numpy() - _reference()["MTT_musicnn/penultimate"][:3]).max() < TOL


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_embeddings_on_the_gpu_match_the_cpu() -> None:
    audio = torch.from_numpy((0.1 * np.random.default_rng(2).standard_normal((4, 48000))).astype(np.float32))
    cpu = embed(audio, "musicnn_msd", "all")
    gpu = embed(audio.cuda(), "musicnn_msd", "all")
    assert gpu.device.type == "cuda"
    # TF32 convolutions on the GPU round differently from the CPU's float32
    assert (gpu.cpu() - cpu).abs().max() < 1e-2 * max(1.0, float(cpu.abs().max()))
