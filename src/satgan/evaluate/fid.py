"""FID and KID on Inception features: torch-fidelity's InceptionV3 with its standard weights.

``evaluate.inception_weights`` chooses the weights:

- ``""``: off. FID/KID are recorded as not computed, with the reason.
- ``"auto"``: the standard weights torch-fidelity publishes (the TensorFlow Inception graph of
  2015-12-05 that FID was defined with, converted to PyTorch; its ``URL_INCEPTION_V3``), fetched
  on first use into torch's hub cache (``$TORCH_HOME/hub/checkpoints``, by default
  ``~/.cache/torch/hub/checkpoints``), checked against the hash in the file name, and read from
  there afterwards. Without a network they are recorded as not computed, with the reason, and
  evaluate goes on: one warning line, exit status 0.
- a path: a weights file in that format (for example the cached file copied to a machine
  without a network). A path that does not exist is an error naming the key.

Why not ``import torch_fidelity``: its package ``__init__`` imports torchvision (for its CLIP and
VGG extractors and its datasets), and the torchvision wheel on PyPI is built against the CUDA
torch wheel, so it cannot load next to the CPU-only torch of the project machines. The Inception
extractor itself needs only torch, so :func:`inception_module` loads that one module of the
installed torch-fidelity, and FID/KID are computed here from its 2048-d pool features, with
torch-fidelity's definitions (FID: Heusel et al. 2017; KID: Bińkowski et al. 2018, unbiased
MMD² with the cubic polynomial kernel k(x, y) = (x·y / d + 1)³, averaged over random subsets).
For the same reason ``make setup`` installs neither (requirements.txt installs nothing that
cannot be imported): FID is opt-in, :data:`INSTALL_HINT`.

torch-fidelity loads a weights path with ``torch.load(weights_only=False)``, which would unpickle
arbitrary objects; satgan builds the extractor with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1`` set, so
the file is read by torch's restricted (tensors-only) unpickler, as satgan's checkpoints are.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pickle
import re
import socket
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from satgan.errors import DataError, ParamsError

AUTO = "auto"
KEY = "evaluate.inception_weights"
FEATURE = "2048"  # torch-fidelity's default FID/KID layer: InceptionV3's pool features
KID_SUBSETS = 100  # torch-fidelity's defaults
KID_MAX_SUBSET = 1000
FETCH_TIMEOUT_S = 60.0  # per socket operation while fetching the weights (a silent network must not hang evaluate)
_INCEPTION_MODULE = "torch_fidelity.feature_extractor_inceptionv3"
# How to add FID: torch-fidelity alone (its InceptionV3 module needs torch only), not the torchvision pip would pull in.
INSTALL_HINT = "`pip install --no-deps torch-fidelity==0.4.0`"


class WeightsUnavailable(Exception):
    """``auto`` could not provide the weights (no torch-fidelity, no network); the message says why."""


def inception_module() -> types.ModuleType:
    """torch-fidelity's ``feature_extractor_inceptionv3`` module, imported without the package ``__init__``.

    Raises ModuleNotFoundError when torch-fidelity is not installed. See the module docstring
    for why the package itself is not imported.
    """
    if _INCEPTION_MODULE in sys.modules:
        return sys.modules[_INCEPTION_MODULE]
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("torch_fidelity")
    placeholder = None
    if "torch_fidelity" not in sys.modules:
        # A bare package object whose __path__ lets the submodules be found; removed again below,
        # so a later `import torch_fidelity` (where torchvision loads) runs the real __init__.
        placeholder = types.ModuleType("torch_fidelity")
        placeholder.__path__ = list(spec.submodule_search_locations)
        sys.modules["torch_fidelity"] = placeholder
    try:
        return importlib.import_module(_INCEPTION_MODULE)
    finally:
        if placeholder is not None and sys.modules.get("torch_fidelity") is placeholder:
            del sys.modules["torch_fidelity"]


def weights_url() -> str:
    """The URL of the standard weights, as the installed torch-fidelity names it."""
    return str(inception_module().URL_INCEPTION_V3)


def cached_weights_path(url: str) -> Path:
    """Where torch's hub cache keeps the file of ``url`` (``torch.hub.get_dir()/checkpoints/<file name>``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url.split("?")[0]).name


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def fetch_weights(url: str, say: Any = None) -> Path:
    """The cached copy of ``url``, fetched first when absent; raises :class:`WeightsUnavailable` with the reason.

    The download is torch.hub's (a temp file renamed into place, so a broken transfer leaves
    nothing behind), checked against the sha256 prefix in the file name (``-6726825d.pth``).
    """
    dest = cached_weights_path(url)
    if dest.is_file():
        return dest
    found = re.search(r"-([a-f0-9]{8,})\.", dest.name)
    if say is not None:
        say(f"fetching the Inception weights (about 92 MB, once) from {url} into {dest}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(FETCH_TIMEOUT_S):
            torch.hub.download_url_to_file(url, str(dest), found.group(1) if found else None, progress=False)
    except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts and a full disk are all OSError
        raise WeightsUnavailable(f"cannot fetch the Inception weights from {url}: {exc}") from None
    except RuntimeError as exc:  # download_url_to_file's hash mismatch
        raise WeightsUnavailable(f"the Inception weights fetched from {url} are damaged: {exc}") from None
    return dest


def resolve_weights(setting: str, say: Any = None) -> Path | None:
    """The weights file for ``setting`` ("" -> None); see the module docstring.

    Raises :class:`WeightsUnavailable` when ``auto`` cannot get them, and :class:`ParamsError`
    (naming the key) for a path that does not exist or a path set without torch-fidelity.
    """
    if setting == "":
        return None
    try:
        inception_module()
    except ModuleNotFoundError:
        if setting == AUTO:
            raise WeightsUnavailable(f"torch-fidelity is not installed ({INSTALL_HINT})") from None
        raise ParamsError(f"{KEY} is set ({setting}) but torch-fidelity is not installed: "
                          f"{INSTALL_HINT}, or set {KEY}: \"\" to skip FID/KID") from None
    if setting == AUTO:
        return fetch_weights(weights_url(), say)
    path = Path(setting)
    if not path.is_file():
        raise ParamsError(f"{KEY}: {setting}: file not found (a weights file, or `auto` to fetch the standard ones)")
    return path


@contextlib.contextmanager
def _weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` in the block uses the restricted unpickler, whatever its caller asked for."""
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


TORCH_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container (PyTorch >= 1.6)
PICKLE_PROTO = 0x80  # the first byte of a pickle of protocol 2+ (legacy torch.save files)


def check_weights_file(weights: Path) -> None:
    """One :class:`DataError` line naming ``weights`` unless it looks like a weights file of its kind.

    A ``.safetensors`` name must hold a valid safetensors header (checked by the safetensors
    library, which never unpickles: a pickle renamed ``.safetensors`` is refused here); any other
    name must start as a torch.save file does (a zip, or a legacy pickle that torch's tensors-only
    unpickler then reads). A FIFO or device is refused before it is opened for reading.
    """
    from safetensors import SafetensorError, safe_open

    from satgan.fsutil import FileTooLarge, UnsafePath, open_regular

    try:
        with open_regular(weights) as fh:
            head = fh.read(8)
    except (UnsafePath, FileTooLarge, OSError) as exc:
        raise DataError(f"{KEY}: {weights}: cannot read it as a weights file: {exc}") from None
    if weights.suffix.lower() == ".safetensors":
        try:
            with safe_open(str(weights), framework="pt") as fh:
                keys = list(fh.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise DataError(f"{KEY}: {weights}: not a safetensors file ({' '.join(str(exc).split())[:200]})") from None
        if not keys:
            raise DataError(f"{KEY}: {weights}: a safetensors file holding no tensors")
        return
    if not (head.startswith(TORCH_ZIP_MAGIC) or (head[:1] and head[0] == PICKLE_PROTO)):
        raise DataError(f"{KEY}: {weights}: not a weights file: expected a torch .pth (zip) or a .safetensors file, "
                        f"it starts with {head!r}")


def load_extractor(weights: Path) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 feature extractor (eval mode, 2048-d features) with ``weights``.

    A file that is not such weights (another network, not a torch file, or one holding more
    than tensors) is a :class:`DataError` naming it (:func:`check_weights_file` first).
    """
    from safetensors import SafetensorError

    check_weights_file(Path(weights))
    cls = inception_module().FeatureExtractorInceptionV3
    try:
        with _weights_only_loads():
            return cls("inception-v3-compat", [FEATURE], feature_extractor_weights_path=str(weights))
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, AttributeError,
            SafetensorError) as exc:
        msg = " ".join(str(exc).split())[:300]
        raise DataError(f"{weights}: not torch-fidelity's InceptionV3 weights ({type(exc).__name__}: {msg}); "
                        f"delete it to fetch it again (auto), or point {KEY} at another file") from None


def inception_features(images: np.ndarray, extractor: torch.nn.Module, batch: int = 32) -> np.ndarray:
    """(N, C, H, W) tiles in [-1, 1] -> (N, 2048) float64 Inception features.

    Tiles go in as uint8 RGB (the extractor resizes them to 299 px as TensorFlow did); a
    1-channel tile is repeated to three.
    """
    device = next(extractor.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = np.asarray(images[start:start + batch], np.float32)
            u8 = np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)
            if u8.shape[1] == 1:
                u8 = np.repeat(u8, 3, axis=1)
            (feats,) = extractor(torch.from_numpy(u8).to(device))
            out.append(feats.double().cpu().numpy())
    return np.concatenate(out)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between feature sets a (N, D) and b (M, D): |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^½).

    With A, B the centred sets, S_a = AᵀA / (N-1) and S_b = BᵀB / (M-1). The non-zero
    eigenvalues of S_a S_b are those of C Cᵀ / ((N-1)(M-1)) with C = A Bᵀ (N x M), i.e. the
    squared singular values of C, so tr (S_a S_b)^½ = ||C||_* / sqrt((N-1)(M-1)) (nuclear norm):
    real and exact for rank-deficient covariances, and a small SVD instead of D x D matrix roots
    when there are fewer tiles than features. Larger sets use the D x D form
    sqrt-eigenvalues of S_a^½ S_b S_a^½. FID(x, x) is 0 up to rounding.
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"expected two (N, D) feature sets with N >= 2 and one D, got {a.shape} and {b.shape}")
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n, m, d = len(a), len(b), a.shape[1]
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b
    tr_a, tr_b = float((ca * ca).sum()) / (n - 1), float((cb * cb).sum()) / (m - 1)
    if n * m * min(n, m) <= d ** 3:
        tr_covmean = float(np.linalg.svd(ca @ cb.T, compute_uv=False).sum()) / np.sqrt((n - 1) * (m - 1))
    else:
        s_a, s_b = ca.T @ ca / (n - 1), cb.T @ cb / (m - 1)
        w, v = np.linalg.eigh(s_a)
        root_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
        inner = np.linalg.eigvalsh(root_a @ s_b @ root_a)
        tr_covmean = float(np.sqrt(np.clip(inner, 0.0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + tr_a + tr_b - 2.0 * tr_covmean)


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int, subset_size: int, seed: int) -> tuple[float, float]:
    """KID between feature sets a (N, D) and b (M, D): mean and std of the unbiased MMD² over random subsets.

    Each of ``subsets`` draws takes ``subset_size`` rows of each set without replacement
    (seeded); kernel k(x, y) = (x·y / D + 1)³ (Bińkowski et al. 2018, as torch-fidelity).
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected two (N, D) feature sets with one D, got {a.shape} and {b.shape}")
    if not 2 <= subset_size <= min(len(a), len(b)):
        raise ValueError(f"expected 2 <= subset_size <= {min(len(a), len(b))}, got {subset_size}")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    m = subset_size
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        k_xx = (x @ x.T / d + 1.0) ** 3
        k_yy = (y @ y.T / d + 1.0) ** 3
        k_xy = (x @ y.T / d + 1.0) ** 3
        mmd2 = ((k_xx.sum() - np.trace(k_xx)) + (k_yy.sum() - np.trace(k_yy))) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m)
        values.append(mmd2)
    return float(np.mean(values)), float(np.std(values))


def not_computed(reason: str) -> dict[str, Any]:
    """The fid_kid.json record when FID/KID were not computed."""
    return {"fid": "not computed", "kid": "not computed", "reason": reason}


def fid_kid(real: np.ndarray, fake: np.ndarray, setting: str, seed: int, say: Any = None, warn: Any = None) -> dict[str, Any]:
    """FID and KID of fake (M, C, H, W) against real (N, C, H, W) tiles in [-1, 1], as the fid_kid.json record.

    ``setting`` is ``evaluate.inception_weights``. Off, or ``auto`` without a network or
    torch-fidelity: ``fid``/``kid`` are ``"not computed"`` and ``reason`` says why (``warn``
    gets that one line for ``auto``). ``say`` gets progress lines (the fetch).
    """
    if setting == "":
        return not_computed(f"{KEY} is \"\" (off); set it to `auto` to fetch the standard Inception weights, "
                            "or to a local weights file")
    try:
        weights = resolve_weights(setting, say)
    except WeightsUnavailable as exc:
        if warn is not None:
            warn(f"FID/KID not computed: {exc}")
        return not_computed(f"{KEY} is auto, but {exc}")
    assert weights is not None
    extractor = load_extractor(weights)
    if torch.cuda.is_available():
        extractor = extractor.to("cuda")
    fr = inception_features(real, extractor)
    ff = inception_features(fake, extractor)
    subset = min(KID_MAX_SUBSET, len(fr), len(ff))
    kid, kid_std = kernel_inception_distance(fr, ff, KID_SUBSETS, subset, seed)
    return {
        "fid": frechet_distance(fr, ff), "kid": kid, "kid_std": kid_std, "n_real": len(fr), "n_fake": len(ff),
        "kid_subset_size": subset, "weights": str(weights),
        "reason": f"computed with torch-fidelity's InceptionV3 ({FEATURE}-d pool features) and {weights}",
    }
