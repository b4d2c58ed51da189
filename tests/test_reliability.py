"""Untrusted files and careless commands (issue 13): what is covered so far."""

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mpimamba.train import TrainConfig, TrainData, train


class _Payload:
    """Unpickling this object calls Path.touch(target): code carried by the file itself."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def _tiny_config(out: Path, steps: int = 2) -> TrainConfig:
    return TrainConfig(method="nafnet", preset="tiny", patch=16, batch=2, steps=steps,
                       val_images=1, val_every=steps, ckpt_every=steps, out=str(out))  # the simulated stream


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the plain-pickle case below is foreign on purpose
def test_resume_never_runs_code_from_a_checkpoint(tmp_path):
    run, marker = tmp_path / "run", tmp_path / "code-ran"
    train(_tiny_config(run))
    # a crafted checkpoint in torch's own zip format whose pickle would create `marker` when loaded
    torch.save({"config": _Payload(marker)}, run / "checkpoint.pt")
    with zipfile.ZipFile(run / "checkpoint.pt") as z:
        assert any(name.endswith("data.pkl") for name in z.namelist())
    with pytest.raises(ValueError, match="cannot read checkpoint .*checkpoint.pt"):
        train(_tiny_config(run), resume=True)
    assert not marker.exists()
    # and a plain pickle (not torch's format) is refused the same way
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"config": _Payload(marker)}))
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        train(_tiny_config(run), resume=True)
    assert not marker.exists()


def test_a_real_checkpoint_still_loads_as_plain_tensors(tmp_path):
    run = tmp_path / "run"
    train(_tiny_config(run))
    state = torch.load(run / "checkpoint.pt", weights_only=True)  # what resume does
    assert state["step"] == 2 and "optimizer" in state and "model" in state
    train(_tiny_config(run), resume=True)  # a finished run resumes to its end
    assert (run / "model.safetensors").is_file()


def test_written_files_follow_the_umask(tmp_path):
    import os

    from mpimamba.fileutil import write_text_atomic

    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "report.md", "x\n")
        assert (tmp_path / "report.md").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_text_atomic(tmp_path / "private.md", "x\n")
        assert (tmp_path / "private.md").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_calibrate_never_reads_its_own_outputs_or_temp_files(tmp_path):
    import numpy as np

    from mpimamba.calibrate import plan_outputs
    from mpimamba.data.io import write_image

    src = tmp_path / "in"
    write_image(src / "a.tif", np.ones((8, 8), np.float32))
    write_image(src / "out" / "a.tif", np.ones((8, 8), np.float32))  # an earlier run's output inside IN
    (src / ".b.x1y2.tmp.tif").write_bytes(b"")  # a temp file a killed run left behind
    pairs = plan_outputs([src], src / "out")
    assert [p.name for p, _ in pairs] == ["a.tif"] and pairs[0][1] == src / "out" / "a.tif"
    with pytest.raises(ValueError, match="names one image file"):
        plan_outputs([src / "a.tif", src / "out" / "a.tif"], tmp_path / "x.tif")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_simulate_overwrite_never_deletes_a_users_dataset(tmp_path):
    import numpy as np

    from mpimamba.cli import main
    from mpimamba.data.io import write_image

    users = tmp_path / "real"
    for split in ("train", "val", "test"):
        write_image(users / split / "lq" / "scan1.tif", np.ones((8, 8), np.float32))
        write_image(users / split / "gt" / "scan1.tif", np.ones((8, 8), np.float32))
    (users / "train" / "notes.txt").write_text("mine")
    before = _files(users)
    assert main(["simulate", str(users), "--count", "10", "--size", "16", "--overwrite"]) == 2
    assert _files(users) == before


def test_simulate_overwrite_replaces_only_its_own_files(tmp_path):
    from mpimamba.data.synthetic import write_dataset

    out = tmp_path / "sim"
    write_dataset(out, 10, 16, seed=1)
    (out / "train" / "lq" / "mine.txt").write_text("keep me")
    write_dataset(out, 10, 16, seed=2, fmt="npy", overwrite=True)
    assert (out / "train" / "lq" / "mine.txt").read_text() == "keep me"
    assert not list(out.rglob("*.tif")) and len(list(out.rglob("*.npy"))) == 20
    assert not list(out.glob(".simulate-staging*"))


def test_interrupted_simulate_overwrite_keeps_the_old_dataset(tmp_path, monkeypatch):
    from mpimamba.data import synthetic
    from mpimamba.physics import protocols

    out = tmp_path / "sim"
    synthetic.write_dataset(out, 10, 16, seed=1)
    before = _files(out)
    real, calls = protocols.make_pairs, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt  # Ctrl-C after the first batch
        return real(*args, **kwargs)

    monkeypatch.setattr(protocols, "make_pairs", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic.write_dataset(out, 40, 16, seed=2, overwrite=True, batch=8)
    assert _files(out) == before
    assert not list(out.glob(".simulate-staging*"))


def _fake_lock(folder: Path, pid: int) -> Path:
    import json
    import socket

    from mpimamba.locks import lock_path

    lock = lock_path(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "earlier",
                                "command": "mpimamba train ..."}))
    return lock


def test_a_live_run_folder_is_refused_and_a_stale_lock_recovered(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = _fake_lock(run, other.pid)  # another live process trains into RUN
        for kwargs in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(FileExistsError, match=f"in use by process {other.pid}"):
                train(_tiny_config(run), **kwargs)
        assert not run.exists() and lock.exists()  # nothing created, the holder's lock kept
    finally:
        other.kill()
        other.wait()
    train(_tiny_config(run))  # its process is gone: the stale lock is taken over
    assert (run / "model.safetensors").is_file() and not lock.exists()


def test_calibrate_and_simulate_refuse_a_folder_in_use(tmp_path):
    import os

    from mpimamba.cli import main

    out = tmp_path / "sim"
    _fake_lock(out, os.getppid())  # a live process: our parent
    assert main(["simulate", str(out), "--count", "10", "--size", "16"]) == 2
    assert not out.exists()
    restored = tmp_path / "restored"
    _fake_lock(restored, os.getppid())
    (tmp_path / "img.npy").write_bytes(b"")
    assert main(["calibrate", str(tmp_path / "img.npy"), "-o", str(restored)]) == 2
    assert not restored.exists()


def test_a_model_of_another_preset_is_one_line_naming_the_file(tmp_path, capsys):
    import json

    import numpy as np

    from mpimamba.cli import main
    from mpimamba.models import build, save_model

    weights = save_model(build("nafnet", "tiny"), tmp_path / "m" / "model")
    config = tmp_path / "m" / "model.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "preset": "small"}))
    np.save(tmp_path / "x.npy", np.ones((16, 16), np.float32))
    assert main(["calibrate", str(tmp_path / "x.npy"), "-o", str(tmp_path / "o"), "--model", str(weights),
                 "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(weights) in err and "size mismatch" in err


def test_ctrl_c_is_one_line_not_a_traceback(monkeypatch, capsys):
    from mpimamba import cli

    def interrupted(args):
        raise KeyboardInterrupt

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["info"].set_defaults(run=interrupted)
    assert cli.main(["info"]) == 130
    assert capsys.readouterr().err.strip() == "mpimamba info: interrupted"


def test_calibrate_continues_after_a_bad_file_and_an_interruption(tmp_path, capsys):
    import numpy as np

    from mpimamba.cli import main
    from mpimamba.data.io import write_image
    from mpimamba.models import build, save_model

    model = save_model(build("nafnet", "tiny"), tmp_path / "m" / "model")
    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        write_image(src / f"{name}.tif", np.random.default_rng(0).random((16, 16)).astype(np.float32))
    (src / "bad.npy").write_bytes(b"not an array")
    out = tmp_path / "out"
    args = ["calibrate", str(src), "-o", str(out), "--model", str(model), "--device", "cpu"]
    assert main(args) == 2  # the bad file is listed at the end, the good ones are written
    err = capsys.readouterr().err
    assert "bad.npy" in err and "1 of 4" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif", "c.tif"]
    # an interrupted run (here: one output removed) continues without recomputing the others
    (out / "b.tif").unlink()
    kept = (out / "a.tif").stat().st_mtime_ns
    (src / "bad.npy").unlink()
    assert main(args) == 2 and "--skip-existing" in capsys.readouterr().err
    assert main(args + ["--skip-existing"]) == 0
    assert (out / "b.tif").is_file() and (out / "a.tif").stat().st_mtime_ns == kept
    assert main(args + ["--skip-existing", "--overwrite"]) == 2


def test_bad_training_data_is_refused_before_the_run_folder_exists(tmp_path):
    import numpy as np

    from mpimamba.cli import main
    from mpimamba.data.io import write_image

    root = tmp_path / "data"
    for split, count in (("train", 3), ("val", 1)):
        for i in range(count):
            write_image(root / split / "lq" / f"{i}.tif", np.ones((24, 24), np.float32))
            write_image(root / split / "gt" / f"{i}.tif", np.ones((24, 24), np.float32))
    base = ["train", "--method", "nafnet", "--preset", "tiny", "--data", str(root), "--device", "cpu", "--steps", "1"]
    assert main(base + ["--out", str(tmp_path / "r1"), "--patch", "32", "--batch", "2"]) == 2  # patch > images
    assert main(base + ["--out", str(tmp_path / "r2"), "--patch", "16", "--batch", "4"]) == 2  # 3 pairs < batch
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


# ---------------------------------------------------------------------------------------------- training stops
# Ctrl-C, wall-time checkpoints and a diverging loss; the small conv networks of tests/train_helpers.py

def _blob_config(out: Path, **kw) -> TrainConfig:
    base = dict(method="tinyconv", preset="tiny", steps=12, batch=4, patch=16, lr=2e-3, ckpt_every=4,
                val_every=4, device="cpu", out=str(out))
    return TrainConfig(**{**base, **kw})


def _log_without_speed(run: Path) -> list[dict]:
    import csv

    with open(run / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "img_per_s"} for row in csv.DictReader(f)]


def _stream_that(after: int, action):
    """A blob stream factory that calls `action()` when pair `after` + 1 is drawn, counted over the whole run."""
    import train_helpers as th

    return th.watched_stream(lambda n: action() if n == after + 1 else None)


def _ctrl_c():
    import os
    import signal

    os.kill(os.getpid(), signal.SIGINT)  # what the terminal sends on Ctrl-C, handled in this (main) thread


def test_ctrl_c_saves_the_step_mid_segment_and_resumes_to_identical_weights(tmp_path, monkeypatch):
    import train_helpers as th

    from mpimamba.train.loop import TrainingInterrupted

    import signal

    th.register(monkeypatch)
    data = th.blob_data()
    callers_handler = signal.getsignal(signal.SIGINT)  # the default, or SIG_IGN in a background job
    whole = train(_blob_config(tmp_path / "whole"), data=data)
    cfg = _blob_config(tmp_path / "stopped")
    # Ctrl-C while step 6's batch (pairs 21-24) is drawn: step 6 is finished, then the run stops there, in the
    # middle of the second data segment (steps 5-8 with ckpt_every 4)
    stopping = TrainData(train=_stream_that(4 * 5, _ctrl_c), val=data.val)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg, data=stopping)
    assert (stopped.value.phase, stopped.value.step) == ("main", 6)
    assert stopped.value.checkpoint == Path(cfg.out) / "checkpoint.pt"
    assert torch.load(stopped.value.checkpoint, weights_only=True)["step"] == 6
    assert [int(r["step"]) for r in _log_without_speed(Path(cfg.out))][-1] == 6
    # the handlers are the caller's again: a signal now does what it did before training
    assert signal.getsignal(signal.SIGINT) is callers_handler
    # a resume may change the wall-time interval: it changes when checkpoints are written, not the weights
    resumed = train(_blob_config(tmp_path / "stopped", ckpt_minutes=5.0), resume=True, data=data)
    assert th.state_digest(resumed) == th.state_digest(whole)  # bit for bit
    assert _log_without_speed(Path(cfg.out)) == _log_without_speed(tmp_path / "whole")


def test_ctrl_c_twice_stops_at_once_keeping_the_last_checkpoint(tmp_path, monkeypatch):
    import train_helpers as th

    from mpimamba.train.loop import TrainingInterrupted

    th.register(monkeypatch)
    data = th.blob_data()
    cfg = _blob_config(tmp_path / "run")

    def twice():
        _ctrl_c()
        _ctrl_c()

    with pytest.raises(KeyboardInterrupt) as stopped:
        train(cfg, data=TrainData(train=_stream_that(4 * 5, twice), val=data.val))
    assert not isinstance(stopped.value, TrainingInterrupted)  # not at a step's end: no checkpoint of it
    assert torch.load(Path(cfg.out) / "checkpoint.pt", weights_only=True)["step"] == 4


def test_ctrl_c_before_the_first_step_resumes_from_the_start(tmp_path, monkeypatch):
    import train_helpers as th

    from mpimamba.train import loop

    th.register(monkeypatch)
    data = th.blob_data()
    whole = train(_blob_config(tmp_path / "whole", steps=4), data=data)
    real, calls = loop.validate, []

    def validate_then_ctrl_c(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            _ctrl_c()  # during the untrained baseline
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "validate", validate_then_ctrl_c)
    cfg = _blob_config(tmp_path / "run", steps=4)
    with pytest.raises(loop.TrainingInterrupted) as stopped:
        train(cfg, data=data)
    assert stopped.value.step == 0 and stopped.value.checkpoint is None
    assert not (Path(cfg.out) / "checkpoint.pt").exists()
    resumed = train(cfg, resume=True, data=data)  # from config.json: the run from its beginning
    assert th.state_digest(resumed) == th.state_digest(whole)
    with pytest.raises(ValueError, match="different settings.*lr"):
        train(_blob_config(tmp_path / "run", steps=4, lr=1e-3), resume=True, data=data)


def test_cli_ctrl_c_prints_how_to_resume_and_the_resume_matches(tmp_path, monkeypatch, capsys):
    import train_helpers as th

    from mpimamba.cli import main
    from mpimamba.data.paired import PairedFolder
    from mpimamba.models import load_model

    th.register(monkeypatch)
    folder = th.write_blob_folder(tmp_path / "ds", counts=(10, 1))
    common = ["train", "--method", "tinyconv", "--preset", "tiny", "--data", str(folder), "--batch", "2",
              "--patch", "16", "--steps", "9", "--ckpt-every", "4", "--val-every", "3", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "whole")]) == 0
    real, items = PairedFolder.__getitem__, [0]

    def getitem(self, index):
        items[0] += self.augment  # training items only
        if self.augment and items[0] == 2 * 6 + 1:  # while step 7's batch is read
            _ctrl_c()
        return real(self, index)

    monkeypatch.setattr(PairedFolder, "__getitem__", getitem)
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(common + ["--out", str(run)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"mpimamba train: interrupted at main step 7, checkpoint saved; continue with: " \
                      f"mpimamba train --out {run} --resume"
    assert not any("Traceback" in line for line in err)
    monkeypatch.setattr(PairedFolder, "__getitem__", real)
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert th.state_digest(load_model(run / "model.safetensors")) == \
        th.state_digest(load_model(tmp_path / "whole" / "model.safetensors"))


class _Killed(RuntimeError):
    pass


def _timed_stream(now: list, minutes_per_pair: float, kill_at: int | None = None):
    """A blob stream factory whose every pair takes `minutes_per_pair` on the clock `now`; it dies when
    pair `kill_at` is drawn (counted over the whole run)."""
    import train_helpers as th

    def tick(n: int) -> None:
        if n == kill_at:
            raise _Killed("simulated kill")
        now[0] += 60.0 * minutes_per_pair

    return th.watched_stream(tick)


def test_checkpoints_at_least_every_few_minutes_and_at_each_phase_end(tmp_path, monkeypatch):
    import train_helpers as th

    from mpimamba.train import loop

    th.register(monkeypatch)
    now = [0.0]
    monkeypatch.setattr(loop, "_clock", lambda: now[0])
    val = th.blob_data().val
    # ckpt_every 100 > steps: only the clock (10 minutes: every third step at 4 minutes a step) and the
    # phase's end write checkpoints
    settings = dict(batch=1, ckpt_every=100, ckpt_minutes=10.0)
    whole = train(_blob_config(tmp_path / "whole", **settings), data=TrainData(train=_timed_stream(now, 4), val=val))
    assert torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["step"] == 12  # the phase's end

    now[0] = 0.0
    cfg = _blob_config(tmp_path / "run", **settings)
    with pytest.raises(_Killed):  # dies while step 8 reads its batch
        train(cfg, data=TrainData(train=_timed_stream(now, 4, kill_at=8), val=val))
    assert torch.load(Path(cfg.out) / "checkpoint.pt", weights_only=True)["step"] == 6  # written at 12 and 24 min
    resumed = train(_blob_config(tmp_path / "run", **{**settings, "ckpt_minutes": float("inf")}), resume=True,
                    data=TrainData(train=_timed_stream(now, 4), val=val))
    assert th.state_digest(resumed) == th.state_digest(whole)  # resumed inside the one data segment

    # a phase's end is checkpointed whatever ckpt_every says: killed in phase 2, phase 1 is kept
    two = _blob_config(tmp_path / "two", method="twophase", steps=5, ckpt_every=100, ckpt_minutes=float("inf"))
    with pytest.raises(_Killed):
        train(two, data=TrainData(train=_timed_stream(now, 0, kill_at=4 * 5 + 1), val=val))
    state = torch.load(Path(two.out) / "checkpoint.pt", weights_only=True)
    assert (state["phase"], state["step"]) == ("phase1", 5)


def test_a_diverging_loss_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    import train_helpers as th

    from mpimamba.cli import main

    th.register(monkeypatch)
    folder = th.write_blob_folder(tmp_path / "ds", counts=(8, 1))
    run = tmp_path / "run"
    # a learning rate so high that the first step throws the weights to ~1e30 and the next loss overflows
    assert main(["train", "--method", "tinyconv", "--preset", "tiny", "--data", str(folder), "--batch", "2",
                 "--patch", "16", "--steps", "6", "--ckpt-every", "1", "--lr", "1e30", "--device", "cpu",
                 "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mpimamba train: error: the loss became") and "Traceback" not in "".join(err)
    assert "main step 2" in err[-1] and "lower --lr than 1e+30" in err[-1]
    assert "the last checkpoint (main step 1) is kept" in err[-1]
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["step"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run / "model.safetensors").exists()


def test_weights_that_are_not_finite_are_never_checkpointed(tmp_path):
    # under DDP another rank's NaN reaches rank 0's weights (averaged gradients) before rank 0's own loss
    import train_helpers as th

    from mpimamba.train.loop import TrainingDiverged, _Checkpoints

    model = th.TinyConv()
    with torch.no_grad():
        model.body[0].weight[0, 0, 0, 0] = float("nan")
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    checkpoints = _Checkpoints(tmp_path / "run", _blob_config(tmp_path / "run"), True, (0, 4))
    with pytest.raises(TrainingDiverged, match=r"the weights became nan at main step 5 .*\(main step 4\) is kept"):
        checkpoints.save(model, opt, sched, 0, 5)
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and checkpoints.at == (0, 4)


# ---------------------------------------------------------------------------------------------- error style
def _command_raising(monkeypatch, command: str, error: BaseException):
    """Make `mpimamba COMMAND` raise `error` from inside its work (as the test of Ctrl-C above does)."""
    from mpimamba import cli

    def run(args):
        raise error

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices[command].set_defaults(run=run)


def test_debug_shows_the_traceback_and_bugs_always_keep_it(tmp_path, monkeypatch, capsys):
    from mpimamba.cli import main

    args = ["train", "--out", str(tmp_path / "nothing"), "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("mpimamba train: error: cannot resume")
    assert main(args + ["--debug"]) == 2  # the same exit code and line, after the traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and err[-1].startswith("mpimamba train: error: cannot resume")
    _command_raising(monkeypatch, "info", RuntimeError("a bug"))
    for extra in ([], ["--debug"]):  # not an ordinary fault: it propagates, and Python prints its traceback
        with pytest.raises(RuntimeError, match="a bug"):
            main(["info", *extra])


def test_permission_denied_is_one_line_naming_the_file_not_its_temp_file(tmp_path, monkeypatch, capsys):
    import errno

    import numpy as np

    from mpimamba import fileutil
    from mpimamba.cli import main
    from mpimamba.models import build, save_model

    model = save_model(build("nafnet", "tiny"), tmp_path / "m" / "model")
    np.save(tmp_path / "x.npy", np.ones((16, 16), np.float32))
    out = tmp_path / "out"

    class NoWrite:  # what mkstemp raises in a folder the user may not write to
        @staticmethod
        def mkstemp(prefix="", suffix="", dir=None):
            raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}k3j9_x2q{suffix}")

    monkeypatch.setattr(fileutil, "tempfile", NoWrite)
    assert main(["calibrate", str(tmp_path / "x.npy"), "-o", str(out), "--model", str(model), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err == (f"mpimamba calibrate: error: cannot access {out / 'x.npy'}: permission denied; check the "
                   "permissions of the file and its folder, or choose another location")


def test_a_full_disk_is_a_failure_in_one_line_that_says_how_to_continue(tmp_path, monkeypatch, capsys):
    import errno

    import train_helpers as th

    from mpimamba.cli import main

    th.register(monkeypatch)
    folder = th.write_blob_folder(tmp_path / "ds", counts=(8, 1))
    run = tmp_path / "run"
    real = Path.write_bytes

    def full_after_first_checkpoint(self, data):
        if (run / "checkpoint.pt").exists():
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write reports it: no file named
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_after_first_checkpoint)
    assert main(["train", "--method", "tinyconv", "--preset", "tiny", "--data", str(folder), "--batch", "2",
                 "--patch", "16", "--steps", "4", "--ckpt-every", "2", "--device", "cpu", "--out", str(run)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"mpimamba train: error: no space left on device writing {run / 'checkpoint.pt'}; the last "
                       f"checkpoint is kept: free space, then continue with: mpimamba train --out {run} --resume")
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 2
    assert not list(run.glob(".checkpoint.*"))  # no temp file left behind
    monkeypatch.setattr(Path, "write_bytes", real)
    assert main(["train", "--out", str(run), "--resume"]) == 0


def test_a_missing_optional_package_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    import numpy as np

    from mpimamba.cli import main
    from mpimamba.models import build, save_model

    model = save_model(build("nafnet", "tiny"), tmp_path / "m" / "model")
    (tmp_path / "scan.dcm").write_bytes(b"\0" * 256)
    np.save(tmp_path / "x.npy", np.ones((16, 16), np.float32))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # `import pydicom` now fails as if it were not installed
    common = ["--model", str(model), "--device", "cpu"]
    assert main(["calibrate", str(tmp_path / "scan.dcm"), "-o", str(tmp_path / "o1"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert err.startswith("mpimamba calibrate: error: ") and "scan.dcm" in err
    assert "pip install 'mpimamba[dicom]'" in err
    assert main(["calibrate", str(tmp_path / "x.npy"), "-o", str(tmp_path / "x.dcm"), *common]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"mpimamba calibrate: error: {tmp_path / 'x.dcm'}: DICOM needs the optional package pydicom "
                   "(pip install 'mpimamba[dicom]')")  # the output named, not the temp file it was written as
    _command_raising(monkeypatch, "info", ModuleNotFoundError("No module named 'pydicom'", name="pydicom"))
    assert main(["info"]) == 2  # a bare import of it elsewhere
    assert capsys.readouterr().err == ("mpimamba info: error: DICOM (.dcm) files need the optional package pydicom, "
                                       "which is not installed: pip install 'mpimamba[dicom]'\n")
    _command_raising(monkeypatch, "info", ModuleNotFoundError("No module named 'einops'", name="einops"))
    with pytest.raises(ModuleNotFoundError):  # a required package missing is a broken install: traceback
        main(["info"])


def test_a_bad_override_is_one_line_and_leaves_an_existing_run_alone(tmp_path, monkeypatch, capsys):
    import train_helpers as th

    from mpimamba.cli import main

    th.register(monkeypatch)
    folder = th.write_blob_folder(tmp_path / "ds", counts=(8, 1))
    run = tmp_path / "run"
    common = ["train", "--method", "tinyconv", "--preset", "tiny", "--data", str(folder), "--batch", "2",
              "--patch", "16", "--steps", "2", "--device", "cpu", "--out", str(run)]
    assert main(common) == 0
    before = _files(run)
    assert main(common + ["--overwrite", "--override", "depth=3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mpimamba train: error: --override {'depth': 3} does not fit tinyconv")
    assert _files(run) == before  # --overwrite cleared nothing: the settings failed first


# ---------------------------------------------------------------------------------------------- item 7
def test_misleading_messages_now_say_what_the_file_is(tmp_path):
    """Random bytes named .npy, a TIFF named .png, an object array, a non-font --font: one line that says
    what the file is (or is not), never numpy's "load it unsafely" or Pillow's mode names."""
    import tifffile

    from mpimamba.data.io import read_image

    (tmp_path / "noise.npy").write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ValueError, match="not a NPY file"):
        read_image(tmp_path / "noise.npy")
    tifffile.imwrite(tmp_path / "scan.png", np.ones((8, 8), np.float32))
    with pytest.raises(ValueError, match="holds TIFF data although it is named .png"):
        read_image(tmp_path / "scan.png")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="never unpickles"):
        read_image(tmp_path / "objects.npy")
    (tmp_path / "font.ttf").write_text("not a font")
    from mpimamba.physics.phantoms import glyphs

    with pytest.raises(ValueError, match="not a TrueType/OpenType font"):
        glyphs(tmp_path / "font.ttf")


def test_constant_target_has_no_nrmse_and_symlinked_folders_are_followed(tmp_path):
    from mpimamba.calibrate import plan_outputs
    from mpimamba.data.io import write_image
    from mpimamba.eval.metrics import nrmse

    assert np.isnan(nrmse(np.zeros((16, 16)), np.full((16, 16), 0.5)))  # not inf
    real = tmp_path / "real" / "deep"
    write_image(real / "a.tif", np.ones((8, 8), np.float32))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "linked").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "loop").symlink_to(tmp_path / "in")  # a cycle: entered once
    pairs = plan_outputs([tmp_path / "in"], tmp_path / "out")
    assert [dst.relative_to(tmp_path / "out").as_posix() for _, dst in pairs] == ["linked/deep/a.tif"]
