"""One training loop for every method.

The loop knows a network only through the `Restorer` training interface: `model.phases` (run in
order; MPI-Mamba and DiffIR have two), `model.training_loss(lq, gt, phase)` and
`model.phase_parameters(phase)`. Each phase gets a fresh AdamW and a schedule that holds the lr for
the first half of the phase and then decays it along a cosine towards `min_lr` (the released recipe).

Outputs in the run folder RUN (rank 0 only):
- `checkpoint.pt` every `ckpt_every` steps, at the end of each phase, at least every `ckpt_minutes` of
  wall time, and when the run is asked to stop (Ctrl-C), always after a completed optimiser step and
  written atomically: model, optimiser, scheduler, phase, step and config (and the weight average of
  `ema_decay`, `train.ema`). `resume=True` continues from it. A loss that is not finite stops the run
  (`TrainingDiverged`) without writing one, so the last checkpoint on disk is the last good state.
- `log.csv` (+ TensorBoard events when installed; `val_psnr` scores the inference output `model(lq)`,
  see `validate`), `config.json`, and the final model as
  `model.safetensors` + `model.json` (loadable with `mpimamba.models.load_model`). With `ema_decay`, the
  weight average is what is validated and written as the model.

Exact resume: the batches of a step are a function of (seed, phase, step, rank) (see `train.data`), and
the global torch RNG (diffusion noise, dropout) is reseeded from the same tuple before every step, so
a resumed run repeats an uninterrupted one bit for bit on CPU and the checkpoint needs no RNG state. That
holds for a checkpoint at any step, also one inside a data segment (a wall-time or Ctrl-C checkpoint): the
stream of simulated pairs then regenerates the segment's earlier batches and drops them.

Stopping: while the phases run, SIGINT (Ctrl-C) and SIGTERM (what torchrun's agent and batch schedulers
send) do not interrupt a step half-way; the loop finishes the step it is in (with its log row, validation
and checkpoint when due), writes a checkpoint of that step and raises `TrainingInterrupted`. A second
Ctrl-C stops at once, keeping the last checkpoint written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import io
import json
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..eval.metrics import psnr
from ..fileutil import atomic_path, write_text_atomic
from ..infer import AUTO_TILE, WHOLE_MAX, Restoration
from ..locks import folder_lock
from ..models import build
from ..models.base import Restorer
from ..models.checkpoint import load_model, save_model
from . import distributed
from .config import TrainConfig
from .data import TrainData, batches, build_data, derive_seed
from .ema import WeightAverage
from .log import RunLog
from .terms import switched_on

FIT_PAIRS = 32  # validation pairs a training-free method is fitted on at least (all of a smaller split)
RUN_FILES = ("checkpoint.pt", "log.csv", "config.json", "model.safetensors", "model.json", "fit.json")
_clock = time.monotonic  # the wall clock of the time-based checkpoints (tests replace it)


class TrainingInterrupted(KeyboardInterrupt):
    """The run was asked to stop (Ctrl-C, SIGTERM) and stopped after a completed step.

    `phase` and `step`: where it stopped; `checkpoint`: the file holding that state (None when nothing had
    been trained yet, or on ranks other than 0).
    """

    def __init__(self, phase: str, step: int, checkpoint: Path | None):
        self.phase, self.step, self.checkpoint = phase, step, checkpoint
        saved = f"; checkpoint {checkpoint}" if checkpoint is not None else "; no checkpoint yet"
        super().__init__(f"stopped at {phase} step {step}{saved}")


class TrainingDiverged(FloatingPointError):
    """The training loss stopped being a finite number; the last checkpoint on disk is kept as it was."""

    def __init__(self, phase: str, step: int, loss: float, lr: float, checkpoint: tuple[str, int] | None,
                 what: str = "the loss became"):
        self.phase, self.step, self.loss, self.lr, self.checkpoint = phase, step, loss, lr, checkpoint
        kept = (f"the last checkpoint ({checkpoint[0]} step {checkpoint[1]}) is kept" if checkpoint is not None
                else "no checkpoint was written")
        super().__init__(f"{what} {loss} at {phase} step {step} (training diverged; {kept}); "
                         f"start over (--overwrite) with a lower --lr than {lr:g}")


class _StopRequests:
    """While active: SIGINT and SIGTERM ask the loop to stop at its next consistent point (`requested`)
    instead of interrupting it wherever it is; a second SIGINT raises KeyboardInterrupt at once.

    Only the main thread can own signal handlers; elsewhere this does nothing (and a KeyboardInterrupt
    then simply propagates, keeping the last checkpoint written).
    """

    def __init__(self):
        self.requested: int | None = None  # the signal received
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.requested == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now
        self.requested = signum
        if signum == signal.SIGINT:
            # os.write, not print: a signal handler may run in the middle of another write to sys.stderr
            with contextlib.suppress(OSError):
                os.write(2, b"\nstopping after the current step to save a checkpoint "
                            b"(Ctrl-C again to stop at once, keeping the last checkpoint)\n")


class _Checkpoints:
    """When rank 0 writes RUN/checkpoint.pt, and which state the file on disk holds (`at`)."""

    def __init__(self, run: Path, cfg: TrainConfig, is_main: bool, at: tuple[int, int] | None,
                 ema: WeightAverage | None = None):
        self.run, self.cfg, self.is_main, self.ema = run, cfg, is_main, ema
        self.at = at  # (phase index, step) of the checkpoint on disk, None when there is none
        self._since = _clock()

    def due(self, done: int) -> bool:
        """After `done` steps of a phase: every ckpt_every steps, at its end, after ckpt_minutes of wall time."""
        cfg = self.cfg
        return (done % cfg.ckpt_every == 0 or done == cfg.steps
                or _clock() - self._since >= cfg.ckpt_minutes * 60)

    def save(self, model: Restorer, opt, sched, phase_index: int, step: int) -> None:
        if self.at != (phase_index, step):
            # never save weights that are not finite (under DDP a non-finite loss on another rank reaches
            # them through the averaged gradients a step before this rank's loss shows it); every rank
            # holds the same weights, so every rank sees this and stops together
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                at = self.at
                raise TrainingDiverged(model.phases[phase_index], step, float("nan"), self.cfg.lr,
                                       (model.phases[at[0]], at[1]) if at is not None else None,
                                       what="the weights became")
            if self.is_main:
                _save_checkpoint(self.run, model, opt, sched, self.cfg, phase_index, step, self.ema)
            self.at = (phase_index, step)
        self._since = _clock()

    def path(self) -> Path | None:
        return self.run / "checkpoint.pt" if self.is_main and self.at is not None else None


class ConstantThenCosine:
    """lr multiplier at a step: 1 for the first `constant_fraction` of `total`, then a cosine to `min_ratio`;
    over the first `warmup` steps it rises linearly, (step + 1) / warmup, to the value it would have."""

    def __init__(self, total: int, constant_fraction: float, min_ratio: float, warmup: int = 0):
        self.total, self.constant_fraction, self.min_ratio = total, constant_fraction, min_ratio
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        ramp = (step + 1) / self.warmup if step < self.warmup else 1.0
        return ramp * self._plateau_then_cosine(step)

    def _plateau_then_cosine(self, step: int) -> float:
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


def _loss_tiles(height: int, width: int) -> list[tuple[slice, slice]]:
    """The whole image when it is at most infer.WHOLE_MAX a side (as inference runs it); else a grid of
    near-equal tiles of at most infer.AUTO_TILE a side, so the validation loss of a large image takes the
    memory of one tile, as its restoration does."""
    if max(height, width) <= WHOLE_MAX:
        return [(slice(0, height), slice(0, width))]

    def bounds(n: int) -> list[int]:
        pieces = -(-n // AUTO_TILE)
        return [round(i * n / pieces) for i in range(pieces + 1)]

    rows, cols = bounds(height), bounds(width)
    return [(slice(r0, r1), slice(c0, c1)) for r0, r1 in zip(rows, rows[1:]) for c0, c1 in zip(cols, cols[1:])]


@torch.no_grad()
def validate(model: Restorer, phase: str, val: list, device: torch.device, seed: int) -> tuple[float, float]:
    """(mean loss, mean PSNR) over the validation pairs, in eval mode.

    The loss is the phase's own training loss, the number the phase minimises; on images larger than
    infer.WHOLE_MAX a side it is the pixel-weighted mean of the loss over tiles (`_loss_tiles`), so that
    memory stays bounded. The PSNR (data range 1) always scores the inference output, through
    `infer.Restoration` (the path calibrate writes and evaluate scores: normalised, clamped at zero,
    tiled when large), in every phase: for the first phase of MPI-Mamba and DiffIR the phase's own
    output uses the prior extracted from the ground truth and would flatter the model, so there the
    PSNR is of the backbone restoring with the prior the (not yet trained) diffusion model generates
    from lq.
    """
    was_training = model.training
    model.eval()
    restoration = Restoration(model)
    losses, psnrs = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)  # the same noise at every validation (diffusion priors sample)
        for lq, gt in val:  # (C, H, W) each, C = 1
            tiles = _loss_tiles(*lq.shape[-2:])
            loss = 0.0
            for rows, cols in tiles:
                part = model.training_loss(lq[None, :, rows, cols].to(device), gt[None, :, rows, cols].to(device),
                                           phase)["loss"]
                share = ((rows.stop - rows.start) * (cols.stop - cols.start)) / (lq.shape[-2] * lq.shape[-1])
                loss += float(part) * share if len(tiles) > 1 else float(part)
            losses.append(loss)
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
        # a run stopped before its first checkpoint has only its settings: it resumes from its beginning
        if not (run / "checkpoint.pt").is_file() and not (run / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: {run / 'checkpoint.pt'} not found")
    elif run.is_dir() and any(run.iterdir()) and not overwrite:
        raise FileExistsError(
            f"run folder {run} already exists; pass --resume to continue it or --overwrite to start over")


def _clear_run_dir(run: Path) -> None:
    """--overwrite: remove only what a run writes, never anything else in the folder."""
    for name in RUN_FILES:
        (run / name).unlink(missing_ok=True)
    shutil.rmtree(run / "tensorboard", ignore_errors=True)


def _load_checkpoint(run: Path, cfg: TrainConfig) -> dict | None:
    """The run's checkpoint, refused when it holds other settings than `cfg`; None when the run stopped
    before writing one (then its config.json must hold `cfg`'s settings)."""
    path = run / "checkpoint.pt"
    if not path.is_file():
        try:
            stored = TrainConfig.from_json(run / "config.json")
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"cannot resume {run}: no checkpoint.pt, and config.json is unreadable ({err})") from err
        changed = stored.differences(cfg)
        if changed:
            raise ValueError(f"cannot resume {run} with different settings ({'; '.join(changed)})")
        return None
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


def _save_checkpoint(run: Path, model: Restorer, opt, sched, cfg: TrainConfig, phase_index: int, step: int,
                     ema: WeightAverage | None = None) -> None:
    state = {
        "model": model.state_dict(),
        **({"ema": ema.state_dict()} if ema is not None else {}),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "phase": model.phases[phase_index],
        "phase_index": phase_index,
        "step": step,
        "config": cfg.to_dict(),
    }
    # serialised in memory, then written as bytes: a full disk is then an OSError naming the file (torch's
    # own file writer reports it as "unexpected pos ..."), and the old checkpoint stays (atomic_path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = run / "checkpoint.pt"
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise


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


def _check_deconvolution_scan(cfg: TrainConfig, model: Restorer) -> None:
    """A deconvolution assumes one known scan: the protocol's pairs must be that scan, or the fit (and every
    score after it) would judge the method on pairs blurred by other PSFs."""
    pairs = cfg.protocol.pairs if cfg.protocol is not None else None
    if pairs is None:
        return  # a paired folder: its scan is the user's to match with --override
    if pairs.trajectory == "lissajous":
        raise ValueError(f"{cfg.method} deconvolves a Cartesian scan's PSF; protocol {cfg.protocol.name!r} uses a "
                         "Lissajous trajectory")
    wanted = {"drive": pairs.scan, "gradient": pairs.gradient, "spacing_mm": pairs.spacing_mm}
    if not all(isinstance(v, str) and v in ("x", "z") or np.isscalar(v) for v in wanted.values()):
        raise ValueError(f"{cfg.method} deconvolves one known scan, but protocol {cfg.protocol.name!r} mixes scans "
                         f"(scan {pairs.scan!r}, gradient {pairs.gradient}, spacing {pairs.spacing_mm}); choose one, "
                         "e.g. --protocol authors-psf, or --scan x --gradient 9 --spacing 0.25")
    have = {k: getattr(model, k) for k in wanted}
    if have["drive"] != wanted["drive"] or not np.allclose([have["gradient"], have["spacing_mm"]],
                                                           [wanted["gradient"], wanted["spacing_mm"]]):
        raise ValueError(f"{cfg.method} is set to deconvolve drive {have['drive']}, {have['gradient']:g} T/m, "
                         f"{have['spacing_mm']:g} mm, but the protocol scans drive {wanted['drive']}, "
                         f"{wanted['gradient']:g} T/m, {wanted['spacing_mm']:g} mm: add --override drive=... "
                         "--override gradient=... --override spacing_mm=... to match")


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


def _build_model(cfg: TrainConfig) -> Restorer:
    try:
        return build(cfg.method, cfg.preset, **cfg.overrides)
    except TypeError as err:  # a constructor argument the network does not have, or of the wrong type
        if not cfg.overrides:
            raise
        raise ValueError(f"--override {cfg.overrides} does not fit {cfg.method} ({cfg.preset}): {err}") from err


def _chosen_phases(cfg: TrainConfig, model: Restorer) -> tuple[str, ...]:
    """The phases `cfg.phases` asks for, checked against the method's own (all of them when None)."""
    if cfg.phases is None:
        return tuple(model.phases)
    unknown = [p for p in cfg.phases if p not in model.phases]
    if unknown:
        raise ValueError(f"--phases: {cfg.method} has no phase {unknown[0]!r}; its phases are "
                         f"{', '.join(model.phases) or 'none (training-free)'}")
    return tuple(cfg.phases)


def _load_initial_weights(model: Restorer, cfg: TrainConfig) -> None:
    """Start from the weights `cfg.init` names; they must be the same network (method, preset, overrides)."""
    from .. import pretrained

    path = pretrained.MODEL_PATH if cfg.init == "shipped" else Path(cfg.init)
    source = load_model(path)
    if source.build_config != model.build_config:
        raise ValueError(f"--init {cfg.init}: that model is {source.build_config}, not the network this run "
                         f"trains {model.build_config}; fine-tuning needs the same method, preset and overrides")
    model.load_state_dict(source.state_dict())


def _train_locked(cfg: TrainConfig, ctx: distributed.Context, resume: bool, overwrite: bool,
                  data: TrainData | None) -> Restorer:
    run = Path(cfg.out)
    _check_run_dir(run, resume, overwrite)
    ckpt = _load_checkpoint(run, cfg) if resume else None

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
    model = _build_model(cfg).to(ctx.device)
    phases = _chosen_phases(cfg, model)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    elif cfg.init is not None:
        _load_initial_weights(model, cfg)
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay > 0 and model.phases else None
    if ema is not None and ckpt is not None:  # the settings check above: a checkpoint of this ema_decay
        ema.load_state_dict(ckpt["ema"])
    model.train()
    if not model.phases:
        _check_deconvolution_scan(cfg, model)
    if data is None:
        # a training-free method (models.classical) is fitted on validation pairs alone, cheaply: use more
        data_cfg = cfg if model.phases else dataclasses.replace(cfg, val_images=max(cfg.val_images, FIT_PAIRS))
        data = build_data(data_cfg)
    if not data.val:
        raise ValueError("the validation set is empty")
    # the settings, the network and the data are usable: only now does anything in RUN change
    distributed.barrier(ctx)  # every rank has looked at RUN before rank 0 changes it
    if ctx.is_main and overwrite:
        _clear_run_dir(run)
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
    checkpoints = _Checkpoints(run, cfg, ctx.is_main, (start_phase, start_step) if ckpt is not None else None, ema)
    try:
        with _StopRequests() as stop:
            for pi, phase in enumerate(model.phases):
                if phase not in phases:
                    continue  # not asked for (e.g. fine-tuning the second phase only)
                if pi < start_phase or (pi == start_phase and start_step >= cfg.steps):
                    continue  # finished before the checkpoint
                resume_state = ckpt if (ckpt is not None and pi == start_phase) else None
                _train_phase(cfg, ctx, model, data, log, pi, base_flags, resume_state, checkpoints, stop, ema)
    finally:
        if log is not None:
            log.close()
    for p, flag in zip(model.parameters(), base_flags):
        p.requires_grad_(flag)
    if ema is not None:
        ema.copy_to(model)  # the average is the trained model

    if ctx.is_main:
        save_model(model, run / "model", extra={"label": cfg.run_label, "seed": cfg.seed,
                                                 "training": cfg.to_dict()})
    distributed.barrier(ctx)
    return model


def _train_phase(cfg: TrainConfig, ctx: distributed.Context, model: Restorer, data: TrainData,
                 log: RunLog | None, pi: int, base_flags: list[bool], resume_state: dict | None,
                 checkpoints: _Checkpoints, stop: _StopRequests, ema: WeightAverage | None = None) -> None:
    phase = model.phases[pi]
    params = _phase_parameters(model, phase, base_flags)
    # several phases = parts of the network sit idle in some phase; DDP must be told to expect that
    net = distributed.wrap(PhaseLoss(model, phase), ctx, find_unused=len(model.phases) > 1)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, ConstantThenCosine(cfg.steps, cfg.constant_fraction, cfg.min_lr / cfg.lr, cfg.warmup_steps))
    start = 0
    if resume_state is not None:
        opt.load_state_dict(resume_state["optimizer"])
        sched.load_state_dict(resume_state["scheduler"])
        start = resume_state["step"]
    if ema is not None and start == 0:
        ema.start_phase(model)  # mid-phase, the checkpoint's average goes on
    val_seed = derive_seed(cfg.seed, pi, 2**32)

    def validated() -> tuple[float, float]:
        """Validation of what the run will write: the weight average when there is one."""
        with ema.applied(model) if ema is not None else contextlib.nullcontext():
            return validate(model, phase, data.val, ctx.device, val_seed)

    def stop_here(step: int) -> None:
        """Asked to stop: the model, optimiser, schedule and log hold the state after `step` steps."""
        if step > 0:  # at step 0 the checkpoint on disk (the previous phase's end, if any) is this state
            checkpoints.save(model, opt, sched, pi, step)
        raise TrainingInterrupted(phase, step, checkpoints.path())

    if log is not None and start == 0:  # the untrained baseline of the phase
        val_loss, val_psnr = validated()
        log.write(phase, 0, val_loss=val_loss, val_psnr=val_psnr)

    stream = batches(data, seed=cfg.seed, phase=pi, start=start, batch=cfg.batch, rank=ctx.rank,
                     world=ctx.world, workers=cfg.workers, segment=cfg.ckpt_every)
    bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.method} {phase}", disable=not ctx.is_main,
               dynamic_ncols=True)
    try:
        tick = time.perf_counter()
        for step in range(start, cfg.steps):
            if distributed.any_rank(ctx, stop.requested is not None):  # every rank stops at this step
                stop_here(step)
            lq, gt, *geometry = next(stream)  # (B, C, H, W) each; geometry (B, 2) with the physics term
            lq, gt = lq.to(ctx.device, non_blocking=True), gt.to(ctx.device, non_blocking=True)
            torch.manual_seed(derive_seed(cfg.seed, pi, step, ctx.rank))
            lr = opt.param_groups[0]["lr"]
            result = net(lq, gt)
            loss = result["loss"]
            terms = {}  # log column -> the term before its weight, for the terms switched on
            for term, weight in switched_on(cfg):
                terms[term.name] = term.loss(result["output"], lq, gt, geometry[0] if geometry else None)
                loss = loss + weight * terms[term.name]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(model)
            loss_value = loss.item()
            done = step + 1
            if distributed.any_rank(ctx, not math.isfinite(loss_value)):  # every rank stops at this step
                at = checkpoints.at
                raise TrainingDiverged(phase, done, loss_value, cfg.lr,
                                       (model.phases[at[0]], at[1]) if at is not None else None)

            img_per_s = len(lq) * ctx.world / max(time.perf_counter() - tick, 1e-9)  # data + step, all ranks
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", img_s=f"{img_per_s:.1f}", refresh=False)
            if log is not None:
                val_loss = val_psnr = None
                if done % cfg.val_every == 0 or done == cfg.steps:
                    val_loss, val_psnr = validated()
                log.write(phase, done, loss=loss_value, lr=lr, img_per_s=img_per_s, val_loss=val_loss,
                          val_psnr=val_psnr, **{name: term.item() for name, term in terms.items()})
            # every rank takes part (each checks its weights are finite; rank 0 writes), and agrees on when:
            # the wall-clock rule differs from rank to rank by the moments their clocks are read
            if distributed.any_rank(ctx, checkpoints.due(done)):
                checkpoints.save(model, opt, sched, pi, done)
            tick = time.perf_counter()  # validation and checkpoints do not count against the speed
        if distributed.any_rank(ctx, stop.requested is not None):
            stop_here(cfg.steps)  # the phase's end, checkpointed above
    finally:
        bar.close()
    del net, opt, sched  # drop DDP's gradient hooks before the next phase wraps the model again
    gc.collect()
