"""common.apps.igs.tasks and the task losses: targets per task, AUC against a brute-force Mann-Whitney count, SSIM
and PSNR against scikit-image, the classification and reconstruction losses, the random training undersampling, and
IGS, LOUPE and the comparison on a classifier and a reconstructor."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn

from common.apps.igs import (
    LOUPE,
    ClassificationScores,
    IterativeGradientSampling,
    PatternComparison,
    ReconstructionScores,
    SegmentationScores,
    igs_loss,
    pattern_scores,
    task_slices,
)
from common.transforms import KSpaceUndersample, RandKSpaceUndersampled, line_pattern


def brute_force_auc(prob: np.ndarray, label: np.ndarray) -> float:
    """The Mann-Whitney probability that a positive scores above a negative, ties counting half, pair by pair."""
    pos, neg = prob[label == 1], prob[label == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_and_accuracy_against_a_brute_force_count():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 60).astype(np.float32)
    prob = np.round(np.clip(0.3 * label + rng.uniform(0, 0.7, 60), 0, 1), 1).astype(np.float32)  # many ties
    row, _ = ClassificationScores().score(torch.from_numpy(prob), torch.from_numpy(label), [])
    assert row["auc"] == pytest.approx(brute_force_auc(prob, label), abs=1e-6)  # float32 inside MONAI
    assert row["accuracy"] == pytest.approx(float(np.mean((prob > 0.5) == label)), abs=1e-9)
    one_class, _ = ClassificationScores().score(torch.tensor([0.2, 0.9]), torch.tensor([1.0, 1.0]), [])
    assert np.isnan(one_class["auc"]) and one_class["accuracy"] == 0.5


def test_ssim_and_psnr_against_scikit_image():
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 1, (3, 2, 24, 20)).astype(np.float32)
    pred = np.clip(target + rng.normal(0, 0.1, target.shape), 0, 1).astype(np.float32)
    row, _ = ReconstructionScores(["a", "b"]).score(torch.from_numpy(pred), torch.from_numpy(target), [])
    for c, name in enumerate("ab"):
        ssim = [
            structural_similarity(
                target[n, c], pred[n, c], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for n in range(3)
        ]
        psnr = [peak_signal_noise_ratio(target[n, c], pred[n, c], data_range=1.0) for n in range(3)]
        assert row[f"ssim_{name}"] == pytest.approx(np.mean(ssim), abs=1e-4)
        assert row[f"psnr_{name}"] == pytest.approx(np.mean(psnr), abs=1e-3)
    assert row["ssim"] == pytest.approx((row["ssim_a"] + row["ssim_b"]) / 2)
    assert row["psnr"] == pytest.approx((row["psnr_a"] + row["psnr_b"]) / 2)


def test_task_losses_against_references():
    logits, label = torch.randn(5, 2), torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0]])
    expected = nn.functional.cross_entropy(logits, label[:, 0].long())
    assert torch.allclose(igs_loss("ce")(logits, label), expected)
    rng = np.random.default_rng(2)
    target = rng.uniform(0, 1, (2, 1, 24, 24)).astype(np.float32)
    out = np.clip(target + rng.normal(0, 0.2, target.shape), 0, 1).astype(np.float32)
    ssim = np.mean(
        [
            structural_similarity(
                target[n, 0], out[n, 0], data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
            for n in range(2)
        ]
    )
    l1 = float(np.abs(out - target).mean())
    o, t = torch.from_numpy(out), torch.from_numpy(target)
    assert float(igs_loss("l1")(o, t)) == pytest.approx(l1, abs=1e-6)
    assert float(igs_loss("ssim")(o, t)) == pytest.approx(1 - ssim, abs=1e-4)
    assert float(igs_loss("ssim_l1")(o, t)) == pytest.approx(0.84 * (1 - ssim) + 0.16 * l1, abs=1e-4)


def test_task_slices_and_scorers():
    image = np.stack([np.arange(12, dtype=np.float32).reshape(3, 4), np.zeros((3, 4), np.float32)])
    items = [{"image": image, "label": np.zeros((1, 3, 4), np.uint8), "tumour": t, "patient": "p"} for t in (0, 1)]
    assert task_slices(items, "segmentation") == items
    assert [d["label"].tolist() for d in task_slices(items, "classification")] == [[0.0], [1.0]]
    recon = task_slices(items, "reconstruction")[0]["label"]
    assert np.allclose(recon[0], image[0] / 11.0) and not recon[1].any()  # per channel to [0, 1]; zero stays zero
    assert items[0]["label"].shape == (1, 3, 4)  # the input dicts are not changed
    with pytest.raises(ValueError, match="expected a 'tumour' flag"):
        task_slices([{"image": image}], "classification")
    with pytest.raises(ValueError, match="task: expected one of segmentation, classification, reconstruction"):
        task_slices(items, "detection")
    # segmentation without regions scores each foreground class as a region named after it
    assert SegmentationScores(["bg", "a", "b"]).regions == {"a": (1,), "b": (2,)}
    with pytest.raises(ValueError, match="regions: expected none for the classification task"):
        pattern_scores("classification", ["no", "yes"], {"x": (1,)})
    with pytest.raises(ValueError, match="expected 2 classes"):
        pattern_scores("classification", ["a", "b", "c"])


def test_random_training_undersampling_draws_a_seeded_pattern_per_call():
    image = {"image": torch.rand(2, 32, 16)}
    a = RandKSpaceUndersampled("image", accelerations=(4, 8), pe_dim=-2).set_random_state(3)
    b = RandKSpaceUndersampled("image", accelerations=(4, 8), pe_dim=-2).set_random_state(3)
    first, again = a(image)["image"], b(image)["image"]
    assert torch.equal(first, again) and not torch.equal(first, a(image)["image"])
    op = b.op  # the draw of b's next call, replayed with the fixed-pattern transform
    out = b(image)["image"]
    cf = {4.0: 0.08, 8.0: 0.04}[op._acceleration]
    expected = KSpaceUndersample(line_pattern("random", op._acceleration, cf, op._seed), pe_dim=-2)(image["image"])
    assert torch.allclose(out, expected)
    with pytest.raises(ValueError, match="expected a centre fraction for every acceleration"):
        RandKSpaceUndersampled("image", accelerations=(3,))


class MeanClassifier(nn.Module):
    """Two logits per slice from the mean of the centre rows of the z-scored input: (B, C, H, W) -> (B, 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[-2]
        return self.fc(x[:, :, h // 2 - 2 : h // 2 + 2].abs().mean((1, 2, 3))[:, None])


def _slices(n: int, size: int = 16) -> list[dict]:
    rng = np.random.default_rng(4)
    out = []
    for i in range(n):
        image = rng.uniform(0.5, 1.0, (2, size, size)).astype(np.float32)
        if i % 2:
            image[:, size // 2 - 2 : size // 2 + 2, 4:12] += 2.0  # "tumour": a bright band
        out.append({"image": image, "label": np.zeros((1, size, size), np.uint8), "tumour": bool(i % 2)})
        out[-1].update(patient=f"p{i // 4}", phase="", slice=i % 4)
    return out


@pytest.mark.parametrize("task", ["classification", "reconstruction"])
def test_search_loupe_and_comparison_run_for_the_task(task, tmp_path):
    torch.manual_seed(0)
    data = task_slices(_slices(8), task)
    if task == "classification":
        net, loss, names = MeanClassifier(), "ce", ["no_tumour", "tumour"]
    else:
        net, loss, names = nn.Conv2d(2, 2, 3, padding=1), "ssim_l1", ["a", "b"]
    kw = dict(loss=loss, per_channel=True, pe_dim=-2, forward_model="phase")
    IterativeGradientSampling(net, data, tmp_path, (8, 4), **kw).run()
    LOUPE(net, data, tmp_path, (8, 4), epochs=1, **kw).run()
    out = tmp_path / "eval"
    settings = dict(accelerations=(4, 8), patterns=("igs", "loupe", "center", "random"), seeds=(0, 1))
    settings.update(fine_tune_seeds=(0,), forward_models=("phase",), fine_tune_epochs=1, pe_dim=-2, batch_size=4)
    rows = PatternComparison(net, data, data, out, tmp_path, names, task=task, fine_tune_loss=loss, **settings).run()
    keys = ("accuracy", "auc") if task == "classification" else ("ssim", "psnr", "ssim_a", "psnr_b")
    assert len(rows) == (1 + 2 * (3 + 2)) + (1 + 2 * (3 + 1))  # full + 2 accelerations; fine-tuned random: seed 0
    for r in rows:
        assert all(k in r for k in keys) and "dice_tumour" not in r and "mean_fg" not in r
    csv_rows = list(csv.DictReader(open(out / "pattern_comparison.csv")))
    assert len(csv_rows) == len(rows) and "surface_missed" not in csv_rows[0]
    figure = "auc_vs_acceleration.png" if task == "classification" else "ssim_vs_acceleration.png"
    assert (out / figure).is_file() and not list(out.glob("*_raw.csv"))
    md = (out / "pattern_comparison.md").read_text()
    assert ("**ROC AUC" in md) if task == "classification" else ("**SSIM" in md and "**PSNR (dB)" in md)
    assert f"Not computed for the {task} task: its scores are computed over the test slices" in md
    assert not (out / "pattern_comparison_intervals.csv").exists()  # no per-volume values to pair
