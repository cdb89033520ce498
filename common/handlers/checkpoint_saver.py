"""An ignite handler that writes checkpoints atomically to a fixed file (MONAI's CheckpointSaver writes in place)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch import nn

from common.networks.weights import unwrap_parallel, write_model_info
from common.utils.atomic_io import atomic_path
from common.utils.fingerprint import as_fingerprint, check_fingerprint

__all__ = ["AtomicCheckpointSaver"]

logger = logging.getLogger(__name__)


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class AtomicCheckpointSaver:
    """Save ``state_dict()``s to ``save_path`` by write-then-rename, so a kill never leaves a half-written file.

    Args:
        save_path: the checkpoint file (overwritten each time); its folder is made when the first save comes.
        save_dict: ``{name: object with state_dict()}``; a single entry is saved as its bare state dict (so a
            ``{"model": network}`` checkpoint loads with ``network.load_state_dict(torch.load(path))``). A network
            wrapped in ``DistributedDataParallel`` / ``DataParallel`` is saved and loaded through its ``.module``, so
            the file loads into the plain network whether it was written by one process or several.
        key_metric: save when the engine's key metric improves (attach to the evaluator); else save every
            ``interval`` epochs with the engine's own state as ``"engine"`` (attach to the trainer: the "last"
            checkpoint).
        interval: epochs between saves when ``key_metric`` is False.
        resume: with ``key_metric`` False, load ``save_path`` (objects and engine state) when the engine starts, so
            an interrupted run continues after its last completed epoch.
        settings: config values the saved network was built with (``{"image_size": 256, "unet_features": [...]}``);
            when given, each save also writes ``<save_path>.json`` (:func:`common.networks.weights.write_model_info`)
            so that loading the weights into another configuration says which overrides to pass.
        fingerprint: with ``key_metric`` False, the settings the run's state depends on (network, optimiser, data
            split, ...; JSON values), stored in each checkpoint; a resume from a checkpoint made with other values (or
            without any) is refused with an error naming each difference (``max_epochs`` is not part of it: a run
            may be extended).

    The handler has its own ``state_dict`` (the best key metric), so listing it in a trainer checkpoint keeps "best"
    right across a resume. Under ``torch.distributed`` every process tracks "best" and resumes (so all ranks continue
    from the same epoch), and only rank 0 writes.
    """

    def __init__(
        self,
        save_path: str | Path,
        save_dict: Mapping[str, Any],
        key_metric: bool = False,
        interval: int = 1,
        resume: bool = False,
        settings: Mapping[str, Any] | None = None,
        fingerprint: Mapping[str, Any] | None = None,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict: expected at least one object to save, found none")
        if interval < 1:
            raise ValueError(f"interval: expected >= 1, found {interval}")
        self.save_path = Path(save_path)
        self.save_dict = dict(save_dict)
        self.key_metric = key_metric
        self.interval = interval
        self.resume = resume and not key_metric
        self.settings = None if settings is None else dict(settings)
        self.fingerprint = None if fingerprint is None or key_metric else as_fingerprint(fingerprint)
        self.best = float("-inf")

    def attach(self, engine: Engine) -> None:
        if self.key_metric:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._on_metric)
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), lambda e: self.save(e))
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._load)

    def _load(self, engine: Engine) -> None:
        if not self.save_path.is_file():
            return
        try:
            states = torch.load(self.save_path, map_location="cpu", weights_only=False)
        except Exception as e:  # torch raises several types for a corrupt file
            raise ValueError(
                f"{self.save_path}: expected a training checkpoint to resume from, found unreadable "
                f"content ({e}); delete it to start afresh"
            ) from e
        if self.fingerprint is not None:
            check_fingerprint(
                states.get("fingerprint"),
                self.fingerprint,
                self.save_path,
                remedy="delete it to train afresh with these settings, or pass the settings it was made with",
            )
        for name, obj in self.save_dict.items():
            unwrap_parallel(obj).load_state_dict(states[name])
        max_epochs = engine.state.max_epochs  # the current run's setting wins over the saved one
        engine.load_state_dict(states["engine"])
        engine.state.max_epochs = max(max_epochs, engine.state.epoch)
        logger.info("resumed from %s at epoch %d", self.save_path, engine.state.epoch)

    def _on_metric(self, engine: Engine) -> None:
        value = float(engine.state.metrics[engine.state.key_metric_name])
        if value > self.best:
            self.best = value
            self.save()
            if _is_main_process():
                logger.info("saved %s (%s = %.4f)", self.save_path, engine.state.key_metric_name, value)

    def save(self, engine: Engine | None = None) -> None:
        """Write the checkpoint now (rank 0 only under ``torch.distributed``); ``engine`` adds its state."""
        if not _is_main_process():
            return
        states = {name: unwrap_parallel(obj).state_dict() for name, obj in self.save_dict.items()}
        if engine is not None:
            states["engine"] = engine.state_dict()
            if self.fingerprint is not None:
                states["fingerprint"] = self.fingerprint
        obj = next(iter(states.values())) if len(states) == 1 else states
        with atomic_path(self.save_path) as tmp:
            torch.save(obj, tmp)
        if self.settings is not None:
            network = next((o for o in self.save_dict.values() if isinstance(o, nn.Module)), None)
            if network is not None:
                best = None if self.best == float("-inf") else self.best
                write_model_info(self.save_path, network, self.settings, best_metric=best)

    def state_dict(self) -> dict[str, float]:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best = float(state["best"])
