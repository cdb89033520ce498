"""Interactive evaluation of DeepIGeoS on held-out cases: the automatic segmentations, then rounds of simulated clicks
refined by R-Net, R-Net + CRF-Net(fu), R-Net on Euclidean maps (the ablation) and, as a baseline without a network,
balls painted at the clicks, scored after every round. Under ``torchrun`` the cases are dealt over the ranks and rank 0
writes the reports, the same as one process writes."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.inferers import Inferer
from monai.metrics import compute_dice
from monai.utils.type_conversion import convert_to_tensor
from torch import nn

from common.apps.deepigeos.refinement import refine
from common.apps.deepigeos.report import Pair, plot_dice_vs_clicks, summarise_rounds, write_reports
from common.apps.deepigeos.rounds import REFINE_FROM, Round, Step, ball_step, simulate_rounds
from common.apps.deepigeos.samples import image_spacing, segment
from common.metrics.surface import surface_distances
from common.networks.blocks import CRFNet
from common.transforms.clicks import SLICE_CHOICES
from common.utils.distributed import is_main_process, map_in_order
from common.utils.stats import N_RESAMPLES

__all__ = ["AUTOMATIC", "INTERACTIVE", "InteractiveEvaluation"]

logger = logging.getLogger(__name__)

AUTOMATIC = {"pnet": "P-Net", "pnet_crf": "P-Net + CRF-Net(f)"}
"""The automatic methods (round 0) and their names in the tables."""

INTERACTIVE = {
    "rnet": "R-Net",
    "rnet_crf": "R-Net + CRF-Net(fu)",
    "rnet_euclidean": "R-Net, Euclidean maps",
    "balls": "Balls at the clicks, no network",
}
"""The refinement methods and their names in the tables."""


@dataclass(frozen=True)
class _Refiner:
    key: str
    network: nn.Module
    crf: CRFNet | None
    lamb: float
    scale: float


def _dice(pred: torch.Tensor, label: torch.Tensor) -> float:
    """Binary Dice of two label maps ``(*S)`` (foreground = non-zero), MONAI's ``compute_dice``; 1 when both are
    empty."""
    p, g = ((x != 0).float()[None, None] for x in (pred, label))
    return float(compute_dice(p, g, ignore_empty=False))


def _check_cases(name: str, data: object) -> None:
    """Refuse ``data`` that cannot be dealt over ranks by index (a generator, say)."""
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            f"{name}: expected a sequence of cases (with a length and indexable, e.g. a MONAI Dataset), found "
            f"{type(data).__name__}"
        )


class InteractiveEvaluation:
    """Dice and ASSD (mm) of the automatic segmentation and of each refinement method after every round of simulated
    clicks, on held-out cases.

    Per case: P-Net and P-Net + CRF-Net(f) segment the whole (preprocessed) image; the ``start`` one is the initial
    segmentation the user refines. For each refinement method, ``rounds`` rounds follow
    (:func:`~common.apps.deepigeos.simulate_rounds`, as R-Net's training samples draw them): a round of clicks is
    simulated on the errors of the current label (:func:`common.transforms.simulate_clicks`: the slices with the most
    errors as ``slice_choice`` picks them, the DeepIGeoS rule per error region, at most ``max_clicks``), added to the
    clicks of the earlier rounds (a user's clicks stay), and :func:`~common.apps.deepigeos.refine` gives the new label
    from the image, the label it refines and all clicks (geodesic maps on the box around label and clicks, the R-Net,
    and for R-Net + CRF-Net(fu) the CRF with every click clamped). With ``refine_from="initial"`` (default) the label
    R-Net refines is always the initial segmentation, as in DeepIGeoS (R-Net takes "the user interactions with the
    initial segmentation") and as R-Net is trained; with ``"previous"`` it is the label of the round before. The
    clicks of a round are drawn from a random state seeded by ``seed``, the case and the round, so round 1 gives
    every method the same clicks. A round without clicks (no error region large enough) leaves the label as it is.

    Methods: ``rnet`` (R-Net, geodesic maps), ``rnet_crf`` (the R-Net and CRF-Net(fu) trained jointly), when
    ``rnet_euclidean`` is given, that R-Net (trained on Euclidean maps, ``lamb = 0``, scaled by ``euclidean_scale``)
    with Euclidean maps, and when ``ball_radii`` is given, ``balls``: no network, the label refined (the initial or the
    previous one, as for R-Net) with a ball of ``radius`` voxels painted at every click so far
    (:func:`common.transforms.paint_balls`: foreground 1, background 0, clicked voxels keep their label), with the same
    clicks, seeds and rounds. Its radius is the one of ``ball_radii`` with the highest mean Dice after the last round
    on ``validation_data`` (ties: the smaller), chosen when :meth:`run` starts and stated in the report
    (``ball_radius``; one radius without ``validation_data`` is used as given).

    Under ``torchrun`` (the process group joined, e.g. by :func:`common.utils.distributed.init_distributed`) the test
    cases, and the validation cases of the radius choice, are dealt over the ranks (each rank loads and evaluates its
    share; the clicks are seeded by case, so a case gives the same rows on any rank), the rows are gathered in the
    order of ``data`` and rank 0 writes every report: the same files as one process writes (but for the seconds).

    Writes to ``output_dir`` (:func:`~common.apps.deepigeos.report.write_reports`): ``interactive_evaluation.csv``
    (mean, sample sd and the bootstrap interval of the mean over cases per method and round: clicks in the round,
    clicks so far, Dice, ASSD, seconds per refinement step), ``interactive_evaluation_cases.csv`` (one row per case,
    method and round), ``interactive_evaluation_differences.csv`` (the paired per-case differences of :meth:`pairs`
    with their intervals, wins and orderings), ``interactive_evaluation.md`` (the tables, the settings and the
    findings) and ``dice_vs_clicks.png``.

    Args:
        data: preprocessed cases, indexable with a length (e.g. a MONAI ``Dataset``, whose items are loaded one at
            a time): dicts with ``image`` ``(1, *S)`` normalised (a MetaTensor gives the voxel size in mm), ``label``
            ``(1, *S)`` 0/1, ``case`` (id), and ``refine_key`` when R-Net sees the image normalised otherwise.
        pnet, pnet_crf: the automatic networks, ``(1, 1, *S) -> (1, 2, *S)`` logits / log-probabilities.
        rnet: R-Net, ``(1, 4, *R) -> (1, 2, *R)`` logits.
        rnet_crf: the jointly trained R-Net + CRF-Net(fu) (:class:`~common.networks.nets.CRFSegmenter`: its
            ``backbone`` and ``crf`` are used).
        output_dir: where the reports go.
        rnet_euclidean: R-Net trained on Euclidean maps, or ``None`` (no ablation rows).
        euclidean_scale: the ``scale`` of its maps (``1 - exp(-d / scale)``, ``d`` in mm), the value it was trained
            with; the geodesic maps use 1.
        ball_radii: the radii (voxels) the ball baseline chooses from, or ``None`` (no baseline rows).
        validation_data: cases as ``data`` (e.g. the validation fold) on which the radius is chosen.
        rounds: rounds of clicks.
        start: ``"pnet_crf"`` or ``"pnet"``: the automatic label the refinement starts from.
        refine_from: ``"initial"`` (the ``start`` label in every round) or ``"previous"`` (the last round's label).
        margin, geodesic_backend: as in :func:`~common.apps.deepigeos.refine` (the values R-Net was trained with).
        min_size, voxels_per_click, max_clicks: the click rule and the budget of a round.
        slice_choice: how a 3D round picks its slices (:data:`common.transforms.clicks.SLICE_CHOICES`).
        inferer: how the automatic networks see a whole image (default: in one piece).
        device: where the networks run; amp: bfloat16 autocast of the automatic networks on CUDA.
        seed: base of the click seeds.
        spacing: voxel size in mm; ``None``: each image's ``pixdim`` (else 1).
        refine_key: the item's key of the image R-Net (and the geodesic maps) see, on the grid of ``image``
            (``"image"``: the automatic networks' image).
        n_resamples, bootstrap_seed: the bootstrap resamples of the test cases behind every interval of the reports,
            and their seed.
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        pnet: nn.Module,
        pnet_crf: nn.Module,
        rnet: nn.Module,
        rnet_crf: nn.Module,
        output_dir: str | Path,
        rnet_euclidean: nn.Module | None = None,
        euclidean_scale: float = 1.0,
        ball_radii: Sequence[float] | None = None,
        validation_data: Sequence[Mapping] | None = None,
        rounds: int = 5,
        start: str = "pnet_crf",
        refine_from: str = "initial",
        margin: int | Sequence[int] = 16,
        geodesic_backend: str = "fastgeodis",
        min_size: int = 30,
        voxels_per_click: int = 100,
        max_clicks: int | None = 10,
        slice_choice: str = "all_errors",
        inferer: Inferer | None = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        seed: int = 0,
        spacing: Sequence[float] | None = None,
        refine_key: str = "image",
        n_resamples: int = N_RESAMPLES,
        bootstrap_seed: int = 0,
    ) -> None:
        if rounds < 1:
            raise ValueError(f"rounds: expected at least 1 round of clicks, found {rounds}")
        if start not in AUTOMATIC:
            raise ValueError(f"start: expected one of {list(AUTOMATIC)}, found {start!r}")
        if refine_from not in REFINE_FROM:
            raise ValueError(f"refine_from: expected one of {list(REFINE_FROM)}, found {refine_from!r}")
        if slice_choice not in SLICE_CHOICES:
            raise ValueError(f"slice_choice: expected one of {list(SLICE_CHOICES)}, found {slice_choice!r}")
        if ball_radii is not None and (not len(ball_radii) or min(ball_radii) < 0):
            raise ValueError(f"ball_radii: expected radii >= 0 in voxels, found {list(ball_radii)}")
        if ball_radii is not None and len(ball_radii) > 1 and validation_data is None:
            raise ValueError(
                f"validation_data: expected the cases the ball radius is chosen on among {list(ball_radii)}, found None"
            )
        _check_cases("data", data)
        if validation_data is not None:
            _check_cases("validation_data", validation_data)
        if not (hasattr(rnet_crf, "backbone") and isinstance(getattr(rnet_crf, "crf", None), CRFNet)):
            raise ValueError(
                f"rnet_crf: expected R-Net + CRF-Net(fu) as one module with .backbone and .crf (CRFSegmenter), found "
                f"{type(rnet_crf).__name__}"
            )
        self.data = data
        self.device = torch.device(device)
        self.automatic = {"pnet": pnet.to(self.device).eval(), "pnet_crf": pnet_crf.to(self.device).eval()}
        rnet_crf = rnet_crf.to(self.device).eval()
        self.refiners = [
            _Refiner("rnet", rnet.to(self.device).eval(), None, 1.0, 1.0),
            _Refiner("rnet_crf", rnet_crf.backbone, rnet_crf.crf, 1.0, 1.0),
        ]
        if rnet_euclidean is not None:
            net = rnet_euclidean.to(self.device).eval()
            self.refiners.append(_Refiner("rnet_euclidean", net, None, 0.0, float(euclidean_scale)))
        self.ball_radii = None if ball_radii is None else [float(r) for r in ball_radii]
        self.validation_data = validation_data
        self.ball_radius: float | None = None if ball_radii is None or len(ball_radii) > 1 else float(ball_radii[0])
        self.ball_choice: dict[float, float] = {}
        self.output_dir = Path(output_dir)
        self.rounds, self.start, self.refine_from, self.margin = int(rounds), start, refine_from, margin
        self.geodesic_backend = geodesic_backend
        self.min_size, self.voxels_per_click, self.max_clicks = min_size, voxels_per_click, max_clicks
        self.slice_choice = slice_choice
        self.inferer, self.amp, self.seed, self.spacing = inferer, amp, seed, spacing
        self.refine_key = refine_key
        self.n_resamples, self.bootstrap_seed = n_resamples, bootstrap_seed

    def settings(self) -> dict[str, object]:
        """What the table was made with (written into the markdown report)."""
        balls = {}
        if self.ball_radii is not None:
            choice = ", ".join(f"r {r:g}: {d:.4f}" for r, d in self.ball_choice.items())
            balls["ball_radius"] = f"{self.ball_radius:g}" + (
                f" voxels (chosen from {', '.join(f'{r:g}' for r in self.ball_radii)} by the mean Dice after round "
                f"{self.rounds} on the validation cases: {choice})"
                if self.ball_choice
                else " voxels (given)"
            )
        euclidean = [r.scale for r in self.refiners if r.key == "rnet_euclidean"]
        return (
            {
                "rounds": self.rounds,
                "start": AUTOMATIC[self.start],
                "refine_from": self.refine_from,
                "min_size": self.min_size,
                "voxels_per_click": self.voxels_per_click,
                "max_clicks": self.max_clicks,
                "slice_choice": self.slice_choice,
                "margin": self.margin,
                "geodesic_backend": self.geodesic_backend,
                "seed": self.seed,
            }
            | ({"euclidean_scale": euclidean[0]} if euclidean else {})
            | balls
        )

    def _scores(self, pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float]) -> dict[str, object]:
        surface = surface_distances(pred[None, None], label[None, None], spacing, include_background=True)
        return {
            "dice": _dice(pred, label),
            "assd_mm": float(surface.assd[0, 0]),
            "pred_voxels": int((pred != 0).sum()),
            "label_voxels": int((label != 0).sum()),
        }

    def _case(self, item: Mapping) -> list[dict]:
        required = list(dict.fromkeys(["image", "label", "case", self.refine_key]))
        if any(k not in item for k in required):
            raise KeyError(f"data: expected items with the keys {required}, found {sorted(item)}")
        case = str(item["case"])
        spacing = image_spacing(item["image"], self.spacing)
        image = convert_to_tensor(item["image"], dtype=torch.float32, track_meta=False).to(self.device)
        refine_image = convert_to_tensor(item[self.refine_key], dtype=torch.float32, track_meta=False)
        if refine_image.shape != image.shape:
            raise ValueError(
                f"data: expected '{self.refine_key}' on the grid of 'image' {tuple(image.shape)}, found "
                f"{tuple(refine_image.shape)} (case {case})"
            )
        label = convert_to_tensor(item["label"], track_meta=False)[0].cpu() != 0
        rows = []
        labels = {}
        for key, net in self.automatic.items():
            t0 = time.perf_counter()
            labels[key] = segment(net, image, self.inferer, self.device, self.amp)
            rows.append(
                {"case": case, "method": AUTOMATIC[key], "round": 0, "clicks": 0, "clicks_total": 0}
                | self._scores(labels[key], label, spacing)
                | {"seconds": time.perf_counter() - t0}
            )
        for method in self.methods():
            steps = self.simulate(method, refine_image, label, labels[self.start], case, spacing)
            for r, step in enumerate(steps, 1):
                rows.append(
                    {"case": case, "method": INTERACTIVE[method], "round": r, "clicks": step.clicks}
                    | {"clicks_total": step.clicks_total}
                    | self._scores(step.label, label, spacing)
                    | {"seconds": step.seconds}
                )
        last = {r["method"]: r for r in rows}
        logger.info(
            "%s: %s", case, ", ".join(f"{m} Dice {r['dice']:.4f} ({r['clicks_total']} clicks)" for m, r in last.items())
        )
        return rows

    def methods(self) -> list[str]:
        """The keys of :data:`INTERACTIVE` evaluated, in table order."""
        return [r.key for r in self.refiners] + ([] if self.ball_radii is None else ["balls"])

    def pairs(self) -> list[Pair]:
        """The paired comparisons of the reports: P-Net + CRF-Net(f) against P-Net alone; after every round, R-Net +
        CRF-Net(fu) against the no-network baseline (when evaluated) and R-Net on geodesic against R-Net on Euclidean
        maps (when evaluated); and every refinement method after every round against the initial segmentation."""
        methods, rounds, start = self.methods(), range(1, self.rounds + 1), AUTOMATIC[self.start]
        out = [Pair("P-Net + CRF-Net(f) vs P-Net alone", AUTOMATIC["pnet_crf"], 0, AUTOMATIC["pnet"], 0)]
        if "balls" in methods:
            heading = "R-Net + CRF-Net(fu) vs the no-network baseline"
            out += [Pair(heading, INTERACTIVE["rnet_crf"], r, INTERACTIVE["balls"], r) for r in rounds]
        if "rnet_euclidean" in methods:
            heading = "Geodesic vs Euclidean maps (R-Net alone, the ablation)"
            out += [Pair(heading, INTERACTIVE["rnet"], r, INTERACTIVE["rnet_euclidean"], r) for r in rounds]
        for m in methods:
            heading = f"{INTERACTIVE[m]}: each round vs the initial segmentation"
            out += [Pair(heading, INTERACTIVE[m], r, start, 0) for r in rounds]
        return out

    def simulate(
        self,
        method: str,
        image: torch.Tensor,
        label: torch.Tensor,
        start: torch.Tensor,
        case: str,
        spacing: Sequence[float] | None = None,
        radius: float | None = None,
    ) -> list[Round]:
        """The rounds of one refinement method on one case.

        Args:
            method: a key of :data:`INTERACTIVE` among the methods evaluated (``balls``: the chosen radius, or the
                radius ``radius`` when given).
            image: ``(1, *S)`` the image R-Net sees; label: ``(*S)`` ground truth; start: ``(*S)`` the automatic label.
            case: the case id the clicks are seeded with (with :attr:`seed` and the round).
            spacing: voxel size for the maps (``None``: 1).

        Returns: one :class:`~common.apps.deepigeos.Round` per round (:func:`~common.apps.deepigeos.simulate_rounds`):
        the label after it (``(*S)`` int64, CPU), its new clicks and their count, all clicks so far, their count, and
        the seconds of the refinement step (0 for a round without clicks).
        """
        if method not in self.methods():
            raise ValueError(f"method: expected one of {self.methods()}, found {method!r}")
        image = convert_to_tensor(image, dtype=torch.float32, track_meta=False).to(self.device)
        if method == "balls":
            radius = self.ball_radius if radius is None else radius
            if radius is None:
                raise ValueError(
                    "radius: expected the ball radius, found None (run() chooses it on the validation cases)"
                )
            step = ball_step(radius)
        else:
            step = self._network_step(next(r for r in self.refiners if r.key == method), image, spacing)
        return simulate_rounds(
            label,
            start,
            step,
            self.rounds,
            self.seed,
            (case,),
            refine_from=self.refine_from,
            min_size=self.min_size,
            voxels_per_click=self.voxels_per_click,
            max_clicks=self.max_clicks,
            slice_choice=self.slice_choice,
        )

    def _network_step(self, refiner: _Refiner, image: torch.Tensor, spacing: Sequence[float] | None) -> Step:
        """``(label (*S), seeds (2, *S)) -> (new label (*S) int64 on the CPU, seconds)`` by :func:`refine`."""

        def step(base: torch.Tensor, seeds: torch.Tensor) -> tuple[torch.Tensor, float]:
            out = refine(
                image,
                base,
                seeds,
                refiner.network,
                2,
                crf=refiner.crf,
                margin=self.margin,
                spacing=spacing,
                geodesic_backend=self.geodesic_backend,
                lamb=refiner.lamb,
                scale=refiner.scale,
            )
            return out.probabilities.argmax(0).cpu(), sum(out.seconds.values())

        return step

    def _ball_dice(self, item: Mapping) -> dict[float, float]:
        """Radius -> Dice after the last round of the ball baseline on one validation case."""
        case = str(item["case"])
        image = convert_to_tensor(item["image"], dtype=torch.float32, track_meta=False).to(self.device)
        label = convert_to_tensor(item["label"], track_meta=False)[0].cpu() != 0
        start = segment(self.automatic[self.start], image, self.inferer, self.device, self.amp)
        return {
            r: _dice(self.simulate("balls", image, label, start, case, radius=r)[-1].label, label)
            for r in sorted(self.ball_radii or ())
        }

    def choose_ball_radius(self) -> float:
        """The radius of :attr:`ball_radii` with the highest mean Dice after the last round on ``validation_data``
        (ties: the smaller; the start label and clicks as on the test cases); sets :attr:`ball_radius` and
        :attr:`ball_choice` (radius -> mean Dice). Under ``torchrun`` the cases are dealt over the ranks and every
        rank gets the same radius."""
        if self.ball_radii is None or self.validation_data is None:
            raise ValueError("choose_ball_radius: expected ball_radii and validation_data, found None")
        per_case = map_in_order(self._ball_dice, self.validation_data)
        if not per_case:
            raise ValueError("validation_data: expected at least one case to choose the ball radius on, found none")
        self.ball_choice = {r: float(np.mean([d[r] for d in per_case])) for r in sorted(self.ball_radii)}
        self.ball_radius = max(self.ball_choice, key=lambda r: (self.ball_choice[r], -r))
        logger.info("ball radius %g chosen on the validation cases (mean Dice %s)", self.ball_radius, self.ball_choice)
        return self.ball_radius

    def run(self) -> list[dict]:
        """Evaluate every case (this rank's share under ``torchrun``) and write the reports (rank 0); returns the
        summary rows (as in the CSV) on every rank."""
        t0 = time.perf_counter()
        if self.ball_radii is not None and self.validation_data is not None:
            self.choose_ball_radius()
        rows = [row for case_rows in map_in_order(self._case, self.data) for row in case_rows]
        if not rows:
            raise ValueError("data: expected at least one test case, found none")
        if not is_main_process():
            return summarise_rounds(rows, self.n_resamples, self.bootstrap_seed)
        methods = [AUTOMATIC[k] for k in AUTOMATIC] + [INTERACTIVE[k] for k in self.methods()]
        summary = write_reports(
            self.output_dir, rows, methods, self.pairs(), self.settings(), self.n_resamples, self.bootstrap_seed
        )
        plot_dice_vs_clicks(summary, methods, self.output_dir / "dice_vs_clicks.png", AUTOMATIC[self.start])
        logger.info("interactive evaluation done in %.1f s -> %s", time.perf_counter() - t0, self.output_dir)
        return summary
