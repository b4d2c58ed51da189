"""The training terms beside the networks' own losses (mpimamba.train.terms)."""

import csv

import pytest
import torch

from mpimamba.train.terms import edge_loss, local_mass_loss, squared_error_loss


def test_local_mass_loss_counts_tracer_per_block_not_its_position():
    gt = torch.zeros(1, 1, 16, 16)
    gt[..., 2, 1:7] = 1.0  # a thin line inside the top-left 8x8 block
    moved = torch.zeros_like(gt)
    moved[..., 5, 1:7] = 1.0  # the same line three rows down, still inside that block
    assert float(local_mass_loss(gt, gt)) == 0.0
    assert float(local_mass_loss(moved, gt)) == 0.0  # same tracer per block: nothing to correct
    assert float(torch.nn.functional.l1_loss(moved, gt)) > 0  # while the pixel loss sees the shift
    # a line at half its level: that block lacks 6 * 0.5 / 64 of its mean, the other three blocks agree
    assert float(local_mass_loss(0.5 * gt, gt)) == pytest.approx(6 * 0.5 / 64 / 4)
    # tracer moved into the next block: both blocks are off by the line's block mean
    across = torch.zeros_like(gt)
    across[..., 10, 1:7] = 1.0
    assert float(local_mass_loss(across, gt)) == pytest.approx(2 * (6 / 64) / 4)


def test_local_mass_loss_partial_blocks_and_gradient():
    # 10x10 with 8-px blocks: four blocks, three of them partial, each averaged over the pixels it has
    out = torch.ones(2, 1, 10, 10, requires_grad=True)
    loss = local_mass_loss(out, torch.zeros(2, 1, 10, 10))
    assert float(loss) == pytest.approx(1.0)
    loss.backward()
    # d loss / d pixel = 1 / (blocks in the batch * pixels in the pixel's block)
    assert float(out.grad[0, 0, 0, 0]) == pytest.approx(1 / (8 * 64))
    assert float(out.grad[0, 0, 9, 9]) == pytest.approx(1 / (8 * 4))
    with pytest.raises(ValueError, match="one shape"):
        local_mass_loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 16))


def test_squared_error_loss_values_and_gradient():
    gt = torch.zeros(1, 1, 4, 4)
    out = gt.clone()
    out[..., 0, 0] = 2.0  # one pixel off by 2 of 16: (2^2) / 16
    assert float(squared_error_loss(out, gt)) == pytest.approx(4 / 16)
    out.requires_grad_(True)
    squared_error_loss(out, gt).backward()
    assert float(out.grad[0, 0, 0, 0]) == pytest.approx(2 * 2 / 16) and float(out.grad[0, 0, 1, 1]) == 0.0
    # what it is for: against a line that lies in one of two rows with equal chance, the pixel L1 is the same
    # for any level in [0, 1] of a half-bright guess in both rows, the squared error is least at the mean, 0.5
    a, b = torch.zeros(1, 1, 2, 1), torch.zeros(1, 1, 2, 1)
    a[..., 0, 0], b[..., 1, 0] = 1.0, 1.0
    expected = lambda loss, level: float(loss(torch.full_like(a, level), a) + loss(torch.full_like(b, level), b))  # noqa: E731
    l1 = torch.nn.functional.l1_loss
    assert expected(l1, 0.0) == pytest.approx(expected(l1, 0.5)) == pytest.approx(expected(l1, 1.0))
    assert expected(squared_error_loss, 0.5) < min(expected(squared_error_loss, 0.0), expected(squared_error_loss, 1.0))
    with pytest.raises(ValueError, match="one shape"):
        squared_error_loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 16))


def test_edge_loss_values_gradient_and_its_weight_by_spatial_frequency():
    gt = torch.zeros(1, 1, 3, 3)
    gt[..., 1, 1] = 1.0  # one bright pixel: 2 differences of 1 along W (of 6), 2 along H (of 6)
    assert float(edge_loss(gt, gt)) == 0.0
    assert float(edge_loss(torch.zeros_like(gt), gt)) == pytest.approx(2 / 6 + 2 / 6)
    assert float(edge_loss(gt + 0.3, gt)) == pytest.approx(0.0, abs=1e-6)  # an offset has no gradient
    out = torch.zeros_like(gt, requires_grad=True)
    edge_loss(out, gt).backward()
    # the centre pixel is in 4 differences, each pulling it up by 1/6
    assert float(out.grad[0, 0, 1, 1]) == pytest.approx(-4 / 6)
    # what it is for: the pixel L1 weighs an error alike at every spatial frequency, the edge term by its
    # frequency: nothing for an offset, 4x the L1 for the finest detail (a +-a checkerboard: every
    # neighbour difference is 2a, along W and along H)
    big = torch.zeros(1, 1, 8, 8)
    checkerboard = 0.1 * (-1.0) ** (torch.arange(8)[:, None] + torch.arange(8)[None, :])  # (8, 8)
    l1 = torch.nn.functional.l1_loss
    assert float(edge_loss(big + 0.1, big)) == pytest.approx(0.0, abs=1e-6) and float(l1(big + 0.1, big)) == pytest.approx(0.1)
    assert float(edge_loss(big + checkerboard, big)) == pytest.approx(4 * float(l1(big + checkerboard, big)))
    with pytest.raises(ValueError, match="one shape"):
        edge_loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 16))
    with pytest.raises(ValueError, match="H, W >= 2"):
        edge_loss(torch.zeros(1, 1, 1, 8), torch.zeros(1, 1, 1, 8))


def _tiny_training_log(out, *extra) -> list[dict]:
    """The step rows of log.csv of a 3-step tiny NAFNet run on the simulated stream, with `extra` flags."""
    from mpimamba.cli import main

    assert main(["train", "--method", "nafnet", "--preset", "tiny", "--synthetic", "--steps", "3", "--batch", "2",
                 "--patch", "16", "--protocol", "authors-psf", "--canvas", "32", "--device", "cpu",
                 "--out", str(out), *extra]) == 0
    with open(out / "log.csv") as f:
        return [r for r in csv.DictReader(f) if r["loss"]]


def test_training_with_the_physics_term(tmp_path):
    """--physics-weight adds the consistency term to every step's loss (the logged loss changes by the
    logged term, the weight is stored with the run); a paired folder is refused, it has no geometry."""
    from mpimamba.train import TrainConfig

    plain = _tiny_training_log(tmp_path / "plain")
    physics = _tiny_training_log(tmp_path / "physics", "--physics-weight", "1.0")
    assert len(plain) == len(physics) == 3 and all(r["physics"] == "" for r in plain)
    # same weights and first batch: the first loss differs by exactly the logged term (weight 1)
    term = float(physics[0]["physics"])
    assert term > 0 and float(physics[0]["loss"]) == pytest.approx(float(plain[0]["loss"]) + term, rel=1e-4)
    assert TrainConfig.from_json(tmp_path / "physics" / "config.json").physics_weight == 1.0
    with pytest.raises(ValueError, match="simulated"):
        TrainConfig(data=str(tmp_path), physics_weight=0.5)


@pytest.mark.parametrize("column, weight", [("mass", 2.0), ("mse", 10.0), ("edge", 0.5)])
def test_training_with_a_weighted_term(tmp_path, column, weight):
    """--mass-weight / --mse-weight / --edge-weight add their term to every step's loss (the first loss, same weights and
    batch, differs by exactly the logged term times its weight), are stored with the run, and are refused
    when negative or not finite."""
    from mpimamba.train import TrainConfig

    plain = _tiny_training_log(tmp_path / "plain")
    with_term = _tiny_training_log(tmp_path / column, f"--{column}-weight", str(weight))
    assert len(plain) == len(with_term) == 3 and all(r[column] == "" for r in plain)
    term = float(with_term[0][column])
    assert term > 0
    assert float(with_term[0]["loss"]) == pytest.approx(float(plain[0]["loss"]) + weight * term, rel=1e-4)
    assert getattr(TrainConfig.from_json(tmp_path / column / "config.json"), f"{column}_weight") == weight
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=f"{column}_weight"):
            TrainConfig(**{f"{column}_weight": bad})


def test_resumed_log_of_an_older_version_is_padded_to_the_new_columns(tmp_path):
    """A run begun before the `mass` column existed keeps its rows on resume, each padded to every column."""
    from mpimamba.train.log import COLUMNS, RunLog

    old = ("phase", "step", "loss", "lr", "img_per_s", "val_loss", "val_psnr", "physics")
    (tmp_path / "log.csv").write_text(",".join(old) + "\nmain,1,0.5,0.001,3.0,,,\nmain,2,0.4,0.001,3.0,,,\n")
    log = RunLog(tmp_path, ("main",), keep_until=(0, 1))
    log.write("main", 2, loss=0.3, mass=0.01)
    log.close()
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(COLUMNS) and all(len(r) == len(COLUMNS) for r in rows)
    assert [r[1] for r in rows[1:]] == ["1", "2"] and rows[2][COLUMNS.index("mass")] == "0.01"


def test_every_training_term_is_one_registry_entry_the_cli_config_and_log_all_use():
    """train.terms.TERMS is the one list: the CLI's flags (named without importing torch), the TrainConfig
    weights, the log's columns and the terms a config switches on all follow it."""
    import dataclasses

    from mpimamba.cli import TERM_HELP, build_parser
    from mpimamba.train import TrainConfig
    from mpimamba.train.log import COLUMNS
    from mpimamba.train.terms import TERMS, switched_on

    names = tuple(term.name for term in TERMS)
    assert tuple(TERM_HELP) == names and COLUMNS[-len(names):] == names
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert all(fields[term.field] == 0.0 for term in TERMS)  # every term off unless asked for
    args = build_parser().parse_args(["train", "--out", "RUN", *(f"--{name}-weight=0.5" for name in names)])
    assert all(getattr(args, term.field) == 0.5 for term in TERMS)
    cfg = TrainConfig(mse_weight=3.0, edge_weight=1.0)
    assert [(term.name, weight) for term, weight in switched_on(cfg)] == [("mse", 3.0), ("edge", 1.0)]
    assert switched_on(TrainConfig()) == []
