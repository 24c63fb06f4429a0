"""Tests for satgan.model: DCGAN shapes, layer rules and init for every size and channel count."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from satgan.errors import ModelFileError
from satgan.model import (
    MAX_CLASSES,
    MAX_WIDTH,
    ConditionalDiscriminator,
    ConditionalGenerator,
    HighPass,
    LayerNoise,
    MinibatchStdDev,
    ModelConfig,
    PixelNoise,
    build_discriminator,
    build_generator,
    discriminator_features,
    features_and_outputs,
    icnr_,
    sample_latent,
    sampling_rng,
)

SIZES_CHANNELS = list(itertools.product((32, 64, 128), (1, 3)))


@pytest.mark.parametrize("size,channels", SIZES_CHANNELS)
def test_generator_maps_latent_to_image_in_range(size, channels):
    """G maps (B, nz, 1, 1) to (B, C, S, S) within [-1, 1]."""
    cfg = ModelConfig(image_size=size, channels=channels, nz=16, ngf=4, ndf=4)
    g = build_generator(cfg)
    out = g(torch.randn(2, 16, 1, 1))
    assert out.shape == (2, channels, size, size)
    assert out.abs().max() <= 1.0


@pytest.mark.parametrize("size,channels", SIZES_CHANNELS)
def test_discriminator_returns_one_logit_per_image(size, channels):
    """D maps (B, C, S, S) to logits of shape (B,)."""
    cfg = ModelConfig(image_size=size, channels=channels, nz=16, ngf=4, ndf=4)
    assert build_discriminator(cfg)(torch.randn(3, channels, size, size)).shape == (3,)


@pytest.mark.parametrize("size", (32, 64, 128))
def test_g_and_d_are_symmetric_in_depth(size):
    """G has as many resolution-changing convs as D (no pooling, no linear layers)."""
    cfg = ModelConfig(image_size=size, channels=3, nz=8, ngf=4, ndf=4)
    g, d = build_generator(cfg), build_discriminator(cfg)
    n_g = sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules())
    n_d = sum(isinstance(m, nn.Conv2d) for m in d.modules())
    assert n_g == n_d == cfg.n_blocks + 1
    for m in list(g.modules()) + list(d.modules()):
        assert not isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d))


def test_batchnorm_skips_g_output_and_d_input():
    """G's output conv feeds Tanh directly and D's input conv feeds LeakyReLU directly (DCGAN)."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert isinstance(g[-1], nn.Tanh) and isinstance(g[-2], nn.ConvTranspose2d)
    assert isinstance(d[0], nn.Conv2d) and isinstance(d[1], nn.LeakyReLU)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g.modules()) == cfg.n_blocks
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d.modules()) == cfg.n_blocks - 1


def test_normal_init_has_dcgan_statistics():
    """Conv weights are N(0, 0.02), biases zero, BN scales near 1."""
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=64, channels=3, nz=100, ngf=64, ndf=64)
    g = build_generator(cfg)
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert all(m.bias.abs().sum() == 0 for m in g.modules() if isinstance(m, nn.ConvTranspose2d) and m.bias is not None)
    bn = torch.cat([m.weight for m in g.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(bn.mean().item() - 1.0) < 0.01


def test_xavier_init_differs_from_normal():
    """init='xavier' gives layer-dependent weight scales instead of a flat 0.02."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=8, ndf=8, init="xavier")
    d = build_discriminator(cfg)
    stds = [m.weight.std().item() for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert max(abs(s - 0.02) for s in stds) > 0.01


@pytest.mark.parametrize("upsample", ("deconv_conv", "resize_conv", "pixel_shuffle"))
def test_checkerboard_variants_keep_shapes(upsample):
    """Every checkerboard mitigation keeps G's output shape and adds stride-1 convs."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, upsample=upsample)
    g = build_generator(cfg)
    assert g(torch.randn(2, 8, 1, 1)).shape == (2, 3, 32, 32)
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (1, 1) for m in g.modules()) == cfg.n_blocks


def test_resize_conv_has_no_transposed_upsampling():
    """resize_conv upsamples with nearest resize, keeping a transposed conv only for 1x1 -> 4x4."""
    g = build_generator(ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, upsample="resize_conv"))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 1
    assert any(isinstance(m, nn.Upsample) for m in g.modules())


def test_pixel_shuffle_upsamples_with_sub_pixel_convs():
    """pixel_shuffle: each doubling is a 3x3 conv to 4x the channels and PixelShuffle(2), no transposed conv after 4x4."""
    g = build_generator(ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, upsample="pixel_shuffle"))
    shuffles = [m for m in g.modules() if isinstance(m, nn.PixelShuffle)]
    assert len(shuffles) == 3 and sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == 1
    assert g[-3].out_channels == 3 * 4 and isinstance(g[-2], nn.PixelShuffle)


def test_pixel_shuffle_starts_free_of_checkerboard():
    """With ICNR init every 2x2 block a sub-pixel layer writes is constant: G's output is nearest-upsampled at init.

    The last layer is conv + PixelShuffle + tanh, so each 2x2 output block holds one value; a
    plain transposed conv at init varies inside the block (the checkerboard's source).
    """
    torch.manual_seed(0)
    for upsample, constant in (("pixel_shuffle", True), ("deconv", False)):
        g = build_generator(ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, upsample=upsample)).eval()
        with torch.no_grad():
            out = g(torch.randn(2, 8, 1, 1))
        blocks = out.unfold(2, 2, 2).unfold(3, 2, 2).flatten(-2)  # (2, 3, 16, 16, 4): each 2x2 block
        assert torch.equal(blocks.amax(-1), blocks.amin(-1)) == constant


def test_icnr_repeats_one_kernel_per_sub_pixel():
    """icnr_ fills (cout * 4, cin, k, k) with cout kernels, each repeated for the 4 sub-pixels in PixelShuffle's order."""
    w = torch.empty(6 * 4, 5, 3, 3)
    torch.manual_seed(0)
    icnr_(w, 2, "normal")
    groups = w.view(6, 4, 5, 3, 3)
    assert torch.equal(groups, groups[:, :1].expand_as(groups)) and 0.01 < w.std().item() < 0.03
    with pytest.raises(ValueError, match="multiple of scale"):
        icnr_(torch.empty(6, 5, 3, 3), 2, "normal")


def test_spectral_norm_bounds_every_d_conv_and_drops_its_norm_layers():
    """spectral_norm: each conv's effective weight has largest singular value ~1 after power iterations, and D has no BN."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=8, spectral_norm=True)
    d = build_discriminator(cfg)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) for m in d.modules())
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == cfg.n_blocks + 1
    x = torch.randn(4, 3, 32, 32)
    for _ in range(30):  # one power iteration per training-mode forward
        d(x)
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.02)
    plain = build_discriminator(ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=8))
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


def test_spectral_norm_d_keeps_feature_matching_and_stddev_layers():
    """With spectral_norm and minibatch_stddev, D still returns one logit per image and its features."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, spectral_norm=True, minibatch_stddev=True)
    d = build_discriminator(cfg)
    x = torch.randn(3, 3, 32, 32)
    assert d(x).shape == (3,) and discriminator_features(d, x).shape == (3, 16 * 4 * 4)


def test_instance_norm_replaces_batch_norm():
    """norm='instance' leaves no BatchNorm in either network."""
    cfg = ModelConfig(image_size=32, channels=1, nz=8, ngf=4, ndf=4, norm="instance")
    for net in (build_generator(cfg), build_discriminator(cfg)):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert any(isinstance(m, nn.InstanceNorm2d) for m in net.modules())


def test_g_dropout_adds_dropout_layers():
    """g_dropout > 0 puts Dropout after every hidden block of G."""
    g = build_generator(ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, g_dropout=0.5))
    assert sum(isinstance(m, nn.Dropout) for m in g.modules()) == 3


def test_leaky_relu_option_in_generator():
    """g_activation='leaky_relu' replaces every ReLU in G."""
    g = build_generator(ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, g_activation="leaky_relu"))
    assert not any(type(m) is nn.ReLU for m in g.modules())


def test_minibatch_stddev_sees_batch_variety():
    """The stddev channel is 0 for a batch of identical images and positive otherwise."""
    layer = MinibatchStdDev()
    same = torch.ones(4, 2, 3, 3)
    assert layer(same)[:, -1].abs().max() < 1e-3
    assert layer(torch.randn(4, 2, 3, 3))[:, -1].min() > 0.1


def test_minibatch_stddev_discriminator_shapes():
    """D with the stddev layer still returns (B,) logits and features exclude the head."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, minibatch_stddev=True)
    d = build_discriminator(cfg)
    x = torch.randn(3, 3, 32, 32)
    assert d(x).shape == (3,)
    assert discriminator_features(d, x).shape == (3, 4 * 4 * 4 * 4)


def test_config_rejects_bad_size():
    """A size that is not 32/64/128 is refused."""
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(image_size=48)


def test_config_round_trips_through_dict():
    """ModelConfig.from_dict(to_dict()) is the identity, latent distribution included."""
    cfg = ModelConfig(image_size=128, channels=1, nz=7, ngf=3, ndf=5, upsample="resize_conv", latent="uniform")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(("patch", "fragment"), [
    ({"nz": "abc"}, "m.json: architecture.nz: expected an integer, got str 'abc'"),
    ({"ngf": 10_000_000}, f"m.json: architecture.ngf: expected 1 <= ngf <= {MAX_WIDTH}, got 10000000"),
    ({"latent": "cauchy"}, "m.json: architecture.latent: expected one of 'gaussian', 'uniform'"),
    ({"g_dropout": float("nan")}, "m.json: architecture.g_dropout: expected a finite number"),
    ({"depth": 3}, "m.json: architecture.depth: unknown key"),
])
def test_from_dict_validates_like_params(patch, fragment):
    """A foreign architecture is refused in one ModelFileError line naming the file and the key."""
    with pytest.raises(ModelFileError) as info:
        ModelConfig.from_dict({**ModelConfig().to_dict(), **patch}, source="m.json")
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_from_dict_refuses_a_card_without_the_latent():
    """An architecture written before `latent` existed is refused: its latent distribution is unknown."""
    old = ModelConfig().to_dict()
    del old["latent"]
    with pytest.raises(ModelFileError, match="architecture.latent: missing key"):
        ModelConfig.from_dict(old)


def test_gaussian_latent_is_standard_normal():
    """latent='gaussian' draws N(0, 1): mean ~0, std ~1, values beyond +-1."""
    z = sample_latent(ModelConfig(nz=8), 4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 8, 1, 1) and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05 and z.abs().max() > 2


def test_uniform_latent_is_bounded():
    """latent='uniform' draws U(-1, 1)."""
    z = sample_latent(ModelConfig(nz=8, latent="uniform"), 4000, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1 and abs(z.std() - 1 / 3**0.5) < 0.02


def test_sample_latent_is_seeded_by_its_generator():
    """Same generator seed, same latents; without a generator it draws from torch's default one."""
    cfg = ModelConfig(nz=4)
    a = sample_latent(cfg, 3, torch.Generator().manual_seed(5))
    assert torch.equal(a, sample_latent(cfg, 3, torch.Generator().manual_seed(5)))
    torch.manual_seed(5)
    assert torch.equal(sample_latent(cfg, 3), a)


def test_dropout_at_sampling_stays_on_in_eval_mode_with_seeded_masks():
    """g_dropout_at_sampling: G in eval mode still drops units, the same ones for the same sampling seed."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, g_dropout=0.5, g_dropout_at_sampling=True)
    torch.manual_seed(0)
    g, z = build_generator(cfg).eval(), torch.randn(3, 8, 1, 1)
    with torch.no_grad():
        with sampling_rng(cfg, 1):
            a = g(z)
        with sampling_rng(cfg, 1):
            b = g(z)
        with sampling_rng(cfg, 2):
            c = g(z)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    plain = dataclasses.replace(cfg, g_dropout_at_sampling=False)
    torch.manual_seed(0)
    h = build_generator(plain).eval()
    assert h.state_dict().keys() == g.state_dict().keys()
    with torch.no_grad():
        assert torch.equal(h(z), h(z))  # training-only dropout: off in eval mode


def test_dropout_at_sampling_needs_dropout():
    """g_dropout_at_sampling without g_dropout is refused naming the key."""
    with pytest.raises(ValueError, match=r"g_dropout_at_sampling: expected false when g_dropout is 0"):
        ModelConfig(image_size=32, g_dropout=0.0, g_dropout_at_sampling=True)


@pytest.mark.parametrize("size", (32, 64, 128))
@pytest.mark.parametrize(("spectral_norm", "minibatch_stddev"), [(False, False), (True, False), (False, True), (True, True)])
def test_avg_pool_d_keeps_depth_and_shapes(size, spectral_norm, minibatch_stddev):
    """downsample=avg_pool: D has as many blocks, the same features and one logit per image, with SN and stddev too."""
    kw = dict(image_size=size, channels=3, nz=8, ngf=4, ndf=4, spectral_norm=spectral_norm, minibatch_stddev=minibatch_stddev)
    strided, pooled = (build_discriminator(ModelConfig(**kw, downsample=ds)) for ds in ("strided", "avg_pool"))
    x = torch.randn(3, 3, size, size)
    assert pooled(x).shape == (3,)
    assert discriminator_features(pooled, x).shape == discriminator_features(strided, x).shape
    assert sum(isinstance(m, nn.Conv2d) for m in pooled.modules()) == sum(isinstance(m, nn.Conv2d) for m in strided.modules())


def test_avg_pool_d_downsamples_only_by_pooling():
    """downsample=avg_pool: every hidden conv is 3x3 stride 1 and followed by AvgPool2d(2); strided D has no pooling."""
    cfg = ModelConfig(image_size=64, channels=3, nz=8, ngf=4, ndf=4, downsample="avg_pool", spectral_norm=True)
    d = list(build_discriminator(cfg))
    convs = [i for i, m in enumerate(d) if isinstance(m, nn.Conv2d)][:-1]  # the last conv is the 4x4 logit head
    assert len(convs) == cfg.n_blocks
    for i in convs:
        assert d[i].stride == (1, 1) and d[i].kernel_size == (3, 3)
        assert isinstance(d[i + 1], nn.AvgPool2d) and d[i + 1].kernel_size == 2
    plain = build_discriminator(dataclasses.replace(cfg, downsample="strided"))
    assert not any(isinstance(m, nn.AvgPool2d) for m in plain.modules())


def test_g_layer_noise_follows_every_hidden_block():
    """g_layer_noise puts one LayerNoise after each hidden block of G (none after its output) and keeps its shapes."""
    cfg = ModelConfig(image_size=64, channels=3, nz=8, ngf=4, ndf=4, g_layer_noise=True)
    g = build_generator(cfg)
    layers = list(g)
    noise = [i for i, m in enumerate(layers) if isinstance(m, LayerNoise)]
    assert len(noise) == cfg.n_blocks and all(isinstance(layers[i - 1], nn.ReLU) for i in noise)
    assert g(torch.randn(2, 8, 1, 1)).shape == (2, 3, 64, 64)


def test_g_layer_noise_std_is_not_saved():
    """LayerNoise's std is a non-persistent buffer: G's state dict has the tensors of a G without noise layers."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    noisy = build_generator(dataclasses.replace(cfg, g_layer_noise=True))
    plain = build_generator(cfg)
    assert [tuple(t.shape) for t in noisy.state_dict().values()] == [tuple(t.shape) for t in plain.state_dict().values()]
    assert all(not k.endswith("std") for k in noisy.state_dict())


def test_g_layer_noise_is_off_in_eval_mode():
    """In eval mode a G with noise layers (std > 0) is deterministic and equals the same weights without them."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    noisy = build_generator(dataclasses.replace(cfg, g_layer_noise=True))
    plain = build_generator(cfg)
    for a, b in zip(plain.parameters(), noisy.parameters()):
        a.data.copy_(b.data)
    for m in noisy.modules():
        if isinstance(m, LayerNoise):
            m.std.fill_(0.5)
    noisy.eval(), plain.eval()
    z = torch.randn(3, 8, 1, 1)
    assert torch.equal(noisy(z), noisy(z)) and torch.equal(noisy(z), plain(z))


@given(std=st.floats(0.05, 2.0), seed=st.integers(0, 2**31 - 1))
@settings(max_examples=20, deadline=None)
def test_layer_noise_adds_noise_of_its_std_in_training(std, seed):
    """In training mode LayerNoise adds zero-mean noise with its buffer's std; while inactive it is the identity."""
    torch.manual_seed(seed)
    layer = LayerNoise()
    layer.std.fill_(std)
    x = torch.zeros(64, 4, 16, 16)
    out = layer(x)
    assert out.shape == x.shape and abs(out.std().item() - std) < 0.03 * std and abs(out.mean().item()) < 0.03 * std
    layer.active = False
    assert torch.equal(layer(x), x)


def test_config_rejects_unknown_downsample():
    """downsample must be strided or avg_pool, named in the error."""
    with pytest.raises(ValueError, match="downsample"):
        ModelConfig(downsample="max_pool")  # type: ignore[arg-type]


# ----------------------------------------------------------------- class-conditional nets


def _cond(conditional: str, **kw) -> ModelConfig:
    return ModelConfig(**{"image_size": 32, "channels": 3, "nz": 8, "ngf": 4, "ndf": 4, "conditional": conditional,
                          "n_classes": 3, **kw})


@pytest.mark.parametrize("conditional", ["projection", "acgan"])
@pytest.mark.parametrize("size,channels", SIZES_CHANNELS)
def test_conditional_generator_concatenates_a_class_embedding_to_z(conditional, size, channels):
    """G(z, y) = net([z, embed(y)]): an nn.Embedding as wide as z; the class changes the image for the same z."""
    cfg = _cond(conditional, image_size=size, channels=channels)
    torch.manual_seed(0)
    g = build_generator(cfg).eval()
    assert isinstance(g, ConditionalGenerator) and isinstance(g.embed, nn.Embedding)
    assert g.embed.weight.shape == (3, 8) and g.net[0].in_channels == 16
    assert g.embed.weight.abs().max() < 0.2  # initialised like G's convs, N(0, 0.02): z is not drowned at the start
    z = torch.randn(2, 8, 1, 1)
    with torch.no_grad():
        a, b = g(z, torch.tensor([0, 0])), g(z, torch.tensor([1, 1]))
        manual = g.net(torch.cat([z, g.embed(torch.tensor([0, 0]))[:, :, None, None]], dim=1))
    assert a.shape == (2, channels, size, size) and a.abs().max() <= 1
    assert torch.equal(a, manual) and not torch.allclose(a, b)


def test_projection_d_adds_the_inner_product_of_class_embedding_and_features():
    """Miyato & Koyama 2018: D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, phi the last hidden activations."""
    torch.manual_seed(0)
    d = build_discriminator(_cond("projection")).eval()
    assert isinstance(d, ConditionalDiscriminator) and d.embed.weight.shape == (3, 16 * 4 * 4)
    x, y = torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        phi = discriminator_features(d, x)
        expected = d.net(x) + (d.embed(y) * phi).sum(1)
        out = d(x, y)
        assert out.shape == (5,) and torch.allclose(out, expected, atol=1e-6)
        assert not torch.allclose(out, d(x, (y + 1) % 3))  # the label matters
        hidden, logits, cls = features_and_outputs(d, x, y)
    assert torch.allclose(logits, out) and cls is None and torch.allclose(hidden.flatten(1), phi)
    assert 0.005 < d.embed.weight.std().item() < 0.04  # initialised like the logit conv, N(0, 0.02)
    with pytest.raises(ValueError, match="needs the class labels"):
        d(x)


def test_acgan_d_has_an_auxiliary_classifier_beside_the_unconditional_logit():
    """Odena et al. 2017: D(x) -> (logits (B,), class logits (B, n_classes)); the logit is the unconditional D's."""
    torch.manual_seed(0)
    d = build_discriminator(_cond("acgan", minibatch_stddev=True)).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, cls = d(x, torch.tensor([0, 1, 2, 0]))
        assert logits.shape == (4,) and cls.shape == (4, 3) and torch.equal(logits, d.net(x))
        assert torch.equal(d(x)[0], logits)  # y is not used
        hidden, logits2, cls2 = features_and_outputs(d, x, None)
    assert torch.equal(logits2, logits) and torch.equal(cls2, cls) and hidden.shape == (4, 16, 4, 4)
    assert isinstance(d.classifier, nn.Conv2d) and d.classifier.in_channels == 16  # phi(x) before the stddev channel


@pytest.mark.parametrize("conditional", ["projection", "acgan"])
def test_spectral_norm_covers_the_class_embedding_and_classifier(conditional):
    """spectral_norm on a conditional D: every conv, the classifier and a projection D's embedding are normalized."""
    from torch.nn.utils import parametrize

    d = build_discriminator(_cond(conditional, spectral_norm=True))
    extra = d.embed if conditional == "projection" else d.classifier
    assert parametrize.is_parametrized(extra, "weight")
    assert all(parametrize.is_parametrized(m, "weight") for m in d.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(4, 3, 32, 32)
    for _ in range(30):
        d(x, torch.tensor([0, 1, 2, 0]))
    sigma = torch.linalg.matrix_norm(extra.weight.detach().flatten(1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=0.02)


def test_unconditional_nets_keep_their_state_dict_keys():
    """conditional 'none' builds the plain nn.Sequential nets (keys '0.weight', ...), so older model files load."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert type(g) is nn.Sequential and type(d) is nn.Sequential
    assert all(k.split(".")[0].isdigit() for k in list(g.state_dict()) + list(d.state_dict()))
    cond = build_generator(_cond("projection"))
    assert {k.split(".")[0] for k in cond.state_dict()} == {"net", "embed"}


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"conditional": "projection", "n_classes": 0}, f"n_classes: expected 1 <= n_classes <= {MAX_CLASSES} for conditional 'projection'"),
    ({"conditional": "acgan", "n_classes": MAX_CLASSES + 1}, "n_classes: expected 1 <= n_classes"),
    ({"conditional": "none", "n_classes": 3}, "n_classes: expected 0 for an unconditional model"),
    ({"conditional": "cgan", "n_classes": 3}, "conditional: expected one of ('none', 'projection', 'acgan')"),
])
def test_config_checks_conditional_and_class_count(kw, fragment):
    """conditional and n_classes are validated together, each error naming its key."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        ModelConfig(image_size=32, **kw)


def test_conditional_config_round_trips_and_old_architectures_need_the_keys():
    """conditional and n_classes are part of the architecture dict."""
    cfg = _cond("acgan", n_classes=7)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg and cfg.to_dict()["conditional"] == "acgan"
    old = ModelConfig().to_dict()
    del old["n_classes"]
    with pytest.raises(ModelFileError, match="architecture.n_classes: missing key"):
        ModelConfig.from_dict(old)


# ----------------------------------------------------------------- texture switches (issue 19)

TEXTURE_OFF = {"g_bilinear_top": 0, "g_pixel_noise": 0, "d_highpass": False}


def test_texture_switches_off_build_the_same_nets_from_the_same_seed():
    """g_bilinear_top 0, g_pixel_noise 0 and d_highpass false give exactly the nets built before they existed."""
    kw = dict(image_size=32, channels=3, nz=8, ngf=4, ndf=4)
    torch.manual_seed(0)
    g0, d0 = build_generator(ModelConfig(**kw)), build_discriminator(ModelConfig(**kw))
    torch.manual_seed(0)
    g1, d1 = build_generator(ModelConfig(**kw, **TEXTURE_OFF)), build_discriminator(ModelConfig(**kw, **TEXTURE_OFF))
    for a, b in ((g0, g1), (d0, d1)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert [type(m) for m in a] == [type(m) for m in b]


@pytest.mark.parametrize("size", (32, 64, 128))
@pytest.mark.parametrize("top", (1, 2))
def test_bilinear_top_replaces_only_the_last_upsampling_layers(size, top):
    """g_bilinear_top=k: G's last k upsampling layers are bilinear resize + conv, the rest stay transposed convs."""
    cfg = ModelConfig(image_size=size, channels=3, nz=8, ngf=4, ndf=4, g_bilinear_top=top)
    g = build_generator(cfg)
    resizes = [m for m in g if isinstance(m, nn.Upsample)]
    assert len(resizes) == top and all(m.mode == "bilinear" for m in resizes)
    deconvs = [m for m in g if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 1 + cfg.n_blocks - top  # the 1x1 -> 4x4 projection and the untouched upsampling layers
    last_deconv = max(i for i, m in enumerate(g) if isinstance(m, nn.ConvTranspose2d))
    assert all(i > last_deconv for i, m in enumerate(g) if isinstance(m, nn.Upsample))
    assert g(torch.randn(2, 8, 1, 1)).shape == (2, 3, size, size)


def test_bilinear_top_composes_with_the_checkerboard_mode():
    """With upsample=resize_conv the lower layers keep nearest resizes, the top ones are bilinear."""
    g = build_generator(ModelConfig(image_size=64, channels=3, nz=8, ngf=4, ndf=4, upsample="resize_conv", g_bilinear_top=1))
    assert [m.mode for m in g if isinstance(m, nn.Upsample)] == ["nearest"] * 3 + ["bilinear"]


@pytest.mark.parametrize(("kw", "fragment"), [
    ({"image_size": 32, "g_bilinear_top": 4}, "g_bilinear_top: expected 0 <= g_bilinear_top <= 3"),
    ({"image_size": 64, "g_pixel_noise": 4}, "g_pixel_noise: expected 0 <= g_pixel_noise <= 3"),
    ({"image_size": 64, "g_pixel_noise": -1}, "g_pixel_noise: expected 0 <= g_pixel_noise"),
])
def test_texture_switches_are_bounded_by_the_depth(kw, fragment):
    """g_bilinear_top and g_pixel_noise cannot ask for more layers than G has at its image size, naming the key."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        ModelConfig(**kw)


@pytest.mark.parametrize("blocks", (1, 2))
def test_pixel_noise_follows_the_last_hidden_upsampling_convs_with_zero_scales(blocks):
    """g_pixel_noise=k: a PixelNoise after the conv of G's last k hidden blocks (before norm), its scales starting at 0."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, g_pixel_noise=blocks)
    g = build_generator(cfg)
    at = [i for i, m in enumerate(g) if isinstance(m, PixelNoise)]
    assert len(at) == blocks
    assert all(isinstance(g[i - 1], nn.ConvTranspose2d) and isinstance(g[i + 1], nn.BatchNorm2d) for i in at)
    assert [g[i].weight.shape[1] for i in at] == [4 * 2 ** (blocks - 1 - k) for k in range(blocks)]
    assert all(torch.equal(g[i].weight, torch.zeros_like(g[i].weight)) for i in at)
    without = nn.Sequential(*[m for m in g if not isinstance(m, PixelNoise)]).eval()
    z = torch.randn(2, 8, 1, 1)
    with torch.no_grad():
        assert torch.equal(g.eval()(z), without(z))  # zero scales: a new G is the same function as one without noise


@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(0.1, 3.0))
@settings(max_examples=20, deadline=None)
def test_pixel_noise_is_one_normal_value_per_pixel_scaled_per_channel(seed, scale):
    """PixelNoise adds scale_c * n(b, h, w): the same noise in every channel, times that channel's scale."""
    layer = PixelNoise(3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, scale, 0.0]).view(1, 3, 1, 1))
    x = torch.randn(2, 3, 8, 8)
    torch.manual_seed(seed)
    added = layer(x) - x
    torch.manual_seed(seed)
    noise = torch.randn(2, 1, 8, 8)
    assert torch.allclose(added[:, :1], noise, atol=1e-6)
    assert torch.allclose(added[:, 1:2], scale * noise, atol=1e-5)
    assert torch.equal(added[:, 2], torch.zeros_like(added[:, 2]))


def test_pixel_noise_is_drawn_when_sampling_and_seeded_by_sampling_rng():
    """A G with pixel noise samples differently per draw in eval mode, identically for the same sampling seed."""
    cfg = ModelConfig(image_size=32, channels=3, nz=8, ngf=4, ndf=4, g_pixel_noise=2)
    torch.manual_seed(0)
    g, z = build_generator(cfg).eval(), torch.randn(3, 8, 1, 1)
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, PixelNoise):
                m.weight.fill_(0.5)
        with sampling_rng(cfg, 1):
            a = g(z)
        with sampling_rng(cfg, 1):
            b = g(z)
        with sampling_rng(cfg, 2):
            c = g(z)
        outside = torch.random.get_rng_state()
        with sampling_rng(cfg, 1):
            g(z)
        assert torch.equal(torch.random.get_rng_state(), outside)  # the caller's stream is untouched
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_highpass_residual_kills_a_constant_image_and_passes_a_checkerboard():
    """x - blur(x) is 0 on a constant image and the whole of a one-pixel checkerboard (the blur removes it entirely)."""
    hp = HighPass(3)
    constant = torch.full((2, 3, 16, 16), 0.7)
    assert torch.allclose(hp.residual(constant), torch.zeros_like(constant), atol=1e-6)
    i = torch.arange(16)
    board = ((i[:, None] + i[None, :]) % 2 * 2 - 1).float().expand(2, 3, 16, 16)
    assert torch.allclose(hp.residual(board), board, atol=1e-6)


@given(c=st.floats(-1, 1), a=st.floats(-1, 1), b=st.floats(-1, 1))
@settings(max_examples=20, deadline=None)
def test_highpass_residual_is_zero_on_any_linear_ramp_inside_the_image(c, a, b):
    """The binomial blur keeps a linear ramp a*i + b*j + c in the interior, so its residual there is 0."""
    i = torch.arange(12.0)
    ramp = (a * i[:, None] + b * i[None, :] + c).expand(1, 1, 12, 12)
    assert torch.allclose(HighPass(1).residual(ramp)[..., 1:-1, 1:-1], torch.zeros(1, 1, 10, 10), atol=1e-5)


def test_highpass_reads_the_residual_from_the_second_half_of_a_packed_input():
    """(B, 2C, H, W): D's main channels are the first C, the residual is of the last C; (B, C, H, W): both of x."""
    hp = HighPass(3)
    x, uncut = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    packed = hp(torch.cat([x, uncut], 1))
    assert torch.equal(packed[:, :3], x) and torch.allclose(packed[:, 3:], hp.residual(uncut))
    assert torch.allclose(hp(x)[:, 3:], hp.residual(x))
    with pytest.raises(ValueError, match="HighPass: expected 3 or 6 channels, got 4"):
        hp(torch.randn(1, 4, 8, 8))


@pytest.mark.parametrize("conditional", ["none", "projection", "acgan"])
@pytest.mark.parametrize(("spectral_norm", "minibatch_stddev"), [(False, False), (True, True)])
def test_highpass_d_works_with_every_d_variant(conditional, spectral_norm, minibatch_stddev):
    """d_highpass: D (conditional, SN, stddev) takes C or 2C channels, gives logits and features; the blur is not saved."""
    kw = dict(image_size=32, channels=3, nz=8, ngf=4, ndf=4, spectral_norm=spectral_norm,
              minibatch_stddev=minibatch_stddev, d_highpass=True)
    if conditional != "none":
        kw.update(conditional=conditional, n_classes=3)
    d = build_discriminator(ModelConfig(**kw))
    y = torch.tensor([0, 2]) if conditional != "none" else None
    for x in (torch.randn(2, 3, 32, 32), torch.randn(2, 6, 32, 32)):
        hidden, logits, _ = features_and_outputs(d, x, y)
        assert logits.shape == (2,) and discriminator_features(d, x).shape == (2, hidden[0].numel())
    assert not any("kernel" in k for k in d.state_dict())
    first = next(m for m in d.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == 6


def test_texture_switches_round_trip_through_the_architecture_dict():
    """g_bilinear_top, g_pixel_noise and d_highpass are part of the architecture dict; one without them is refused."""
    cfg = ModelConfig(image_size=64, g_bilinear_top=2, g_pixel_noise=3, d_highpass=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = cfg.to_dict()
    del old["g_pixel_noise"]
    with pytest.raises(ModelFileError, match="architecture.g_pixel_noise: missing key"):
        ModelConfig.from_dict(old)
