"""Stage 6, evaluate: are the fake tiles convincing, and is the model copying its training set?

Inputs (all through the :mod:`satgan.arrays` contract, memory-mapped): the training tiles
``tiles.npy``, the held-out real tiles ``holdout.npy`` (never trained on) and the generated
``samples.npy``. Outputs in the eval folder:

- ``metrics.json``: every number (judge, SWD, colour histograms, memorization, diversity;
  FID/KID only when computed), numeric only, so ``dvc metrics diff`` compares runs;
- ``fid_kid.json``: FID/KID, or ``"not computed"`` with the reason;
- ``turing_grid.png`` + ``turing_key.json`` + ``quiz.html``: the Turing test (:mod:`satgan.turing`);
- ``closest_pairs.png``: the samples most similar to a training tile, each beside that tile.

Deterministic: every random choice is drawn from ``evaluate.seed`` and the judge trains on one
thread under deterministic algorithms (:mod:`satgan.judge`), so two runs on the same samples
and held-out tiles write the same metrics.json.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from satgan import metrics, names
from satgan.arrays import open_prepared
from satgan.errors import DataError, ParamsError
from satgan.fsutil import write_json_atomic
from satgan.imageops import save_grid
from satgan.judge import JudgeParams, judge
from satgan.params import check
from satgan.report import write_report
from satgan.turing import write_turing_test


@dataclass(frozen=True)
class TuringParams:
    """``evaluate.turing``: the mixed grid and quiz."""

    n_real: int
    n_fake: int
    nrow: int

    def __post_init__(self) -> None:
        check("n_real", self.n_real >= 1, "an integer >= 1", self.n_real)
        check("n_fake", self.n_fake >= 1, "an integer >= 1", self.n_fake)
        check("nrow", self.nrow >= 1, "an integer >= 1", self.nrow)


@dataclass(frozen=True)
class SwdParams:
    """``evaluate.swd``: sliced Wasserstein distance on Laplacian-pyramid patches."""

    patches_per_image: int
    patch_size: int
    n_projections: int
    repeats: int

    def __post_init__(self) -> None:
        check("patches_per_image", self.patches_per_image >= 1, "an integer >= 1", self.patches_per_image)
        check("patch_size", 1 <= self.patch_size <= 16, "1..16 (the coarsest level is 16 px)", self.patch_size)
        check("n_projections", self.n_projections >= 1, "an integer >= 1", self.n_projections)
        check("repeats", self.repeats >= 1, "an integer >= 1", self.repeats)


@dataclass(frozen=True)
class MemorizationParams:
    """``evaluate.memorization``: nearest training tile of each sample."""

    top_k: int
    chunk_size: int
    ssim_threshold: float
    n_pairs_image: int

    def __post_init__(self) -> None:
        check("top_k", self.top_k >= 1, "an integer >= 1", self.top_k)
        check("chunk_size", self.chunk_size >= 1, "an integer >= 1", self.chunk_size)
        check("ssim_threshold", -1.0 < self.ssim_threshold < 1.0, "an SSIM in (-1, 1)", self.ssim_threshold)
        check("n_pairs_image", self.n_pairs_image >= 1, "an integer >= 1", self.n_pairs_image)


@dataclass(frozen=True)
class DiversityParams:
    """``evaluate.diversity``: mean pairwise SSIM within fake against within real tiles."""

    max_pairs: int
    margin: float

    def __post_init__(self) -> None:
        check("max_pairs", self.max_pairs >= 1, "an integer >= 1", self.max_pairs)
        check("margin", 0.0 <= self.margin < 2.0, "an SSIM difference in [0, 2)", self.margin)


@dataclass(frozen=True)
class EvaluateParams:
    """params.yaml ``evaluate:``."""

    seed: int
    turing: TuringParams
    judge: JudgeParams
    swd: SwdParams
    histogram_bins: int
    memorization: MemorizationParams
    diversity: DiversityParams
    inception_weights: str

    def __post_init__(self) -> None:
        check("histogram_bins", self.histogram_bins >= 2, "an integer >= 2", self.histogram_bins)


def fid_kid(real: np.ndarray, fake: np.ndarray, weights: str) -> dict[str, Any]:
    """FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) via torch-fidelity with local Inception weights.

    real (N, C, H, W), fake (M, C, H, W) in [-1, 1]. ``weights`` == "" means not computed:
    no package ships the Inception weights and these machines cannot download them, so
    the result records why instead of a number. A path that is set must exist and
    torch-fidelity must be installed; otherwise a :class:`ParamsError` names the key.
    """
    if weights == "":
        return {"fid": "not computed", "kid": "not computed",
                "reason": "evaluate.inception_weights is empty: no local Inception weights (no network to fetch them)"}
    if not Path(weights).is_file():
        raise ParamsError(f"evaluate.inception_weights: {weights}: file not found")
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ParamsError(
            f"evaluate.inception_weights is set ({weights}) but torch-fidelity is not installed: "
            "`pip install torch-fidelity`, or set evaluate.inception_weights: \"\" to skip FID/KID"
        )
    import torch
    import torch_fidelity

    from satgan.imageops import denormalize

    class _Uint8(torch.utils.data.Dataset):
        def __init__(self, x: np.ndarray) -> None:
            self.x = x

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> torch.Tensor:
            hwc = denormalize(np.asarray(self.x[i], np.float32))
            if hwc.shape[2] == 1:  # Inception expects RGB
                hwc = np.repeat(hwc, 3, axis=2)
            return torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))

    res = torch_fidelity.calculate_metrics(
        input1=_Uint8(fake), input2=_Uint8(real), cuda=False, fid=True, kid=True, verbose=False,
        kid_subset_size=min(len(real), len(fake), 1000), feature_extractor_weights_path=weights,
    )
    return {"fid": float(res["frechet_inception_distance"]), "kid": float(res["kernel_inception_distance_mean"]),
            "reason": f"computed with torch-fidelity and {weights}"}


def _load(path: Path, what: str) -> tuple[np.ndarray, dict[str, Any]]:
    """A prepared-contract array (memory-mapped) with at least 2 tiles, and its sidecar."""
    arr, meta = open_prepared(path)
    if len(arr) < 2:
        raise DataError(f"{path}: expected at least 2 {what} tiles, got {len(arr)}")
    return arr, meta


def evaluate(prepared_dir: str | Path, samples_dir: str | Path, out_dir: str | Path, params: EvaluateParams,
             live_dir: str | Path | None = None) -> dict[str, Any]:
    """Run every check and write metrics.json, fid_kid.json, the Turing test and closest_pairs.png; returns the metrics.

    With ``live_dir`` (train's dvclive folder) it ends by writing ``report.html`` and
    ``headline.json`` (:func:`satgan.report.write_report`); a missing live folder only makes
    the report's training sections read "not available".
    """
    prepared, out = Path(prepared_dir), Path(out_dir)
    train = _load(prepared / names.TRAIN_TILES, "training")[0]
    holdout = np.asarray(_load(prepared / names.HOLDOUT_TILES, "held-out real")[0], np.float32)
    samples_npy = Path(samples_dir) / names.SAMPLES
    fake_arr, fake_meta = _load(samples_npy, "generated")
    if not {"model", "architecture"} <= set(fake_meta):
        raise DataError(f"{samples_npy.with_suffix('.json')}: expected the 'model' and 'architecture' keys the "
                        f"generate stage writes, got {sorted(fake_meta)}")
    fake = np.asarray(fake_arr, np.float32)
    if not train.shape[1:] == holdout.shape[1:] == fake.shape[1:]:
        raise DataError(
            f"expected training, held-out and generated tiles of one (C, H, W), got {tuple(train.shape[1:])}, "
            f"{tuple(holdout.shape[1:])} and {tuple(fake.shape[1:])} (re-run generate after changing prepare.image_size)"
        )
    out.mkdir(parents=True, exist_ok=True)
    seed = params.seed
    t = params.turing
    turing_paths = write_turing_test(holdout, fake, out, t.n_real, t.n_fake, t.nrow, seed)

    verdict = judge(holdout, fake, params.judge, seed)
    s = params.swd
    swd = metrics.sliced_wasserstein_pyramid(holdout, fake, s.patches_per_image, s.patch_size, s.n_projections, s.repeats, seed)
    hist = metrics.colour_histogram_distance(holdout, fake, params.histogram_bins)

    m = params.memorization
    mem = metrics.memorization(fake, train, m.top_k, m.chunk_size, m.ssim_threshold)
    # The same check on real tiles training never saw: how close an honest new tile gets.
    mem_real = metrics.memorization(holdout, train, m.top_k, m.chunk_size, m.ssim_threshold)
    worst = np.argsort(-mem.ssim)[: m.n_pairs_image]
    pairs = np.stack([x for i in worst for x in (fake[i], np.asarray(train[mem.index[i]], np.float32))])
    save_grid(pairs, out / names.CLOSEST_PAIRS, nrow=2)

    d = params.diversity
    div = metrics.diversity(holdout, fake, d.max_pairs, d.margin, seed)

    extra = fid_kid(holdout, fake, params.inception_weights)
    write_json_atomic(out / names.FID_KID, extra)
    result: dict[str, Any] = {
        "n": {"train": int(len(train)), "holdout": int(len(holdout)), "fake": int(len(fake))},
        "judge": {"accuracy": verdict.accuracy, "auc": verdict.auc, "log_loss": verdict.log_loss,
                  "brier": verdict.brier, "p_value": verdict.p_value, "log10_p_value": verdict.log10_p_value,
                  "n_test": verdict.n_test},
        "swd": swd,
        "colour_hist": hist,
        "memorization": {**mem.summary(), "holdout_frac_above_threshold": mem_real.fraction_above,
                         "holdout_ssim_median": float(np.median(mem_real.ssim))},
        "diversity": {"fake_mean_ssim": div.fake_mean_ssim, "real_mean_ssim": div.real_mean_ssim,
                      "collapsed": int(div.collapsed)},
    }
    if isinstance(extra["fid"], float):
        result["fid"], result["kid"] = extra["fid"], extra["kid"]
    write_json_atomic(out / names.METRICS, result)
    # The model card with its evaluation: data/model/model.json cannot hold these numbers (train
    # runs before evaluate), so this card joins the evaluated model's identity, from the samples'
    # sidecar, with the metrics; `dvc get <repo> data/eval/model_card.json --rev <tag>` fetches it.
    write_json_atomic(out / names.EVAL_MODEL_CARD, {
        "model": fake_meta["model"], "architecture": fake_meta["architecture"], "metrics": result,
    })
    print(
        f"evaluate: judge accuracy {verdict.accuracy:.3f} (AUC {verdict.auc:.3f}, log-loss {verdict.log_loss:.3f}, "
        f"p={verdict.p_value:.2g}); "
        f"SWD {swd['mean']:.4f}; memorized {mem.fraction_above:.1%} > SSIM {m.ssim_threshold}; "
        f"diversity SSIM fake {div.fake_mean_ssim:.3f} vs real {div.real_mean_ssim:.3f}; quiz: {turing_paths['quiz']}"
    )
    if live_dir is not None:
        print(f"evaluate: report: {write_report(out, samples_dir, live_dir)['report']}")
    return result
