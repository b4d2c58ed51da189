"""Untrusted files and careless commands (issue 13): what is covered so far."""

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from mpimamba.train import TrainConfig, train


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
