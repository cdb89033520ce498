"""AtomicCheckpointSaver: a kill or an error mid-save leaves the previous file, resume continues the run, the
best-metric saver saves on improvement only and keeps "best" across a resume, wrapped networks are saved unwrapped,
only rank 0 writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from common.handlers import AtomicCheckpointSaver

DATA = [torch.full((2, 3), float(i)) for i in range(3)]  # 3 iterations per epoch


def fresh(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = torch.nn.Linear(3, 2)
    return net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)


def trainer(net: torch.nn.Module, opt: torch.optim.Optimizer) -> Engine:
    def step(engine: Engine, batch: torch.Tensor) -> float:
        opt.zero_grad()
        loss = (net(batch) - 1.0).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    return Engine(step)


def metric_engine(values: list[float], net: torch.nn.Module) -> Engine:
    """An evaluator-like engine whose key metric at epoch ``e`` is ``values[e - 1]``; the net's bias is set to ``e``."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _(e: Engine) -> None:  # registered before the saver, so it runs first
        with torch.no_grad():
            net.bias.fill_(float(e.state.epoch))
        e.state.key_metric_name = "val_dice"
        e.state.metrics = {"val_dice": values[e.state.epoch - 1]}

    return engine


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    net, _ = fresh()
    AtomicCheckpointSaver(path, {"model": net}).save()
    before = torch.load(path, weights_only=True)
    script = textwrap.dedent(f"""
        import io, time, torch
        from common.handlers import AtomicCheckpointSaver
        real = torch.save
        def half_then_hang(obj, f):  # a slow disk: half the bytes written, then the process is killed
            buf = io.BytesIO(); real(obj, buf)
            with open(f, "wb") as out:
                out.write(buf.getvalue()[: len(buf.getvalue()) // 2]); out.flush()
            print("half", flush=True); time.sleep(120)
        torch.save = half_then_hang
        AtomicCheckpointSaver({str(path)!r}, {{"model": torch.nn.Linear(3, 2)}}).save()
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "half"
        temps = list(tmp_path.glob(".model.pt.*.tmp"))
        assert len(temps) == 1 and temps[0].stat().st_size > 0  # the new content went to a temporary file
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    after = torch.load(path, weights_only=True)  # still the complete previous checkpoint
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_error_during_save_keeps_old_file_and_removes_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    net, opt = fresh()
    saver = AtomicCheckpointSaver(path, {"network": net, "optimizer": opt})
    saver.save()
    old = path.read_bytes()

    def fail_midway(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", fail_midway)
    with pytest.raises(OSError, match="disk full"):
        saver.save()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left


def test_resume_restores_network_optimizer_and_epoch(tmp_path):
    net, opt = fresh()
    trainer(net, opt).run(DATA, max_epochs=4)  # the uninterrupted reference
    reference = {k: v.clone() for k, v in net.state_dict().items()}

    path = tmp_path / "checkpoint_last.pt"
    net, opt = fresh()
    first = trainer(net, opt)
    AtomicCheckpointSaver(path, {"network": net, "optimizer": opt}, resume=True).attach(first)
    first.run(DATA, max_epochs=2)  # "killed" after epoch 2

    net, opt = fresh(seed=1)  # a new process: other initial weights, empty optimizer state
    second = trainer(net, opt)
    AtomicCheckpointSaver(path, {"network": net, "optimizer": opt}, resume=True).attach(second)
    epochs = []
    second.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    second.run(DATA, max_epochs=4)
    assert epochs == [3, 4] and second.state.iteration == 4 * len(DATA)
    for k, v in net.state_dict().items():  # momentum restored too: same result as without the interruption
        torch.testing.assert_close(v, reference[k])
    assert torch.load(path, weights_only=False)["engine"]["iteration"] == 4 * len(DATA)


def test_resume_checks_the_fingerprint_of_the_settings(tmp_path):
    path = tmp_path / "checkpoint_last.pt"
    settings = {"learning_rate": 0.1, "features": (4, 8), "dataset_dir": "data/x"}

    def run(fingerprint, max_epochs):
        net, opt = fresh()
        engine = trainer(net, opt)
        AtomicCheckpointSaver(path, {"network": net, "optimizer": opt}, resume=True, fingerprint=fingerprint).attach(
            engine
        )
        engine.run(DATA, max_epochs=max_epochs)
        return engine

    run(settings, 1)
    assert torch.load(path, weights_only=False)["fingerprint"] == {**settings, "features": [4, 8]}  # JSON values
    assert run(settings, 2).state.epoch == 2  # the same settings (tuples read back as lists) resume
    with pytest.raises(ValueError) as e:
        run({**settings, "learning_rate": 0.01, "dataset_dir": "data/y"}, 3)
    msg = str(e.value)
    assert str(path) in msg and "learning_rate: expected 0.01, found 0.1" in msg and "dataset_dir" in msg
    assert "features" not in msg and "delete it" in msg
    assert torch.load(path, weights_only=False)["engine"]["iteration"] == 2 * len(DATA)  # the refused run wrote nothing
    net, opt = fresh()
    AtomicCheckpointSaver(path, {"network": net, "optimizer": opt}).save(trainer(net, opt))  # no fingerprint
    with pytest.raises(ValueError, match="expected a fingerprint of the settings"):
        run(settings, 3)


def test_best_metric_saver_saves_on_improvement_and_keeps_best_across_resume(tmp_path):
    net, _ = fresh()
    best = AtomicCheckpointSaver(tmp_path / "model.pt", {"model": net}, key_metric=True, settings={"features": 4})
    evaluator = metric_engine([0.5, 0.3, 0.7, 0.6], net)
    best.attach(evaluator)
    saved = []
    evaluator.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: saved.append(torch.load(tmp_path / "model.pt")["bias"][0].item())
    )
    evaluator.run([0], max_epochs=4)
    assert saved == [1.0, 1.0, 3.0, 3.0]  # written at epochs 1 and 3 only
    info = json.loads((tmp_path / "model.json").read_text())
    assert info == {"network": "torch.nn.modules.linear.Linear", "settings": {"features": 4}, "best_metric": 0.7}

    last = tmp_path / "checkpoint_last.pt"
    AtomicCheckpointSaver(last, {"network": net, "best_saver": best}).save(evaluator)
    resumed = AtomicCheckpointSaver(tmp_path / "model.pt", {"model": net}, key_metric=True)
    host = Engine(lambda e, b: None)
    AtomicCheckpointSaver(last, {"network": net, "best_saver": resumed}, resume=True).attach(host)
    host.run([0], max_epochs=4)  # resumed at epoch 4 of 4: loads the states, runs nothing
    assert resumed.best == 0.7
    again = metric_engine([0.65, 0.9], net)
    resumed.attach(again)
    again.run([0], max_epochs=2)
    assert torch.load(tmp_path / "model.pt")["bias"][0].item() == 2.0  # 0.65 < best 0.7 kept; 0.9 saved


def test_wrapped_network_is_saved_unwrapped_and_resumed_into_the_wrapper(tmp_path):
    net, opt = fresh()
    wrapped = torch.nn.DataParallel(net)  # on CPU it calls the module; DDP is unwrapped the same way
    AtomicCheckpointSaver(tmp_path / "model.pt", {"model": wrapped}, key_metric=True).save()
    plain, _ = fresh(seed=1)
    plain.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True), strict=True)
    torch.testing.assert_close(plain.weight, net.weight)

    last = tmp_path / "last.pt"
    AtomicCheckpointSaver(last, {"network": wrapped, "optimizer": opt}).save(Engine(lambda e, b: None))
    other, other_opt = fresh(seed=2)
    host = Engine(lambda e, b: None)
    resume = AtomicCheckpointSaver(last, {"network": torch.nn.DataParallel(other), "optimizer": other_opt}, resume=True)
    resume.attach(host)
    host.run([0], max_epochs=1)
    torch.testing.assert_close(other.weight, net.weight)


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda group=None: 1)
    net, _ = fresh()
    saver = AtomicCheckpointSaver(tmp_path / "model.pt", {"model": net}, key_metric=True, settings={})
    evaluator = metric_engine([0.4], net)
    saver.attach(evaluator)
    evaluator.run([0], max_epochs=1)
    assert saver.best == 0.4  # every rank tracks the (all-gathered) best ...
    assert not list(tmp_path.iterdir())  # ... and only rank 0 writes


def test_bad_arguments():
    with pytest.raises(ValueError, match="save_dict: expected at least one object"):
        AtomicCheckpointSaver("x.pt", {})
    with pytest.raises(ValueError, match="interval: expected >= 1, found 0"):
        AtomicCheckpointSaver("x.pt", {"m": torch.nn.Linear(1, 1)}, interval=0)
