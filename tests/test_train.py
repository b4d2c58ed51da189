"""The training loop: loss goes down, exact resume, two phases, torchrun DDP, run-folder and CLI errors."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train_helpers as th
from mpimamba.cli import build_parser, main
from mpimamba.data.paired import PairedFolder
from mpimamba.eval.metrics import psnr
from mpimamba.infer import Restoration
from mpimamba.models import build, load_model
from mpimamba.physics.protocols import PROTOCOLS
from mpimamba.train import TrainConfig, TrainData, train
from mpimamba.train.data import batches, build_data, derive_seed
from mpimamba.train.loop import ConstantThenCosine, validate


@pytest.fixture(autouse=True)
def _methods(monkeypatch):
    th.register(monkeypatch)


def read_log(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def config(tmp_path, name="run", **kw) -> TrainConfig:
    base = dict(method="tinyconv", preset="tiny", steps=12, batch=4, patch=16, lr=2e-3, ckpt_every=4,
                val_every=4, device="cpu", out=str(tmp_path / name))
    return TrainConfig(**{**base, **kw})


class SimulatedKill(RuntimeError):
    pass


def killing_stream(after: int):
    """A stream factory like `th.blob_data`'s that dies once `after` pairs have been drawn in total."""

    def kill(n: int) -> None:
        if n > after:
            raise SimulatedKill("simulated kill")

    return th.watched_stream(kill)


class KillingFolder(PairedFolder):
    after = 0

    def __getitem__(self, index):
        KillingFolder.after -= 1
        if KillingFolder.after < 0:
            raise SimulatedKill("simulated kill")
        return super().__getitem__(index)


def test_schedule_is_constant_then_cosine():
    f = ConstantThenCosine(total=100, constant_fraction=0.5, min_ratio=0.01)
    assert [f(s) for s in (0, 25, 49, 50)] == [1.0, 1.0, 1.0, 1.0]
    assert f(75) == pytest.approx((1 + 0.01) / 2)
    assert f(100) == pytest.approx(0.01)
    assert all(f(s) >= f(s + 1) for s in range(100))


def test_warmup_rises_linearly_to_the_schedule():
    f = ConstantThenCosine(total=100, constant_fraction=0.5, min_ratio=0.01, warmup=10)
    assert [f(s) for s in (0, 4, 9, 10, 49)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0])
    # a warmup reaching into the cosine scales the cosine's value, never above it
    g, plain = ConstantThenCosine(100, 0.0, 0.01, warmup=20), ConstantThenCosine(100, 0.0, 0.01)
    assert g(9) == pytest.approx(0.5 * plain(9)) and g(20) == plain(20)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=10)
    with pytest.raises(ValueError, match="warmup_steps"):
        TrainConfig(steps=10, warmup_steps=-1)


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    cfg = config(tmp_path, overrides={"width": 4}, betas=(0.8, 0.9))
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown training settings.*'stepz'"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="batch"):
        TrainConfig(batch=0)
    # settings that used to fail late, after the run folder existed, with messages that misled
    for bad, match in (({"seed": -1}, "seed"), ({"seed": 2**64}, "seed"), ({"lr": float("nan")}, "lr"),
                       ({"lr": float("inf")}, "lr"), ({"patch": 1}, "patch"), ({"grad_clip": float("nan")}, "grad_clip")):
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)


def test_batches_resume_mid_stream_and_ranks_differ(tmp_path):
    folder = th.write_blob_folder(tmp_path / "ds", counts=(10, 1))
    for train_set in (PairedFolder(folder, "train", patch=8, augment=True, seed=3), th.blob_data().train):
        data = TrainData(train=train_set, val=[])
        kw = dict(seed=7, phase=1, batch=2, world=2, segment=3)
        full = [b for _, b in zip(range(9), batches(data, start=0, rank=0, **kw))]
        resumed = [b for _, b in zip(range(3), batches(data, start=6, rank=0, **kw))]
        for (a_lq, a_gt), (b_lq, b_gt) in zip(full[6:], resumed):
            assert torch.equal(a_lq, b_lq) and torch.equal(a_gt, b_gt)
        other = next(batches(data, start=0, rank=1, **kw))
        assert not torch.equal(full[0][0], other[0])
        expected = (2, 1, 8, 8) if isinstance(train_set, PairedFolder) else (2, 1, 16, 16)
        assert full[0][0].shape == expected


def test_mixed_patch_sizes_take_turns_and_resume_for_any_worker_count(tmp_path):
    """mixed_patches: batches alternate (patch, batch) sizes in the documented order with 0 or 2 workers, a
    resumed stream restarts its segment at the same batches, and the larger size is simulated on a canvas
    raised to its patch."""
    protocol = PROTOCOLS["default"].replace(canvas=(16, 24), snr_db=None)
    cfg = config(tmp_path, protocol=protocol, patch=16, batch=3, mixed_patches=[[32, 1]], val_images=1)
    assert cfg.mixed_patches == ((32, 1),) and cfg.sizes == ((16, 3), (32, 1))
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    data = build_data(cfg)
    assert data.batched
    kw = dict(seed=cfg.seed, phase=0, batch=cfg.batch, segment=4)
    for workers in (0, 2):
        drawn = [b for _, b in zip(range(6), batches(data, start=0, workers=workers, **kw))]
        # TrainConfig.sizes: step s uses sizes[s % 2] (the segment of 4 restarts the cycle at step 4)
        assert [tuple(lq.shape) for lq, _ in drawn] == [(3, 1, 16, 16), (1, 1, 32, 32)] * 3, workers
        assert all(lq.dtype == gt.dtype == torch.float32 and lq.shape == gt.shape for lq, gt in drawn)
    full = [b for _, b in zip(range(7), batches(data, start=0, **kw))]
    for start in (4, 5):  # at a segment boundary and inside a segment (a wall-clock checkpoint)
        resumed = [b for _, b in zip(range(7 - start), batches(data, start=start, **kw))]
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full[start:], resumed))
    assert not torch.equal(full[0][0], full[2][0])  # the cycle draws new pairs, it does not repeat them
    for bad, match in (([[32]], "pairs"), ([[4, 2]], "patch >= 8"), ("32x1", "pairs"), ([[32.5, 1]], "integers")):
        with pytest.raises(ValueError, match=match):
            config(tmp_path, patch=16, mixed_patches=bad)
    with pytest.raises(ValueError, match="ckpt_every \\(3\\) must be a multiple of the 2 patch sizes"):
        config(tmp_path, patch=16, mixed_patches=[[32, 1]], ckpt_every=3)  # one size would get 2 steps in 3
    assert config(tmp_path, mixed_patches=None).sizes == ((16, 4),)  # JSON null: no further sizes
    folder = th.write_blob_folder(tmp_path / "ds", counts=(4, 1))
    with pytest.raises(ValueError, match="simulated stream"):
        config(tmp_path, data=str(folder), mixed_patches=[[32, 1]])
    train(dataclasses.replace(cfg, steps=4, ckpt_every=2, val_every=4))  # the loop takes batches of both sizes
    assert [int(r["step"]) for r in read_log(Path(cfg.out))] == list(range(5))


def test_tiny_model_lowers_validation_loss_on_simulated_pairs(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--method", "tinyconv", "--preset", "tiny", "--synthetic", "--steps", "30",
                 "--batch", "4", "--patch", "32", "--lr", "2e-3", "--val-every", "10", "--ckpt-every", "30",
                 "--protocol", "authors-psf", "--snr", "none", "--device", "cpu", "--out", str(run)]) == 0
    stored = TrainConfig.from_json(run / "config.json").protocol
    assert stored.pairs.snr_db is None and stored.pairs.gradient == 9.0 and stored.canvas is None
    rows = read_log(run)
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(val) == 4 and val[-1] < 0.7 * val[0], val
    assert [int(r["step"]) for r in rows] == list(range(31))
    assert all(float(r["img_per_s"]) > 0 and float(r["lr"]) > 0 for r in rows[1:])
    # the final model reloads without the training code, with the seed and label in its json
    model = load_model(run / "model.safetensors")
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    meta = json.loads((run / "model.json").read_text())
    assert (meta["label"], meta["seed"], meta["method"]) == ("tinyconv", 101, "tinyconv")


@pytest.mark.parametrize("source", ["stream", "folder"])
def test_killed_run_resumes_to_identical_weights(tmp_path, source):
    if source == "folder":
        folder = th.write_blob_folder(tmp_path / "ds", counts=(10, 1))
        data = TrainData(train=PairedFolder(folder, "train", patch=16, augment=True), val=[th.blob_data().val[0]])
        KillingFolder.after = 4 * 6  # dies during step 7, after the checkpoint of step 4
        killed = TrainData(train=KillingFolder(folder, "train", patch=16, augment=True), val=data.val)
    else:
        data = th.blob_data()
        killed = TrainData(train=killing_stream(after=4 * 6), val=data.val)

    whole = train(config(tmp_path, "whole"), data=data)
    cfg = config(tmp_path, "killed")
    with pytest.raises(SimulatedKill):
        train(cfg, data=killed)
    assert torch.load(Path(cfg.out) / "checkpoint.pt", weights_only=False)["step"] == 4
    resumed = train(cfg, resume=True, data=data)

    assert th.state_digest(resumed) == th.state_digest(whole)  # bit for bit
    strip = lambda rows: [{k: v for k, v in r.items() if k != "img_per_s"} for r in rows]  # noqa: E731
    assert strip(read_log(Path(cfg.out))) == strip(read_log(tmp_path / "whole"))

    with pytest.raises(ValueError, match="different settings.*batch"):
        train(config(tmp_path, "killed", batch=2), resume=True, data=data)


def test_weight_average_follows_its_closed_form_and_swaps_back():
    from mpimamba.train.ema import WeightAverage

    net = torch.nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(0.0)
    ema = WeightAverage(net, decay=0.75)
    for value in (2.0, 4.0):
        with torch.no_grad():
            net.weight.fill_(value)
        ema.update(net)
    # warm-up: d_1 = 2/11, d_2 = 3/12 (below the decay 0.75)
    first = 2 / 11 * 1.0 + 9 / 11 * 2.0
    assert torch.allclose(ema.average["weight"], torch.full((1, 2), 0.25 * first + 0.75 * 4.0))
    with ema.applied(net):
        assert torch.allclose(net.weight, torch.full((1, 2), 0.25 * first + 0.75 * 4.0))
    assert torch.equal(net.weight, torch.full((1, 2), 4.0))  # its own weights again
    for _ in range(40):
        ema.update(net)
    assert ema.current_decay() == 0.75  # the warm-up has reached the decay
    other = WeightAverage(net, decay=0.75)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.average["weight"], ema.average["weight"]) and other.updates == 42
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict({"weights": {"weight": ema.average["weight"]}, "updates": 1})
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_weight_average_restarts_each_phase_and_holds_little_of_fresh_weights(tmp_path):
    torch.manual_seed(101)
    init = build("twophase", "tiny").state_dict()
    plain = train(config(tmp_path, "plain", method="twophase", steps=6), data=th.blob_data()).state_dict()
    averaged = train(config(tmp_path, "avg", method="twophase", steps=6, ema_decay=0.999),
                     data=th.blob_data()).state_dict()
    # phase 2 freezes `first`: its average restarted at phase 2 from the weights phase 1 left, and stays them
    assert torch.equal(averaged["first.weight"], plain["first.weight"])
    # `second` trains from its initial weights in phase 2: the warm-up keeps little of them in the average
    moved = (plain["second.weight"] - init["second.weight"]).norm()
    assert (averaged["second.weight"] - plain["second.weight"]).norm() < 0.5 * moved
    assert not torch.equal(averaged["second.weight"], plain["second.weight"])


def test_weight_average_is_validated_written_and_resumed_exactly(tmp_path):
    data = th.blob_data()
    whole = train(config(tmp_path, "whole", ema_decay=0.8), data=data)
    ckpt = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    final = whole.state_dict()
    average = ckpt["ema"]["weights"]
    assert all(torch.equal(final[k], v) for k, v in average.items())  # the model written is the average
    assert not all(torch.equal(ckpt["model"][k], v) for k, v in average.items())  # not the last weights
    assert th.state_digest(load_model(tmp_path / "whole")) == th.state_digest(whole)
    # what the log validated at the end is the average
    seed = derive_seed(101, 0, 2**32)  # the loop's validation seed of phase 0
    last = read_log(tmp_path / "whole")[-1]
    assert float(last["val_psnr"]) == pytest.approx(validate(whole, whole.phases[0], data.val, torch.device("cpu"),
                                                             seed)[1], abs=1e-3)

    cfg = config(tmp_path, "killed", ema_decay=0.8)
    with pytest.raises(SimulatedKill):
        train(cfg, data=TrainData(train=killing_stream(after=4 * 6), val=data.val))
    assert "ema" in torch.load(Path(cfg.out) / "checkpoint.pt", weights_only=True)
    resumed = train(cfg, resume=True, data=data)
    assert th.state_digest(resumed) == th.state_digest(whole)  # the average resumes bit for bit too
    with pytest.raises(ValueError, match="different settings.*ema_decay"):
        train(config(tmp_path, "killed"), resume=True, data=data)


def test_two_phases_run_in_order_from_one_call(tmp_path):
    cfg = config(tmp_path, method="twophase", steps=6, ckpt_every=6, val_every=3)
    torch.manual_seed(cfg.seed)
    init = build("twophase", "tiny")
    with pytest.raises(SimulatedKill):  # dies at the first batch of phase 2
        train(cfg, data=TrainData(train=killing_stream(after=4 * 6), val=th.blob_data().val))
    after_phase1 = torch.load(Path(cfg.out) / "checkpoint.pt", weights_only=False)
    assert (after_phase1["phase"], after_phase1["step"]) == ("phase1", 6)
    model = train(cfg, resume=True, data=th.blob_data())

    p1 = {k.removeprefix("model."): v for k, v in after_phase1["model"].items()}
    final, start = model.state_dict(), init.state_dict()
    assert not torch.equal(p1["first.weight"], start["first.weight"])  # phase 1 trains `first` ...
    assert torch.equal(p1["second.weight"], start["second.weight"])  # ... and leaves `second` alone
    assert torch.equal(final["first.weight"], p1["first.weight"])  # phase 2 freezes `first` ...
    assert not torch.equal(final["second.weight"], p1["second.weight"])  # ... and trains `second`
    assert all(p.requires_grad for p in model.parameters())  # freezing is undone afterwards
    phases = [(r["phase"], int(r["step"])) for r in read_log(Path(cfg.out))]
    assert phases == [("phase1", s) for s in range(7)] + [("phase2", s) for s in range(7)]


def test_fine_tuning_starts_from_given_weights_and_trains_only_the_chosen_phases(tmp_path):
    first = train(config(tmp_path, "first", method="twophase", steps=4), data=th.blob_data())
    cfg = config(tmp_path, "tuned", method="twophase", steps=4, init=str(tmp_path / "first"), phases=["phase2"])
    assert TrainConfig.from_json(cfg.to_json()) == cfg and cfg.phases == ("phase2",)
    tuned = train(cfg, data=th.blob_data())
    start, final = first.state_dict(), tuned.state_dict()
    assert torch.equal(final["first.weight"], start["first.weight"])  # phase 1 skipped: `first` as given
    assert not torch.equal(final["second.weight"], start["second.weight"])  # phase 2 went on from `second`
    assert {r["phase"] for r in read_log(Path(cfg.out))} == {"phase2"}

    with pytest.raises(ValueError, match="no phase 'phase3'.*phase1, phase2"):
        train(config(tmp_path, "bad", method="twophase", phases=["phase3"]), data=th.blob_data())
    with pytest.raises(ValueError, match="--init .*same method"):  # another network's weights
        train(config(tmp_path, "other", init=str(tmp_path / "first")), data=th.blob_data())
    with pytest.raises(FileNotFoundError, match="not found"):
        train(config(tmp_path, "missing", init=str(tmp_path / "nowhere")), data=th.blob_data())


def test_validation_psnr_scores_the_inference_output_in_every_phase():
    # TwoPhase's phase-1 output is `first(lq)` alone, as MPI-Mamba's phase 1 restores with the ground-truth
    # prior; val_psnr must score what the model deploys, through the restoration path calibrate writes
    # (infer.Restoration: max-normalised, clamped at zero), val_loss the phase's loss
    model, val = th.TwoPhase(), th.blob_data(val=3).val
    loss, score = validate(model, "phase1", val, torch.device("cpu"), seed=0)
    assert model.training  # the mode is restored
    model.eval()
    with torch.no_grad():
        inference = [float(psnr(Restoration(model)(lq[0].numpy()), gt[0].numpy())) for lq, gt in val]
        phase = [model.training_loss(lq[None], gt[None], "phase1") for lq, gt in val]
    assert score == pytest.approx(sum(inference) / len(val))
    assert loss == pytest.approx(sum(float(r["loss"]) for r in phase) / len(val))
    phase_psnr = sum(float(psnr(r["output"][0], gt)) for r, (_, gt) in zip(phase, val)) / len(val)
    assert abs(score - phase_psnr) > 0.1  # the two outputs differ here, so the check above can fail


def test_validation_of_a_large_image_takes_its_loss_over_tiles():
    from mpimamba.infer import AUTO_TILE
    from mpimamba.train.loop import _loss_tiles

    tiles = _loss_tiles(1000, 600)
    covered = torch.zeros(1000, 600, dtype=torch.int32)
    for rows, cols in tiles:
        assert rows.stop - rows.start <= AUTO_TILE and cols.stop - cols.start <= AUTO_TILE
        covered[rows, cols] += 1
    assert bool((covered == 1).all())  # every pixel once
    assert _loss_tiles(300, 512) == [(slice(0, 300), slice(0, 512))]  # what inference runs whole stays whole

    class Pointwise(th.TinyConv):  # a 1x1 network: its L1 loss over tiles is its loss over the image
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Conv2d(1, 1, 1)

    model, g = Pointwise(), torch.Generator().manual_seed(0)
    val = [th.blob_pair(g, 600)]
    loss, _ = validate(model, "main", val, torch.device("cpu"), seed=0)
    with torch.no_grad():
        whole = float(model.training_loss(val[0][0][None], val[0][1][None])["loss"])
    assert loss == pytest.approx(whole, rel=1e-5)


def test_torchrun_two_processes_hold_identical_replicas(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ("nafnet", "twophase"):
        weights0, batch0 = (tmp_path / f"{method}.rank0.txt").read_text().split()
        weights1, batch1 = (tmp_path / f"{method}.rank1.txt").read_text().split()
        assert weights0 == weights1  # DDP kept the replicas in step
        assert batch0 != batch1  # ... while each rank read its own data
        saved = load_model(tmp_path / method / "model.safetensors")  # written by rank 0 only
        assert th.state_digest(saved) == weights0
        torch.manual_seed(101)
        assert th.state_digest(build(method, "tiny")) != weights0  # and it did train
        assert len(read_log(tmp_path / method)) > 3


def run_cli(*args) -> int:
    return main(["train", *map(str, args)])


def test_cli_trains_refuses_existing_run_and_resumes(tmp_path, capsys):
    folder = th.write_blob_folder(tmp_path / "ds", counts=(8, 1))
    run = tmp_path / "run"
    common = ["--method", "tinyconv", "--preset", "tiny", "--data", folder, "--batch", 2, "--patch", 16,
              "--ckpt-every", 2, "--val-every", 2, "--device", "cpu", "--out", run]
    assert run_cli(*common, "--steps", 2) == 0
    assert (run / "model.safetensors").is_file() and (run / "checkpoint.pt").is_file()

    assert run_cli(*common, "--steps", 2) == 2
    assert "already exists; pass --resume" in capsys.readouterr().err
    assert run_cli(*common, "--steps", 4, "--overwrite") == 0
    assert int(read_log(run)[-1]["step"]) == 4
    assert run_cli("--out", run, "--resume") == 0  # finished run: nothing left to do
    assert run_cli("--out", run, "--resume", "--batch", 4) == 2
    assert "different settings (batch: run has 2, got 4)" in capsys.readouterr().err
    assert run_cli("--out", tmp_path / "nothing", "--resume") == 2
    assert "cannot resume" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--method", "nosuchnet", "--synthetic"], "unknown method 'nosuchnet'; expected one of"),
    (["--method", "tinyconv", "--preset", "huge", "--synthetic"], "unknown preset 'huge' for tinyconv"),
    (["--method", "tinyconv"], "--data DIR or --synthetic"),
    (["--synthetic"], "--method is required"),
    (["--method", "tinyconv", "--synthetic", "--override", "width"], "KEY=VALUE"),
])
def test_cli_bad_names_give_clear_errors(tmp_path, capsys, args, message):
    assert run_cli(*args, "--out", tmp_path / "run", "--device", "cpu") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_cli_mixed_patch_option_is_parsed_or_refused(capsys):
    parser = build_parser()
    args = parser.parse_args(["train", "--out", "r", "--mixed-patch", "128x2", "--mixed-patch", "96X3"])
    assert args.mixed_patches == [(128, 2), (96, 3)]
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(["train", "--out", "r", "--mixed-patch", "128by2"])
    assert stopped.value.code == 2
    assert "--mixed-patch: expected PATCHxBATCH such as 128x2, got '128by2'" in capsys.readouterr().err
