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
        overrides: config values the app sets on every config of the bundle (DeepIGeoS: P-Net alone, the network that
            the train task trains and whose label the first click refines).
        load: transforms run before the bundle's ``preprocessing`` when that does not read files itself.
        train_items: datastore ``{"image", "label"}`` items -> (training, validation) data of ``train.json``;
            None: no train task.
        refine: serve an interactive task on the bundle's ``refine`` id beside the automatic one.
        channels: the image channels a datastore image must have (a 4D NIfTI's last axis).
        labels: ``{name: value}`` of the served label where its values are not the network's output channels
            (igs_brats writes BraTS labels 1, 2, 4); None: the metadata's ``pred`` channels.
    """

    name: str
    params: Mapping[str, Param] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    load: Callable[[], Sequence[Callable]] | None = None
    train_items: Callable[[Sequence[dict]], tuple[list[dict], list[dict]]] | None = None
    refine: bool = False
    channels: int = 1
    labels: Mapping[str, int] | None = None

    def accepts(self, image: str) -> bool:
        """Whether a datastore image has this bundle's channels (a 3D NIfTI: 1; a 4D one: its last axis)."""
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


def _files(items: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Datastore items as the bundle's data (files read by its own ``LoadImaged``); all of them train and validate."""
    data = [{"image": i["image"], "label": i["label"]} for i in items]
    return data, data


def _lgg(items: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """LGG datastore cases (:mod:`.lgg`) as its ``train.json`` reads them: slices to train, volumes to validate."""
    cases = [lgg_training_items(i["image"], i["label"]) for i in items]
    return [s for slices, _ in cases for s in slices], [v for _, v in cases]


def _brats_slices(items: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """BraTS datastore cases (a 4D NIfTI, the modalities on the last axis in the bundle's order, and a BraTS label
    0/1/2/4) as ``igs_brats``' ``train.json`` reads its data: every axial slice with brain in it
    (:func:`~common.apps.igs.case_slices`, the bundle's intensity scaling and nested classes); all of them train and
    validate."""
    slices = [s for i in items for s in case_slices({**i, "case": Path(i["image"]).name.split(".")[0]})]
    return slices, slices


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
        BundleEntry("deepigeos_brats", overrides={"use_crf": False}, train_items=_files, refine=True),
        BundleEntry(
            "igs_brats",
            params={"pattern": Param("pattern", str), "acceleration": Param("acceleration", int)},
            train_items=_brats_slices,
            channels=4,
            labels={"non-enhancing tumour core": 1, "oedema": 2, "enhancing tumour": 4},
        ),
        BundleEntry(
            "iterative_fcn_spine",  # datastore CTs are NIfTI (the bundle reads CSI's .mhd by default)
            overrides={"image_reader": "NibabelReader"},
            labels={f"vertebra {i} from the top": i for i in range(1, 26)},  # instances in the order found
        ),
        # the latest stage trained (zoom-out when models/model_zoom_out.pt exists), sliding window over the volume;
        # the network's one output channel is the lesion logit, written as label 1
        BundleEntry("resunet_zoom_atlas", labels={"stroke lesion": 1}),
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
    """

    def __init__(self, entry: BundleEntry, root: Path, extra_configs: Sequence[str], device: torch.device) -> None:
        self.entry, self.root, self.device = entry, Path(root), device
        self.configs = [str(self.root / "configs" / "inference.json"), *map(str, extra_configs)]
        self.metadata = str(self.root / "configs" / "metadata.json")

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

    def network(self) -> torch.nn.Module:
        """The bundle's ``network`` with its weights loaded (checked against the settings it names), in eval mode."""
        parser = self.parser()
        net = parser.get_parsed_content("network")
        settings = parser.get_parsed_content("handlers#0#settings")
        return load_weights(net, parser.get_parsed_content("handlers#0#load_path"), self.device, settings).eval()

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
        post = Compose([t for t in post.transforms if not isinstance(t, SAVERS)])
        return Compose([_source_path, *loads, *pre.transforms]), inferer, post
