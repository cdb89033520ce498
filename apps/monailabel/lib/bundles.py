"""What the app serves from each bundle (one :class:`BundleEntry` per bundle: adding a bundle is one entry) and
:class:`BundleModel`, a bundle's ``inference.json`` parsed with the app's overrides by MONAI's ``ConfigParser``:
every network, transform, inferer and weights path comes from the bundle's own config ids."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose, LoadImaged, SaveImaged

from common.apps.igs import case_slices
from common.networks import load_weights
from common.transforms import SaveLggMasksd

from .lgg import lgg_training_items

logger = logging.getLogger(__name__)

__all__ = ["BUNDLES", "BadRequest", "BundleEntry", "BundleModel", "Param"]

SAVERS = (SaveImaged, SaveLggMasksd)  # postprocessing steps that write files: MONAI Label writes the label itself


class BadRequest(ValueError):
    """A request the app refuses (answered with HTTP 400 and this message)."""


@dataclass(frozen=True)
class Param:
    """A request parameter that sets a config id of ``inference.json``, with its JSON type."""

    config_id: str
    kind: type

    def parse(self, name: str, value: Any) -> Any:
        """``value`` checked against the type; :class:`BadRequest` naming what was expected and found otherwise."""
        if not isinstance(value, self.kind) or (self.kind is int and isinstance(value, bool)):
            raise BadRequest(f"params.{name}: expected a {self.kind.__name__}, found {value!r}")
        return value


@dataclass(frozen=True)
class BundleEntry:
    """How the app serves one bundle.

    Args:
        name: the folder under ``bundles/``.
        params: request parameters that set config ids of ``inference.json`` (the k-space pattern, the acceleration).
        overrides: config values the app sets on every config of the bundle (inference and training).
        load: transforms run before the bundle's ``preprocessing`` when that does not read files itself.
        train_items: ``(datastore items, training)`` -> the data of ``train.json``'s training (``training`` True) or
            validation dataset; an item is ``{"id", "image", "label"}`` (the image id and the files of an image with a
            saved final label). None: no train task.
        train_stages: the ways to train the bundle from the app, ``{stage: config files of configs/ merged after
            train.json}``; the first is the default, a request's ``stage`` picks another. Each stage fine-tunes the
            weights file its configs write (their ``ckpt_path``).
        train_prefix: the train task takes the datastore images whose id starts with this (and that have
            ``channels``): the datastore holds every bundle's images, and channels alone cannot tell a FLAIR from a
            T1w (``deepigeos_brats``: ``brats_*``, ``resunet_zoom_atlas``: ``atlas_*``).
        infer_tasks: further infer tasks, ``{kind: config file of configs/ merged after inference.json}``, served as
            ``<bundle>_<kind>`` where their weights exist (``lib.tasks``: ``classification``, ``reconstruction``).
        refine: serve an interactive task on the bundle's ``refine`` id beside the automatic one.
        channels: the image channels a datastore image must have (a 4D NIfTI's last axis).
        labels: ``{name: value}`` of the served label where its values are not the network's output channels
            (igs_brats writes BraTS labels 1, 2, 4); None: the metadata's ``pred`` channels.
        weights_runs: the training runs that write the weights of the automatic segmentation, in the order to run
            them, each the config files of configs/ it merges (``deepigeos_brats``: P-Net with ``train.json``, then
            P-Net + CRF-Net(f) with ``train.json`` + ``train_pnet_crf.json``, which writes ``pnet_crf.pt``).
    """

    name: str
    params: Mapping[str, Param] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    load: Callable[[], Sequence[Callable]] | None = None
    train_items: Callable[[Sequence[dict], bool], list[dict]] | None = None
    train_stages: Mapping[str, Sequence[str]] = field(default_factory=lambda: {"default": ()})
    train_prefix: str = ""
    infer_tasks: Mapping[str, str] = field(default_factory=dict)
    refine: bool = False
    channels: int = 1
    labels: Mapping[str, int] | None = None
    weights_runs: Sequence[Sequence[str]] = (("train.json",),)

    def accepts(self, image_id: str, image: str) -> bool:
        """Whether the train task takes a datastore image: its id starts with ``train_prefix`` and it has this
        bundle's channels (a 3D NIfTI: 1; a 4D one: its last axis)."""
        if not image_id.startswith(self.train_prefix):
            return False
        shape = nib.load(image).shape
        return (shape[3] if len(shape) == 4 else 1) == self.channels


def _source_path(data: Mapping[str, Any]) -> dict[str, Any]:
    """The request's ``image_path`` moved to ``source_path``, before every bundle's preprocessing: MONAI's ``Spacingd``
    updates every ``image_*`` item of a NIfTI image as a meta dict, and fails on this string (``iterative_fcn_spine``
    resamples); the writer reads ``source_path``."""
    d = dict(data)
    if "image_path" in d:
        d["source_path"] = d.pop("image_path")
    return d


def _files(items: Sequence[dict], training: bool) -> list[dict]:
    """Datastore items as the bundle's data: the files (read by its own ``LoadImaged``) and ``case``, the image id
    (DeepIGeoS seeds each case's simulated clicks with it)."""
    return [{"image": i["image"], "label": i["label"], "case": i["id"]} for i in items]


def _lgg(items: Sequence[dict], training: bool) -> list[dict]:
    """LGG datastore cases (:mod:`.lgg`) as its ``train.json`` reads them: slices to train, volumes to validate."""
    cases = [lgg_training_items(i["image"], i["label"]) for i in items]
    return [s for slices, _ in cases for s in slices] if training else [v for _, v in cases]


def _brats_slices(items: Sequence[dict], training: bool) -> list[dict]:
    """BraTS datastore cases (a 4D NIfTI, the modalities on the last axis in the bundle's order, and a BraTS label
    0/1/2/4) as ``igs_brats``' ``train.json`` reads its data, to train and to validate: every axial slice with brain
    in it (:func:`~common.apps.igs.case_slices`, the bundle's intensity scaling and nested classes)."""
    return [s for i in items for s in case_slices({"image": i["image"], "label": i["label"], "case": i["id"]})]


BUNDLES: dict[str, BundleEntry] = {
    e.name: e
    for e in [
        BundleEntry("igs_acdc", params={"pattern": Param("pattern", str), "acceleration": Param("acceleration", int)}),
        BundleEntry(
            "unet_lgg",
            load=lambda: [LoadImaged("image", ensure_channel_first=True, image_only=True)],
            train_items=_lgg,
            channels=3,
        ),
        # automatic: P-Net + CRF-Net(f) (the bundle's default inference, the label R-Net was trained to refine);
        # training fine-tunes what the app serves: R-Net + CRF-Net(fu) (the refinement) on the served P-Net +
        # CRF-Net(f)'s labels with the bundle's simulated clicks, or P-Net + CRF-Net(f)
        BundleEntry(
            "deepigeos_brats",
            train_items=_files,
            train_stages={"rnet": ("train_rnet.json", "train_rnet_crf.json"), "pnet": ("train_pnet_crf.json",)},
            train_prefix="brats_",
            refine=True,
            weights_runs=(("train.json",), ("train.json", "train_pnet_crf.json")),
        ),
        BundleEntry(
            "igs_brats",
            params={"pattern": Param("pattern", str), "acceleration": Param("acceleration", int)},
            train_items=_brats_slices,
            infer_tasks={
                "classification": "classification_inference.json",
                "reconstruction": "reconstruction_inference.json",
            },
            channels=4,
            labels={"non-enhancing tumour core": 1, "oedema": 2, "enhancing tumour": 4},
        ),
        BundleEntry(
            "iterative_fcn_spine",  # datastore CTs are NIfTI (the bundle reads CSI's .mhd by default)
            overrides={"image_reader": "NibabelReader"},
            labels={f"vertebra {i} from the top": i for i in range(1, 26)},  # instances in the order found
        ),
        # the latest stage trained (zoom-out when models/model_zoom_out.pt exists), sliding window over the volume;
        # the network's one output channel is the lesion logit, written as label 1; training on T1w + lesion mask
        BundleEntry(
            "resunet_zoom_atlas",
            train_items=_files,
            train_stages={"zoom_in": (), "zoom_out": ("zoom_out.json",)},
            train_prefix="atlas_",
            labels={"stroke lesion": 1},
        ),
    ]
}


class BundleModel:
    """A bundle's ``inference.json`` (plus ``extra_configs`` merged on it) parsed with the app's overrides.

    Args:
        entry: the bundle's registry entry.
        root: the bundle folder.
        extra_configs: config files merged after ``inference.json`` (e.g. ``configs/demo.json``, the settings the
            served weights were trained with).
        device: where the networks run.
        task: one of the entry's ``infer_tasks``: its config file is merged between ``inference.json`` and
            ``extra_configs``; None: the bundle's segmentation.
    """

    def __init__(
        self,
        entry: BundleEntry,
        root: Path,
        extra_configs: Sequence[str],
        device: torch.device,
        task: str | None = None,
    ) -> None:
        if task is not None and task not in entry.infer_tasks:
            raise ValueError(f"task: expected one of {sorted(entry.infer_tasks)} of {entry.name}, found {task!r}")
        self.entry, self.root, self.device, self.task = entry, Path(root), device, task
        self.extra_configs = [str(c) for c in extra_configs]
        task_configs = [] if task is None else [str(self.root / "configs" / entry.infer_tasks[task])]
        self.configs = [str(self.root / "configs" / "inference.json"), *task_configs, *self.extra_configs]
        self.metadata = str(self.root / "configs" / "metadata.json")

    def for_task(self, task: str) -> BundleModel:
        """The same bundle with one of its ``infer_tasks`` configs (``classification``)."""
        return BundleModel(self.entry, self.root, self.extra_configs, self.device, task)

    def parser(self, params: Mapping[str, Any] | None = None) -> ConfigParser:
        """The parsed configs with the app's overrides and the request's ``params`` (checked by the entry)."""
        parser = ConfigParser()
        parser.read_config(self.configs)
        parser.read_meta(self.metadata)
        parser.update({"bundle_root": str(self.root), "device": self.device, **self.entry.overrides})
        for name, value in (params or {}).items():
            if name in self.entry.params:
                parser[self.entry.params[name].config_id] = self.entry.params[name].parse(name, value)
        return parser

    @property
    def labels(self) -> dict[str, int]:
        """The entry's ``labels``, or label names from the metadata's ``pred`` channels (``{"whole tumour": 1, ...}``,
        background left out)."""
        if self.entry.labels is not None:
            return dict(self.entry.labels)
        channels = ConfigParser.load_config_file(self.metadata)["network_data_format"]["outputs"]["pred"]["channel_def"]
        return {name: int(k) for k, name in channels.items() if name != "background"}

    def weights(self) -> Path:
        """The weights file ``inference.json`` loads (its checkpoint loader's ``load_path``)."""
        return Path(self.parser().get_parsed_content("handlers#0#load_path"))

    def train_commands(self) -> str:
        """The commands that write :meth:`weights` (the entry's ``weights_runs``, with the app's extra configs merged
        last), joined by ``", then "``."""
        runs = []
        for configs in self.entry.weights_runs:
            files = [str(self.root / "configs" / c) for c in configs] + self.extra_configs
            runs.append(f'python -m monai.bundle run training --config_file "{files}"')
        return ", then ".join(runs)

    def network(self) -> torch.nn.Module:
        """The bundle's ``network`` with its weights loaded into what its checkpoint loader loads (the network, or
        the 2D classifier that ``network`` applies slice by slice), checked against the settings it names; eval mode.
        """
        parser = self.parser()
        net = parser.get_parsed_content("network")
        loaded = parser.get_parsed_content("handlers#0#load_dict#model")  # the same object as in ``network``
        settings = parser.get_parsed_content("handlers#0#settings")
        load_weights(loaded, parser.get_parsed_content("handlers#0#load_path"), self.device, settings)
        return net.eval()

    def transforms(self, params: Mapping[str, Any] | None = None) -> tuple[Compose, Any, Compose]:
        """(pre-transforms, inferer, post-transforms): the entry's loaders + ``preprocessing``, ``inferer``,
        ``postprocessing`` without its file writers. Bad ``params`` (a pattern the bundle does not know, an
        acceleration without a learned pattern file) raise :class:`BadRequest` with the bundle's own message."""
        parser = self.parser(params)
        try:
            pre = parser.get_parsed_content("preprocessing")
            post = parser.get_parsed_content("postprocessing")
            inferer = parser.get_parsed_content("inferer")
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            raise BadRequest(f"{self.entry.name} with params {dict(params or {})}: {e}") from e
        loads = list(self.entry.load()) if self.entry.load else []
        post = Compose([t for t in Compose(post).flatten().transforms if not isinstance(t, SAVERS)])
        return Compose([_source_path, *loads, *pre.transforms]), inferer, post
