"""DCGAN generator and discriminator after Radford et al. 2016 (arXiv:1511.06434).

Architecture guidelines from the paper, all kept here:
- strided convolutions in D and strided transposed convolutions in G: no pooling (``downsample``
  offers average pooling as an alternative, ganhacks #5);
- no hidden fully connected layers: G starts from a (nz, 1, 1) "image", D ends in a conv;
- BatchNorm in both nets except G's output layer and D's input layer;
- ReLU in G (LeakyReLU as an option), LeakyReLU(0.2) in D, tanh on G's output.

Options beyond the paper, each a :class:`ModelConfig` field (recorded in model.json): G's
upsampling (``upsample``: transposed conv, with an extra conv, resize-conv, or PixelShuffle with
ICNR init), D's downsampling (``downsample``: strided conv, or stride-1 conv + average pooling),
LeakyReLU in G, instance norm, dropout in G, decayed Gaussian noise after G's hidden blocks
(``g_layer_noise``), a minibatch-stddev layer in D, and spectral normalization of D
(``spectral_norm``, Miyato et al. 2018), which replaces D's BatchNorm. Three options target the
texture spectrum (issue 19): bilinear upsampling + conv for G's top layers (``g_bilinear_top``,
Odena et al. 2016), per-pixel noise inputs with learned per-channel scales in G's top blocks,
kept at sampling (``g_pixel_noise``, Karras et al. 2019, StyleGAN's "stochastic variation"), and
a fixed high-pass residual of D's input as extra input channels (``d_highpass``; frequency-aware
D after Chen et al. 2021, SSD-GAN, and Schwarz et al. 2021).

Class-conditional nets (``conditional``, ``n_classes``; ganhacks #12 "if you have labels, use
them"): G gets a class embedding (``nn.Embedding``, ganhacks #16) concatenated to z
(:class:`ConditionalGenerator`); D is a projection discriminator (Miyato & Koyama 2018,
arXiv:1802.05637) or carries an auxiliary classifier (AC-GAN, Odena et al. 2017,
arXiv:1610.09585) (:class:`ConditionalDiscriminator`). Each wraps the unconditional
``nn.Sequential``, so an unconditional net is exactly the one it always was (same layers, same
state-dict keys, same random draws when built).

G and D are symmetric: ``log2(image_size) - 2`` resolution-doubling blocks in G and as
many resolution-halving blocks in D, so 32, 64 and 128 pixel tiles differ only in depth.
Each network body is a single ``nn.Sequential`` built from a :class:`ModelConfig`; nothing is
read from module globals, so ``build_generator(ModelConfig.from_dict(model_json["architecture"]))``
rebuilds the exact network that was trained, and :func:`sample_latent` feeds it latents from
the distribution it was trained on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from satgan.errors import ModelFileError, ParamsError
from satgan.kernels import FusedOp, pack, pack_adjoint
from satgan.params import check, from_mapping

IMAGE_SIZES = (32, 64, 128)
CHANNELS = (1, 3)
LATENTS = ("gaussian", "uniform")
UPSAMPLES = ("deconv", "deconv_conv", "resize_conv", "pixel_shuffle")
DOWNSAMPLES = ("strided", "avg_pool")
CONDITIONALS = ("none", "projection", "acgan")
# Bounds that keep a foreign model.json (or params) from asking for a net that cannot be built:
# ngf = 256 at 128x128 is already a ~1 GB generator.
MAX_NZ = 1024
MAX_WIDTH = 256
MAX_CLASSES = 1024


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild G and D and to drive G (saved as model.json's ``architecture``).

    ``latent`` is the distribution G was trained on (``gaussian``: N(0, 1); ``uniform``:
    U(-1, 1)); :func:`sample_latent` draws from it, so sampling always matches training.
    ``spectral_norm``: every conv of D is spectrally normalized and D has no norm layers
    (:func:`build_discriminator`); its power-iteration vectors are buffers of D's state dict.
    ``g_layer_noise``: G has a :class:`LayerNoise` after each hidden block (training mode only;
    its std is set by the trainer and is not part of G's state dict).
    ``conditional``: ``none`` (``n_classes`` 0), or G and D take a class label in
    ``range(n_classes)`` too: ``projection`` or ``acgan`` (:func:`build_generator`,
    :func:`build_discriminator`).
    ``g_bilinear_top``: G's last that many upsampling layers (the output layer first) are
    bilinear upsampling + a 3x3 conv; the others follow ``upsample``. ``g_pixel_noise``: a
    :class:`PixelNoise` after the upsampling of G's last that many hidden blocks (its scales are
    in G's state dict; it draws at sampling too: :func:`sampling_rng`). ``d_highpass``: D's first
    layer is a :class:`HighPass` that appends the image's high-pass residual as extra channels.
    """

    image_size: int = 64
    channels: int = 3
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    g_activation: Literal["relu", "leaky_relu"] = "relu"
    norm: Literal["batch", "instance"] = "batch"
    g_dropout: float = 0.0
    g_dropout_at_sampling: bool = False
    upsample: Literal["deconv", "deconv_conv", "resize_conv", "pixel_shuffle"] = "deconv"
    downsample: Literal["strided", "avg_pool"] = "strided"
    g_layer_noise: bool = False
    minibatch_stddev: bool = False
    spectral_norm: bool = False
    init: Literal["normal", "xavier"] = "normal"
    latent: Literal["gaussian", "uniform"] = "gaussian"
    conditional: Literal["none", "projection", "acgan"] = "none"
    n_classes: int = 0
    g_bilinear_top: int = 0
    g_pixel_noise: int = 0
    d_highpass: bool = False

    def __post_init__(self) -> None:
        check("image_size", self.image_size in IMAGE_SIZES, f"one of {IMAGE_SIZES}", self.image_size)
        check("channels", self.channels in CHANNELS, f"one of {CHANNELS}", self.channels)
        check("nz", 1 <= self.nz <= MAX_NZ, f"1 <= nz <= {MAX_NZ}", self.nz)
        check("ngf", 1 <= self.ngf <= MAX_WIDTH, f"1 <= ngf <= {MAX_WIDTH}", self.ngf)
        check("ndf", 1 <= self.ndf <= MAX_WIDTH, f"1 <= ndf <= {MAX_WIDTH}", self.ndf)
        check("g_activation", self.g_activation in ("relu", "leaky_relu"), "'relu' or 'leaky_relu'", self.g_activation)
        check("norm", self.norm in ("batch", "instance"), "'batch' or 'instance'", self.norm)
        check("g_dropout", 0.0 <= self.g_dropout < 1.0, "0 <= g_dropout < 1", self.g_dropout)
        check("g_dropout_at_sampling", not self.g_dropout_at_sampling or self.g_dropout > 0,
              "false when g_dropout is 0 (no dropout to keep on)", self.g_dropout_at_sampling)
        check("upsample", self.upsample in UPSAMPLES, f"one of {UPSAMPLES}", self.upsample)
        check("downsample", self.downsample in DOWNSAMPLES, f"one of {DOWNSAMPLES}", self.downsample)
        check("init", self.init in ("normal", "xavier"), "'normal' or 'xavier'", self.init)
        check("latent", self.latent in LATENTS, "'gaussian' or 'uniform'", self.latent)
        check("conditional", self.conditional in CONDITIONALS, f"one of {CONDITIONALS}", self.conditional)
        if self.conditional == "none":
            check("n_classes", self.n_classes == 0, "0 for an unconditional model (conditional 'none')", self.n_classes)
        else:
            check("n_classes", 1 <= self.n_classes <= MAX_CLASSES,
                  f"1 <= n_classes <= {MAX_CLASSES} for conditional {self.conditional!r}", self.n_classes)
        n = self.n_blocks
        check("g_bilinear_top", 0 <= self.g_bilinear_top <= n,
              f"0 <= g_bilinear_top <= {n} (G's upsampling layers at {self.image_size} px)", self.g_bilinear_top)
        check("g_pixel_noise", 0 <= self.g_pixel_noise <= n - 1,
              f"0 <= g_pixel_noise <= {n - 1} (G's hidden upsampling blocks at {self.image_size} px)", self.g_pixel_noise)

    @property
    def n_blocks(self) -> int:
        """Resolution-doubling blocks in G (= halving blocks in D): 4 -> image_size."""
        return int(math.log2(self.image_size)) - 2

    @property
    def is_conditional(self) -> bool:
        """G and D take a class label (``conditional`` is ``projection`` or ``acgan``)."""
        return self.conditional != "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (model.json's ``architecture``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path = "model.json") -> ModelConfig:
        """Inverse of :meth:`to_dict`, validated like params: every key required, none unknown, types and bounds checked.

        Raises :class:`ModelFileError` naming ``source`` and the key (``architecture.nz: expected
        an integer, got str 'abc'``). A card from before the ``latent`` key existed is refused
        (``architecture.latent: missing key``): its latent distribution is unknown, retrain it.
        """
        try:
            return from_mapping(cls, data, key="architecture", file=source)
        except ParamsError as exc:
            raise ModelFileError(str(exc)) from None


def sample_latent(cfg: ModelConfig, n: int, generator: torch.Generator | None = None,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """``n`` latents (n, nz, 1, 1) float32 from the distribution G was trained on (``cfg.latent``).

    ``gaussian``: N(0, 1), a spherical z (ganhacks #3); ``uniform``: U(-1, 1) as in the DCGAN
    paper. The one latent sampler: training, generate and ``satgan.sample`` all call it, so
    a model is never driven with latents from outside its training range. ``generator``
    None uses torch's default generator (seeded and checkpointed by training); ``device``
    defaults to the generator's device (CPU without one).
    """
    if device is None:
        device = generator.device if generator is not None else "cpu"
    if cfg.latent == "gaussian":
        return torch.randn(n, cfg.nz, 1, 1, generator=generator, device=device)
    return torch.rand(n, cfg.nz, 1, 1, generator=generator, device=device).mul_(2).sub_(1)


def _norm(cfg: ModelConfig, channels: int) -> nn.Module:
    # Instance norm (Ulyanov et al. 2016) normalises each sample alone, so real and fake
    # statistics never mix in D; affine keeps the per-channel scale and shift that BN has.
    if cfg.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


def _upsample(cfg: ModelConfig, cin: int, cout: int, bias: bool, bilinear: bool = False) -> list[nn.Module]:
    """Layers that double the resolution, (B, cin, h, w) -> (B, cout, 2h, 2w); ``bilinear``: bilinear resize + conv."""
    if bilinear:
        # Odena et al. 2016 ("Deconvolution and Checkerboard Artifacts"): resize then convolve; bilinear rather
        # than nearest, because nearest repeats each pixel in 2x2 blocks, whose spectrum still has the tile's
        # 2x-period images, while bilinear interpolation suppresses them: against the dot lattice at 8/16/32
        # cycles per tile that transposed convs left (issue 19). Only G's top layers: the coarse ones stay as set.
        return [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)]
    if cfg.upsample == "resize_conv":
        # Resize-convolution (Odena et al. 2016, "Deconvolution and Checkerboard Artifacts"):
        # nearest upsampling then a 3x3 conv has no uneven kernel overlap, hence no checkerboard.
        return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=bias)]
    if cfg.upsample == "pixel_shuffle":
        # Sub-pixel convolution (Shi et al. 2016): a 3x3 conv to 4x the channels, then
        # PixelShuffle(2) rearranges them into a 2x larger image. init_weights gives the conv
        # ICNR weights (Aitken et al. 2017), so at init it equals nearest upsampling + conv:
        # no checkerboard of its own to unlearn.
        return [nn.Conv2d(cin, cout * 4, 3, 1, 1, bias=bias), nn.PixelShuffle(2)]
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)]
    if cfg.upsample == "deconv_conv":
        # An extra stride-1 conv after the transposed conv smooths its checkerboard (practice, Odena et al. 2016).
        layers.append(nn.Conv2d(cout, cout, 3, 1, 1, bias=bias))
    return layers


def _downsample(cfg: ModelConfig, cin: int, cout: int, bias: bool) -> list[nn.Module]:
    """Layers that halve the resolution, (B, cin, h, w) -> (B, cout, h/2, w/2)."""
    if cfg.downsample == "avg_pool":
        # ganhacks #5 ("for downsampling, use: average pooling, Conv2d + stride"): a stride-1 3x3
        # conv sees every pixel equally, then AvgPool2d(2) halves the resolution without the
        # uneven kernel overlap of a stride-2 conv.
        return [nn.Conv2d(cin, cout, 3, 1, 1, bias=bias), nn.AvgPool2d(2)]
    return [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias)]  # DCGAN: a strided conv, no pooling


class LayerNoise(nn.Module):
    """``x + std * N(0, 1)`` in training mode, the identity in eval mode (sampling stays deterministic).

    ganhacks #13, second form ("add gaussian noise to every layer of generator", Zhao et al.
    2016, EBGAN): noise in G's hidden activations, decayed to 0 over training. ``std`` is a
    0-dim device buffer the trainer writes each iteration from the step counter (so a CUDA graph
    reads the current value); it is not persistent: not in G's state dict or weights file, and
    a resumed run recomputes it from the restored step. ``active`` False (set on the host once
    the std has decayed to 0, eager runs only) skips drawing the noise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("std", torch.zeros(()), persistent=False)
        self.active = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.active):
            return x
        return torch.addcmul(x, torch.randn_like(x), self.std.to(x.dtype))


class PixelNoise(nn.Module):
    """``x + scale_c * N(0, 1)``: one noise value per pixel, broadcast over the channels, scaled per channel.

    Karras et al. 2019 (StyleGAN, sec. 3.2 "stochastic variation"): explicit per-pixel noise inputs
    give G a source of fine, non-repeating detail (grain, foliage, ripples) that it otherwise has
    to fake from the latent through its convs; the learned per-channel ``weight`` starts at 0
    (as in StyleGAN's code), so a new G is the one without it. Unlike :class:`LayerNoise` it is
    part of the model: drawn in training and at sampling alike, from torch's default generator
    (the trainer's seeded stream in training, inside a captured CUDA graph too; sampling forks and
    seeds it: :func:`sampling_rng`).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        noise = torch.randn(b, 1, h, w, dtype=x.dtype, device=x.device)
        return torch.addcmul(x, noise, self.weight.to(x.dtype))


class HighPass(nn.Module):
    """(B, C, H, W) -> (B, 2C, H, W): the image and its high-pass residual ``x - blur(x)``, a fixed filter.

    A frequency-aware D (issue 19; SSD-GAN: Chen et al. 2021, Jung & Keuper 2021): strided convs
    with small N(0, 0.02) weights see an image's fine texture only weakly next to its coarse
    contrast (Schwarz et al. 2021, "On the Frequency Bias of Generative Models"), and a GAN's
    fakes give themselves away most in that texture. The residual of a 3x3 binomial blur (zero on
    a constant image, the whole of a one-pixel checkerboard) is handed to D's first conv as extra
    channels at full resolution: the simplest way to let D see it before any stride, with no new
    branch to merge (every D variant, conditional, feature matching and minibatch stddev included,
    is unchanged after the first layer). The kernel is a non-persistent buffer: nothing is learned
    or saved.

    The input may also be (B, 2C, H, W): the image D's main path reads, and the image the residual
    is taken from (the trainer passes DiffAugment's result before cutout there, whose square's
    sharp edges would otherwise dominate the residual).

    On a CPU, batches of at least ``COMPILE_MIN_ELEMENTS`` run on inductor-compiled kernels of the
    same op, forward and backward (:class:`satgan.kernels.FusedOp`, issue 20): equal to this eager
    version to float rounding, and several times faster.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (torch.outer(k, k) / 16).expand(channels, 1, 3, 3).clone(), persistent=False)
        self.fused = FusedOp(pack, pack_adjoint, "D high-pass", channels)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """``x - blur(x)`` (B, C, H, W), the blur a depthwise binomial 3x3 with reflected borders."""
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel.to(x.dtype), groups=self.channels)
        return x - blurred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.channels
        if x.shape[1] not in (c, 2 * c):
            raise ValueError(f"HighPass: expected {c} or {2 * c} channels, got {x.shape[1]}")
        if self.fused.compiles(x):
            return self.fused(x)
        main, source = (x[:, :c], x[:, c:]) if x.shape[1] == 2 * c else (x, x)
        return torch.cat([main, self.residual(source)], dim=1)


def _g_act(cfg: ModelConfig) -> nn.Module:
    # ReLU in G per DCGAN; LeakyReLU avoids sparse gradients (ganhacks #5).
    return nn.LeakyReLU(0.2, inplace=True) if cfg.g_activation == "leaky_relu" else nn.ReLU(inplace=True)


class MinibatchStdDev(nn.Module):
    """Appends one channel: the mean over features of the batch standard deviation.

    Karras et al. 2018 (ProGAN), a parameter-free form of Salimans et al. 2016's minibatch
    discrimination: D can see a batch's lack of variety, which penalises mode collapse.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = torch.sqrt(x.float().var(dim=0, unbiased=False) + 1e-8).mean().to(x.dtype)  # scalar
        return torch.cat([x, std.expand(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)


class SamplingDropout(nn.Dropout):
    """Dropout that stays on in eval mode too: ganhacks #17 and pix2pix (Isola et al. 2017) sample with it.

    No parameters or buffers: a G built with it has the state dict of one built with ``nn.Dropout``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True, inplace=self.inplace)


def draws_at_sampling(cfg: ModelConfig) -> bool:
    """Whether G draws random numbers when sampling (dropout kept at sampling, or per-pixel noise inputs)."""
    return cfg.g_dropout_at_sampling or cfg.g_pixel_noise > 0


def sampling_rng(cfg: ModelConfig, seed: int, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager[Any]:
    """Around sampling: for a G that draws when sampling, torch's RNG (CPU, and ``device``'s when CUDA) forked and seeded.

    Its dropout masks and pixel noise then repeat for the same seed (and batch size: they are
    drawn batch by batch) without touching the caller's RNG streams (training stays
    bit-identical across resumes); any other G draws nothing and gets a no-op.
    """
    if not draws_at_sampling(cfg):
        return contextlib.nullcontext()
    dev = torch.device(device)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []

    @contextlib.contextmanager
    def forked() -> Iterator[None]:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    return forked()


def _g_dropout(cfg: ModelConfig) -> nn.Module:
    return SamplingDropout(cfg.g_dropout) if cfg.g_dropout_at_sampling else nn.Dropout(cfg.g_dropout)


def build_generator(cfg: ModelConfig) -> nn.Module:
    """G: (B, nz, 1, 1) latent -> (B, channels, image_size, image_size) in [-1, 1].

    An ``nn.Sequential``; for a conditional ``cfg`` a :class:`ConditionalGenerator` around one
    whose input is the latent and the class embedding, ``g(z, y)``.
    """
    n = cfg.n_blocks
    width = cfg.ngf * 2 ** (n - 1)
    cin = cfg.nz + (cfg.nz if cfg.is_conditional else 0)  # conditional: [z, embed(y)], embedding as wide as z
    layers: list[nn.Module] = [
        # (B, nz, 1, 1) -> (B, ngf*2^(n-1), 4, 4): the "project and reshape" step as a conv
        nn.ConvTranspose2d(cin, width, 4, 1, 0, bias=False),
        _norm(cfg, width),
        _g_act(cfg),
    ]
    if cfg.g_layer_noise:
        layers.append(LayerNoise())  # ganhacks #13: decayed Gaussian noise in every hidden layer of G
    if cfg.g_dropout > 0:
        layers.append(_g_dropout(cfg))  # ganhacks #17: dropout as G's noise source
    size = 4
    # up-layer i of n (the output layer is i = n - 1) is bilinear among the top g_bilinear_top; hidden block i gets
    # pixel noise among the top g_pixel_noise hidden blocks
    for i in range(n - 1):
        # (B, w, s, s) -> (B, w/2, 2s, 2s)
        layers += _upsample(cfg, width, width // 2, bias=False, bilinear=i >= n - cfg.g_bilinear_top)
        width //= 2
        size *= 2
        if i >= n - 1 - cfg.g_pixel_noise:
            layers.append(PixelNoise(width))  # Karras et al. 2019: after the conv, before norm and activation
        layers += [_norm(cfg, width), _g_act(cfg)]
        if cfg.g_layer_noise:
            layers.append(LayerNoise())
        if cfg.g_dropout > 0:
            layers.append(_g_dropout(cfg))
    # (B, ngf, s, s) -> (B, channels, image_size, image_size); no norm on G's output (DCGAN)
    layers += _upsample(cfg, width, cfg.channels, bias=True, bilinear=cfg.g_bilinear_top > 0)
    layers.append(nn.Tanh())
    g = nn.Sequential(*layers)
    init_weights(g, cfg.init)
    return ConditionalGenerator(g, cfg) if cfg.is_conditional else g


def build_discriminator(cfg: ModelConfig) -> nn.Module:
    """D: (B, channels, image_size, image_size) -> logits (B,), real > 0 > fake.

    An ``nn.Sequential``; for a conditional ``cfg`` a :class:`ConditionalDiscriminator` around
    it, ``d(x, y)`` (projection: logits (B,); acgan: logits and class logits (B, n_classes)).

    With ``cfg.spectral_norm`` every conv is spectrally normalized (Miyato et al. 2018: each
    weight divided by its largest singular value, estimated by one power iteration per
    training-mode forward, so D is 1-Lipschitz per layer) and D has no BatchNorm/InstanceNorm,
    as in the paper's D: dividing by a batch's standard deviation would undo the bound. Hidden
    convs then get a bias, which the removed norm's shift provided.

    ``cfg.downsample`` ``avg_pool``: each block's stride-2 4x4 conv becomes a stride-1 3x3 conv
    followed by AvgPool2d(2) (ganhacks #5); same depth, widths and output shape.

    ``cfg.d_highpass``: a :class:`HighPass` first, so D reads the image and its fixed high-pass
    residual (2C channels); it also accepts a (B, 2C, S, S) input whose second half is the
    image the residual is taken from.
    """
    n = cfg.n_blocks
    width = cfg.ndf
    sn = cfg.spectral_norm
    # d_highpass: (B, C or 2C, S, S) -> (B, 2C, S, S), the image and its high-pass residual
    layers: list[nn.Module] = [HighPass(cfg.channels)] if cfg.d_highpass else []
    layers += [
        # (B, C, S, S) -> (B, ndf, S/2, S/2); no norm on D's input layer (DCGAN)
        *_downsample(cfg, cfg.channels * (2 if cfg.d_highpass else 1), width, bias=True),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    for _ in range(n - 1):
        # (B, w, s, s) -> (B, 2w, s/2, s/2)
        layers += _downsample(cfg, width, width * 2, bias=sn)
        if not sn:
            layers.append(_norm(cfg, width * 2))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        width *= 2
    hidden = width  # channels of the last hidden activations (B, hidden, 4, 4)
    if cfg.minibatch_stddev:
        layers.append(MinibatchStdDev())  # (B, w, 4, 4) -> (B, w+1, 4, 4)
        width += 1
    # (B, w, 4, 4) -> (B, 1, 1, 1) -> (B,) logits: BCEWithLogits is autocast-safe, Sigmoid+BCE is not
    layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=True), nn.Flatten(0)]
    d: nn.Module = nn.Sequential(*layers)
    init_weights(d, cfg.init)
    if cfg.is_conditional:
        d = ConditionalDiscriminator(d, cfg, hidden)
    if sn:
        for m in list(d.modules()):
            if isinstance(m, (nn.Conv2d, nn.Embedding)):
                # after init: SN rescales the initialised weight (its direction is kept); a projection D's
                # class embedding too, as in Miyato & Koyama 2018's SN-projection D
                nn.utils.parametrizations.spectral_norm(m)
    return d


class ConditionalGenerator(nn.Module):
    """G(z, y) = net([z, embed(y)]): the DCGAN generator fed the latent and a learned class vector.

    ganhacks #16: the discrete class goes through an embedding (``embed``: n_classes x nz), which
    is concatenated to z along the channels, so G's first transposed conv reads (B, 2 nz, 1, 1).
    Concatenated rather than multiplied into z: z keeps its own distribution and every one of its
    dimensions, so each class gets the latent's full variety (a product rescales z by the class
    vector, shrinking the dimensions where it is small), a slerp walk within a class moves z
    alone, and a uniform latent stays inside its cube; the class adds its own learned 4x4 map to
    G's first layer. The embedding starts small, initialised like G's convs (N(0, 0.02) under
    ``init: normal``): started at z's own scale, N(0, 1), the class drowned the latent and each
    class collapsed to one image (RSSCN7, 32 px, 2,000 iterations, projection: pixel std within a
    class 0.04 against 0.27 among real tiles of a class; 0.24 with this init).
    """

    def __init__(self, net: nn.Sequential, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = net  # (B, 2 nz, 1, 1) -> (B, C, S, S), the unconditional body
        self.embed = nn.Embedding(cfg.n_classes, cfg.nz)  # (B,) int64 -> (B, nz)
        _init_conv_weight(self.embed.weight, cfg.init)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        e = self.embed(y).to(z.dtype)[:, :, None, None]  # (B, nz, 1, 1)
        return self.net(torch.cat([z, e], dim=1))


class ConditionalDiscriminator(nn.Module):
    """D(x, y) on top of the DCGAN discriminator ``net``, whose last hidden activations phi(x) (B, C, 4, 4) it reads.

    ``projection`` (Miyato & Koyama 2018): D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, psi being
    ``net``'s own logit conv and ``embed`` (n_classes x C*16, initialised like that conv) one
    vector per class. ``acgan`` (Odena et al. 2017): the logit is D's unconditional one and a
    ``classifier`` conv (C -> n_classes over the 4x4 map, a head like the logit conv) gives
    class logits; ``y`` is not used. The class terms read phi(x) before any minibatch-stddev
    channel: a class is a property of an image, not of its batch.
    """

    def __init__(self, net: nn.Sequential, cfg: ModelConfig, hidden: int) -> None:
        super().__init__()
        self.net = net  # (B, C, S, S) -> (B,) logits, the unconditional D
        self.conditional = cfg.conditional
        if cfg.conditional == "projection":
            self.embed = nn.Embedding(cfg.n_classes, hidden * 16)  # (B,) -> (B, C*16)
            _init_conv_weight(self.embed.weight, cfg.init)
        else:
            self.classifier = nn.Conv2d(hidden, cfg.n_classes, 4, 1, 0, bias=True)  # (B, C, 4, 4) -> (B, K, 1, 1)
            init_weights(self.classifier, cfg.init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): the last hidden activations (B, C, 4, 4)."""
        return split_discriminator(self.net)[0](x)

    def score(self, hidden: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (B,) from phi(x) and the labels (projection); acgan: (logits (B,), class logits (B, n_classes))."""
        logits = split_discriminator(self.net)[1](hidden)
        if self.conditional == "projection":
            if y is None:
                raise ValueError("a projection discriminator needs the class labels")
            return logits + (self.embed(y) * hidden.flatten(1)).sum(dim=1)
        return logits, self.classifier(hidden).flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.score(self.features(x), y)


def split_discriminator(d: nn.Sequential) -> tuple[nn.Sequential, nn.Sequential]:
    """D as (body, head): ``head(body(x)) == d(x)``; ``body(x)`` (B, C, 4, 4) are its last hidden activations.

    The head is the logit conv (with the minibatch-stddev layer before it, when present), so
    feature matching can read the features and the logits from one forward. ``d`` is the
    unconditional ``nn.Sequential`` (a conditional D's is its ``net``).
    """
    head = 2 + (1 if isinstance(d[-3], MinibatchStdDev) else 0)
    return d[:-head], d[-head:]


def discriminator_features(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D's last hidden activations (B, F), before its head: the target of feature matching."""
    if isinstance(d, ConditionalDiscriminator):
        return d.features(x).flatten(1)
    return split_discriminator(d)[0](x).flatten(1)


def discriminator_outputs(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, class logits or None)`` from what any D returns (an acgan D returns both)."""
    return out if isinstance(out, tuple) else (out, None)


def features_and_outputs(d: nn.Module, x: torch.Tensor,
                         y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One D forward as (last hidden activations (B, C, 4, 4), logits (B,), class logits (B, K) or None).

    ``y``: the class labels of a conditional D (ignored by an acgan D); None for an unconditional one.
    """
    if isinstance(d, ConditionalDiscriminator):
        hidden = d.features(x)
        return hidden, *discriminator_outputs(d.score(hidden, y))
    body, head = split_discriminator(d)
    hidden = body(x)
    return hidden, head(hidden), None


def _init_conv_weight(weight: torch.Tensor, scheme: Literal["normal", "xavier"]) -> None:
    if scheme == "xavier":
        nn.init.xavier_normal_(weight)
    else:
        nn.init.normal_(weight, 0.0, 0.02)


@torch.no_grad()
def icnr_(weight: torch.Tensor, scale: int, scheme: Literal["normal", "xavier"]) -> None:
    """ICNR init (Aitken et al. 2017) of a conv that feeds ``PixelShuffle(scale)``, in place.

    ``weight`` (cout * scale^2, cin, k, k): one kernel (cout, cin, k, k) is drawn with
    ``scheme`` and repeated for the scale^2 sub-pixel positions of each output channel
    (PixelShuffle takes channel ``c * scale^2 + i`` to sub-pixel ``i`` of channel ``c``), so
    every pixel of a scale x scale output block starts equal: sub-pixel conv + shuffle is then
    exactly nearest upsampling of one conv, free of checkerboard artifacts.
    """
    groups = scale * scale
    if weight.shape[0] % groups:
        raise ValueError(f"ICNR: {weight.shape[0]} output channels is not a multiple of scale^2 = {groups}")
    base = torch.empty(weight.shape[0] // groups, *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    _init_conv_weight(base, scheme)
    weight.copy_(base.repeat_interleave(groups, dim=0))


def init_weights(module: nn.Module, scheme: Literal["normal", "xavier"]) -> None:
    """DCGAN init: conv weights N(0, 0.02) (or Xavier), norm scales N(1, 0.02), all biases 0.

    A conv followed by ``nn.PixelShuffle`` in an ``nn.Sequential`` gets ICNR weights
    (:func:`icnr_`) drawn from the same scheme.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            _init_conv_weight(m.weight, scheme)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    for seq in module.modules():
        if isinstance(seq, nn.Sequential):
            for conv, shuffle in zip(seq, list(seq)[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(shuffle, nn.PixelShuffle):
                    icnr_(conv.weight, shuffle.upscale_factor, scheme)
