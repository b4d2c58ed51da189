"""One training loop for every method.

The loop knows a network only through the `Restorer` training interface: `model.phases` (run in
order; MPI-Mamba and DiffIR have two), `model.training_loss(lq, gt, phase)` and
`model.phase_parameters(phase)`. Each phase gets a fresh AdamW and a schedule that holds the lr for
the first half of the phase and then decays it along a cosine towards `min_lr` (the released recipe).

Outputs in the run folder RUN (rank 0 only):
- `checkpoint.pt` every `ckpt_every` steps and at the end of each phase, written atomically: model,
  optimiser, scheduler, phase, step and config. `resume=True` continues from it.
- `log.csv` (+ TensorBoard events when installed; `val_psnr` scores the inference output `model(lq)`,
  see `validate`), `config.json`, and the final model as
  `model.safetensors` + `model.json` (loadable with `mpimamba.models.load_model`).

Exact resume: the batches of a step are a function of (seed, phase, step, rank) (see `train.data`), and
the global torch RNG (diffusion noise, dropout) is reseeded from the same tuple before every step, so
a resumed run repeats an uninterrupted one bit for bit on CPU and the checkpoint needs no RNG state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import shutil
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..eval.metrics import psnr
from ..fileutil import atomic_path, write_text_atomic
from ..infer import Restoration
from ..locks import folder_lock
from ..models import build
from ..models.base import Restorer
from ..models.checkpoint import save_model
from . import distributed
from .config import TrainConfig
from .data import TrainData, batches, build_data, derive_seed
from .log import RunLog

FIT_PAIRS = 32  # validation pairs a training-free method is fitted on at least (all of a smaller split)
RUN_FILES = ("checkpoint.pt", "log.csv", "config.json", "model.safetensors", "model.json", "fit.json")


class ConstantThenCosine:
    """lr multiplier at a step: 1 for the first `constant_fraction` of `total`, then a cosine to `min_ratio`."""

    def __init__(self, total: int, constant_fraction: float, min_ratio: float):
        self.total, self.constant_fraction, self.min_ratio = total, constant_fraction, min_ratio

    def __call__(self, step: int) -> float:
        flat = int(self.total * self.constant_fraction)
        if step < flat:
            return 1.0
        t = min(1.0, (step - flat) / max(1, self.total - flat))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t))


class PhaseLoss(nn.Module):
    """`model.training_loss` for one phase as a `forward`, so DistributedDataParallel can wrap it."""

    def __init__(self, model: Restorer, phase: str):
        super().__init__()
        self.model, self.phase = model, phase

    def forward(self, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.training_loss(lq, gt, self.phase)


@torch.no_grad()
def validate(model: Restorer, phase: str, val: list, device: torch.device, seed: int) -> tuple[float, float]:
    """(mean loss, mean PSNR) over the validation pairs, in eval mode.

    The loss is the phase's own training loss, the number the phase minimises. The PSNR (data range 1)
    always scores the inference output, through `infer.Restoration` (the path calibrate writes and
    evaluate scores: normalised, clamped at zero, tiled when large), in every phase: for the first
    phase of MPI-Mamba and DiffIR the phase's own output uses the prior extracted from the ground truth
    and would flatter the model, so there the PSNR is of the backbone restoring with the prior the
    (not yet trained) diffusion model generates from lq.
    """
    was_training = model.training
    model.eval()
    restoration = Restoration(model)
    losses, psnrs = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the same noise at every validation (diffusion priors sample)
        for lq, gt in val:  # (C, H, W) each, C = 1
            losses.append(float(model.training_loss(lq[None].to(device), gt[None].to(device), phase)["loss"]))
            psnrs.append(psnr(restoration(lq[0].cpu().numpy(), name="validation image"), gt[0].cpu().numpy()))
    model.train(was_training)
    return sum(losses) / len(losses), sum(psnrs) / len(psnrs)


def _check_run_dir(run: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber an existing run unless told to (read-only: every rank runs it)."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other")
    if run.exists() and not run.is_dir():
        raise FileExistsError(f"run folder {run} is a file")
    if resume:
        if not (run / "checkpoint.pt").is_file():
            raise FileNotFoundError(f"cannot resume: {run / 'checkpoint.pt'} not found")
    elif run.is_dir() and any(run.iterdir()) and not overwrite:
        raise FileExistsError(
            f"run folder {run} already exists; pass --resume to continue it or --overwrite to start over")


def _clear_run_dir(run: Path) -> None:
    """--overwrite: remove only what a run writes, never anything else in the folder."""
    for name in RUN_FILES:
        (run / name).unlink(missing_ok=True)
    shutil.rmtree(run / "tensorboard", ignore_errors=True)


def _load_checkpoint(run: Path, cfg: TrainConfig) -> dict:
    path = run / "checkpoint.pt"
    try:
        # weights_only: a run folder may come from someone else, and a full unpickle runs whatever code the
        # file names; tensors, numbers, strings and containers (all a checkpoint holds) load without it
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated, foreign or code-carrying file
        raise ValueError(f"cannot read checkpoint {path} as plain tensors and settings: "
                         f"{str(err).splitlines()[0]}") from err
    if not isinstance(ckpt, dict) or "config" not in ckpt:
        raise ValueError(f"checkpoint {path} is not a mpimamba training checkpoint (no 'config' entry)")
    changed = TrainConfig.from_dict(ckpt["config"]).differences(cfg)
    if changed:
        raise ValueError(f"cannot resume {run} with different settings ({'; '.join(changed)})")
    return ckpt


def _save_checkpoint(run: Path, model: Restorer, opt, sched, cfg: TrainConfig, phase_index: int, step: int) -> None:
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "phase": model.phases[phase_index],
        "phase_index": phase_index,
        "step": step,
        "config": cfg.to_dict(),
    }
    with atomic_path(run / "checkpoint.pt") as tmp:
        torch.save(state, tmp)


def _phase_parameters(model: Restorer, phase: str, base_flags: list[bool]) -> list[nn.Parameter]:
    """Make exactly the phase's parameters trainable (others frozen) and return them."""
    for p, flag in zip(model.parameters(), base_flags):
        p.requires_grad_(flag)
    params = list(model.phase_parameters(phase))
    if not params:
        raise ValueError(f"{type(model).__name__}.phase_parameters({phase!r}) returned no parameters")
    chosen = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(p.requires_grad and id(p) in chosen)
    return params


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          data: TrainData | None = None) -> Restorer:
    """Train `cfg.method` through all its phases; return the trained network (on `cfg.device`)."""
    ctx = distributed.setup(cfg.device)
    try:
        return _train(cfg, ctx, resume, overwrite, data)
    finally:
        distributed.teardown(ctx)


def _fit_training_free(cfg: TrainConfig, ctx: distributed.Context, model: Restorer, val: list, run: Path) -> Restorer:
    """Deconvolution methods have one setting and no weights: pick it on the validation pairs (the rule is
    in models.classical.deconvolution) and save the model like a trained one, with the scores of every
    candidate in RUN/fit.json."""
    scores = model.fit(val)
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "config.json", cfg.to_json())
        chosen = getattr(model, model.SETTING)
        at_edge = chosen in (model.GRID[0], model.GRID[-1])  # the best may lie beyond the values tried
        report = {"setting": model.SETTING, "chosen": chosen, "at_edge_of_grid": at_edge,
                  "validation_pairs": len(val), "mean_psnr_per_value": {str(k): v for k, v in scores.items()}}
        write_text_atomic(run / "fit.json", json.dumps(report, indent=2) + "\n")
        save_model(model, run / "model", extra={"label": cfg.run_label, "seed": cfg.seed, "training": cfg.to_dict()})
        print(f"{cfg.method}: {model.SETTING} = {chosen} (validation PSNR {scores[chosen]:.2f} dB over {len(val)} pairs"
              + (", at the edge of the values tried)" if at_edge else ")"))
    distributed.barrier(ctx)
    return model


def _train(cfg: TrainConfig, ctx: distributed.Context, resume: bool, overwrite: bool,
           data: TrainData | None) -> Restorer:
    # rank 0 holds the run folder's lock for the whole run: a second train (or --overwrite, or --resume)
    # on a live run is refused instead of replacing it or training it twice
    with folder_lock(cfg.out, "run folder") if ctx.is_main else contextlib.nullcontext():
        return _train_locked(cfg, ctx, resume, overwrite, data)


def _train_locked(cfg: TrainConfig, ctx: distributed.Context, resume: bool, overwrite: bool,
                  data: TrainData | None) -> Restorer:
    run = Path(cfg.out)
    _check_run_dir(run, resume, overwrite)
    ckpt = _load_checkpoint(run, cfg) if resume else None
    distributed.barrier(ctx)  # every rank has looked at RUN before rank 0 changes it
    if ctx.is_main and overwrite:
        _clear_run_dir(run)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = build(cfg.method, cfg.preset, **cfg.overrides).to(ctx.device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    model.train()
    if data is None:
        # a training-free method (models.classical) is fitted on validation pairs alone, cheaply: use more
        data_cfg = cfg if model.phases else dataclasses.replace(cfg, val_images=max(cfg.val_images, FIT_PAIRS))
        data = build_data(data_cfg)
    if not data.val:
        raise ValueError("the validation set is empty")
    if not model.phases:  # choose the training-free method's setting on the validation pairs
        return _fit_training_free(cfg, ctx, model, data.val, run)

    start_phase, start_step = (ckpt["phase_index"], ckpt["step"]) if ckpt is not None else (0, 0)
    log = None
    if ctx.is_main:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "config.json", cfg.to_json())
        log = RunLog(run, model.phases, keep_until=(start_phase, start_step) if ckpt is not None else None)
    distributed.barrier(ctx)

    base_flags = [p.requires_grad for p in model.parameters()]
    try:
        for pi, phase in enumerate(model.phases):
            if pi < start_phase or (pi == start_phase and start_step >= cfg.steps):
                continue  # finished before the checkpoint
            resume_state = ckpt if (ckpt is not None and pi == start_phase) else None
            _train_phase(cfg, ctx, model, data, log, pi, base_flags, resume_state)
    finally:
        if log is not None:
            log.close()
    for p, flag in zip(model.parameters(), base_flags):
        p.requires_grad_(flag)

    if ctx.is_main:
        save_model(model, run / "model", extra={"label": cfg.run_label, "seed": cfg.seed,
                                                 "training": cfg.to_dict()})
    distributed.barrier(ctx)
    return model


def _train_phase(cfg: TrainConfig, ctx: distributed.Context, model: Restorer, data: TrainData,
                 log: RunLog | None, pi: int, base_flags: list[bool], resume_state: dict | None) -> None:
    phase = model.phases[pi]
    params = _phase_parameters(model, phase, base_flags)
    # several phases = parts of the network sit idle in some phase; DDP must be told to expect that
    net = distributed.wrap(PhaseLoss(model, phase), ctx, find_unused=len(model.phases) > 1)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, ConstantThenCosine(cfg.steps, cfg.constant_fraction, cfg.min_lr / cfg.lr))
    start = 0
    if resume_state is not None:
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        start = resume_state["step"]
    val_seed = derive_seed(cfg.seed, pi, 2**32)

    if log is not None and start == 0:  # the untrained baseline of the phase
        val_loss, val_psnr = validate(model, phase, data.val, ctx.device, val_seed)
        log.write(phase, 0, val_loss=val_loss, val_psnr=val_psnr)

    stream = batches(data, seed=cfg.seed, phase=pi, start=start, batch=cfg.batch, rank=ctx.rank,
                     world=ctx.world, workers=cfg.workers, segment=cfg.ckpt_every)
    bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.method} {phase}", disable=not ctx.is_main,
               dynamic_ncols=True)
    tick = time.perf_counter()
    for step in range(start, cfg.steps):
        lq, gt = next(stream)  # (B, C, H, W) each
        lq, gt = lq.to(ctx.device, non_blocking=True), gt.to(ctx.device, non_blocking=True)
        torch.manual_seed(derive_seed(cfg.seed, pi, step, ctx.rank))
        lr = opt.param_groups[0]["lr"]
        loss = net(lq, gt)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{phase} step {step + 1}: the loss is {loss_value}")

        done = step + 1
        img_per_s = cfg.batch * ctx.world / max(time.perf_counter() - tick, 1e-9)  # data + step, all ranks
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{img_per_s:.1f}", refresh=False)
        if log is not None:
            val_loss = val_psnr = None
            if done % cfg.val_every == 0 or done == cfg.steps:
                val_loss, val_psnr = validate(model, phase, data.val, ctx.device, val_seed)
            log.write(phase, done, loss=loss_value, lr=lr, img_per_s=img_per_s, val_loss=val_loss,
                      val_psnr=val_psnr)
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                _save_checkpoint(Path(cfg.out), model, opt, sched, cfg, pi, done)
        tick = time.perf_counter()  # validation and checkpoints do not count against the speed
    bar.close()
    del net, opt, sched  # drop DDP's gradient hooks before the next phase wraps the model again
    gc.collect()
