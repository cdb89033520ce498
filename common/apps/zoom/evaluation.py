"""The lesion evaluation: each trained stage (zoom-in only, zoom-in & zoom-out) with each inference mode (sliding
window over the whole volume, the original's centre crop) on the same held-out subjects; under ``torchrun`` the
subjects are dealt over the ranks and rank 0 writes the reports of all of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from torch import nn

from common.apps.zoom.report import summarise_settings, write_reports
from common.metrics.lesion import lesion_scores
from common.utils.distributed import gather, is_main_process, shard

__all__ = ["LesionEvaluation"]

logger = logging.getLogger(__name__)


class LesionEvaluation:
    """Score every (model, inference) setting on every item of ``data`` with :func:`~common.metrics.lesion_scores`
    and write the reports (:func:`~common.apps.zoom.write_reports`).

    Args:
        data: items ``{"image": (1, H, W, D), "label": (1, H, W, D) 0/1, "case": id}`` as the bundle's deterministic
            transforms give them (MetaTensors: the voxel size is read from ``pixdim``, in mm).
        models: name -> trained network (logits ``(B, 1, H, W, D)``), e.g. ``{"zoom-in": ..., "zoom-in & out": ...}``.
        inferers: name -> MONAI inferer, e.g. ``{"sliding window": SlidingWindowInferer, "centre crop":
            CentreCropInferer}``.
        output_dir: where ``lesion_scores.csv``, ``lesion_summary.csv``, ``lesion_differences.csv``,
            ``lesion_report.md``, ``lesion_dice.png`` go.
        device, amp: where and how the networks run (bf16 autocast on CUDA when ``amp``).
        threshold: on the sigmoid probability.
        connectivity: of the lesions for the challenge metrics.

    ``run()`` returns the per-subject rows (``model``, ``inference``, ``case``, the scores and ``seconds``, the time of
    the prediction alone) and logs the summary. Under ``torchrun`` (process group joined, e.g. by
    :func:`~common.utils.distributed.init_distributed`) each rank loads and scores its share of ``data``
    (:func:`~common.utils.distributed.shard`); every rank returns all rows, in the order one process gives them
    (settings in the order of ``models`` and ``inferers``, subjects in the order of ``data``), and rank 0 writes the
    reports.
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        models: Mapping[str, nn.Module],
        inferers: Mapping[str, Inferer],
        output_dir: str | Path,
        device: str | torch.device = "cpu",
        amp: bool = False,
        threshold: float = 0.5,
        connectivity: int = 26,
    ) -> None:
        if not models or not inferers:
            raise ValueError("models, inferers: expected at least one of each, found none")
        self.data = data
        self.models = dict(models)
        self.inferers = dict(inferers)
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.amp = amp
        self.threshold = threshold
        self.connectivity = connectivity

    def _predict(self, network: nn.Module, inferer: Inferer, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        x = torch.as_tensor(image).float()[None].to(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = inferer(x, network)
        prob = torch.sigmoid(torch.as_tensor(logits).float())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return (prob[0, 0] > self.threshold).cpu(), time.perf_counter() - t0

    def run(self) -> list[dict]:
        scored: list[tuple[tuple[int, int, int], dict]] = []  # ((model, inference, subject) positions, row)
        items = {k: self.data[k] for k in shard(range(len(self.data)))}  # this rank's, loaded once for every setting
        for m, (model_name, network) in enumerate(self.models.items()):
            network = network.to(self.device).eval()
            for i, (inference, inferer) in enumerate(self.inferers.items()):
                for k, item in items.items():
                    image, label = item["image"], item["label"]
                    spacing = tuple(float(s) for s in image.pixdim[:3]) if isinstance(image, MetaTensor) else None
                    pred, seconds = self._predict(network, inferer, image)
                    scores = lesion_scores(pred, torch.as_tensor(label)[0], spacing, self.connectivity)
                    row = {"model": model_name, "inference": inference, "case": item["case"], **scores}
                    scored.append(((m, i, k), row | {"seconds": seconds}))
        rows = [row for _, row in sorted(gather(scored), key=lambda s: s[0])]
        if not is_main_process():
            return rows
        write_reports(rows, self.output_dir)
        for r in summarise_settings(rows):
            logger.info(
                "%s, %s: micro-DSC %.3f, DSC %.3f, HD %.1f mm, ASSD %.2f mm, TPR %.3f, precision %.3f, lesion F1 %.3f",
                r["model"],
                r["inference"],
                r["micro_dice"],
                r["dice_mean"],
                r["hd_mm_mean"],
                r["assd_mm_mean"],
                r["tpr_mean"],
                r["precision_mean"],
                r["lesion_f1_mean"],
            )
        logger.info("lesion evaluation written to %s", self.output_dir)
        return rows
