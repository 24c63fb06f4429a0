"""GAN losses on D's raw outputs (logits) and the R1 gradient penalty, as plain functions.

Every loss takes D's logits, (N,) or any shape (averaged over all elements), and returns a
0-d tensor to minimise; none reads a value back to the host, so they can live in a CUDA graph.

- BCE family (Goodfellow et al. 2014): :func:`d_bce` (D's cross-entropy, with optional target
  values for label smoothing), :func:`g_non_saturating` (G maximises log D(G(z)): strong
  gradients while D rejects the fakes) and :func:`g_saturating` (the minimax form, G minimises
  log(1 - D(G(z))), which vanishes exactly then).
- Hinge (Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018, "Spectral Normalization for
  Generative Adversarial Networks"): :func:`d_hinge` = E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))],
  :func:`g_hinge` = -E[D(G(z))]; :func:`hinge` is one term with per-sample labels of sign +-1
  (label noise flips a sign).
- :func:`r1_penalty` (Mescheder et al. 2018, "Which Training Methods for GANs do actually
  Converge?"): (gamma / 2) E[||grad_x D(x)||^2] on real x, which keeps D flat on the data
  and makes training converge locally. :func:`r1_from_logits` takes it from a forward the
  caller already ran (D's own real batch), so it costs no extra D forward. Lazy
  regularisation (every k steps, scaled by k; Karras et al. 2020, StyleGAN2) is the caller's choice.
- :func:`class_cross_entropy` and :func:`class_accuracy`: the auxiliary classifier's loss and
  accuracy of an AC-GAN (Odena et al. 2017, "Conditional Image Synthesis with Auxiliary
  Classifier GANs"), on class logits (N, K) and int64 labels (N,).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def d_bce(real_logits: Tensor, fake_logits: Tensor, real_target: float | Tensor = 1.0,
          fake_target: float | Tensor = 0.0) -> Tensor:
    """D's binary cross-entropy: reals toward ``real_target``, fakes toward ``fake_target`` (targets may be tensors)."""
    rt = torch.as_tensor(real_target, dtype=real_logits.dtype, device=real_logits.device).expand_as(real_logits)
    ft = torch.as_tensor(fake_target, dtype=fake_logits.dtype, device=fake_logits.device).expand_as(fake_logits)
    return F.binary_cross_entropy_with_logits(real_logits, rt) + F.binary_cross_entropy_with_logits(fake_logits, ft)


def g_non_saturating(fake_logits: Tensor) -> Tensor:
    """-E[log sigmoid(D(G(z)))] = E[softplus(-D(G(z)))]: G's non-saturating loss (Goodfellow et al. 2014)."""
    return F.softplus(-fake_logits).mean()


def g_saturating(fake_logits: Tensor) -> Tensor:
    """E[log(1 - sigmoid(D(G(z))))] = -E[softplus(D(G(z)))]: G's original minimax loss."""
    return -F.softplus(fake_logits).mean()


def hinge(logits: Tensor, sign: float | Tensor) -> Tensor:
    """E[max(0, 1 - sign * D)]: one side of D's hinge loss; ``sign`` +1 for reals, -1 for fakes, or a per-sample tensor."""
    return F.relu(1.0 - sign * logits).mean()


def d_hinge(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]: D's hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""
    return hinge(real_logits, 1.0) + hinge(fake_logits, -1.0)


def g_hinge(fake_logits: Tensor) -> Tensor:
    """-E[D(G(z))]: G's loss under the hinge D loss (Lim & Ye 2017; Miyato et al. 2018)."""
    return -fake_logits.mean()


def r1_penalty(d: Callable[[Tensor], Tensor], real: Tensor, gamma: float) -> Tensor:
    """(gamma / 2) * mean over the batch of ||d/dx D(x)||^2 at the real images x (Mescheder et al. 2018).

    ``real`` (N, C, H, W) is detached and made to require grad here; the gradient is taken with
    ``create_graph=True``, so the returned 0-d penalty backpropagates into D's parameters. The
    gradient of the summed outputs is each image's own gradient only when D treats images
    independently (BatchNorm in training mode mixes a batch; the DCGAN D here has it, so the
    penalty then includes that coupling, as in the reference implementation).
    """
    x = real.detach().requires_grad_(True)
    return r1_from_logits(d(x), x, gamma)


def r1_from_logits(real_logits: Tensor, real_input: Tensor, gamma: float | Tensor) -> Tensor:
    """:func:`r1_penalty` from a forward already run: ``real_logits`` = D(f(``real_input``)) with ``real_input`` requiring grad.

    ``f`` may be any differentiable input path (augmentation, instance noise, a concatenation
    with fakes): the gradient is taken with respect to ``real_input`` through it, as in ADA's
    reference code (R1 of the un-augmented reals, through the augmentation).
    """
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real_input, create_graph=True)
    return 0.5 * gamma * grad.float().pow(2).flatten(1).sum(1).mean()


def class_cross_entropy(class_logits: Tensor, labels: Tensor) -> Tensor:
    """-E[log softmax(class_logits)[label]]: the AC-GAN class loss (Odena et al. 2017), in float32.

    The same value as ``F.cross_entropy``, from a one-hot mask built by comparison: CUDA's
    NLLLoss has no deterministic kernel (it raises under ``train.deterministic``), and the mask
    is elementwise, so the loss stays deterministic, sync-free and capturable in a CUDA graph.
    """
    logp = F.log_softmax(class_logits.float(), dim=1)
    classes = torch.arange(logp.shape[1], device=logp.device)
    onehot = (labels[:, None] == classes[None, :]).to(logp.dtype)
    return -(logp * onehot).sum(dim=1).mean()


def class_accuracy(class_logits: Tensor, labels: Tensor) -> Tensor:
    """The share of rows whose largest class logit is their label (a 0-d float32 tensor, no host sync)."""
    return (class_logits.argmax(dim=1) == labels).float().mean()
