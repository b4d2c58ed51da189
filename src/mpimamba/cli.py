"""The `mpimamba` command: simulate, train, evaluate, calibrate, demo, info.

Each subcommand has an `_add_<name>(subparsers)` that declares its arguments and a `_run_<name>(args)`
that imports the work lazily (so `mpimamba --help` stays fast) and calls into the library.
User errors (bad paths, bad values) are raised as `CLIError` or ValueError/FileNotFoundError and
printed as one line, exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__


# models.ssm's backends, named here so that `--help` need not import torch (a test holds the two equal)
SCAN_BACKENDS = ("auto", "reference", "cpu", "chunked", "cuda")

# physics.phantoms.CATEGORIES by name, for the same reason (a test holds the two equal); "glyphs" needs --font
PHANTOM_CATEGORIES = ("shape", "resolution", "vessel", "sensitivity", "mouse", "points")

# train.terms.TERMS by name, each with what its `--<name>-weight` weighs, for the same reason (a test holds them equal)
TERM_HELP = {
    "physics": "the physics-consistency term (the output blurred by each pair's PSF must explain the input up to a "
               "scale and an offset; --synthetic only)",
    "mass": "the local-mass term (the tracer per 8x8 block of output and target must agree; counters thin "
            "structures coming back too faint)",
    "mse": "the squared-error term (mean squared pixel error beside the L1 loss: the conditional mean instead of "
           "the median, what PSNR scores)",
    "edge": "the edge term (L1 between the image gradients of output and target: weighs the errors of fine detail, "
            "which set a point's width, above smooth ones)",
}


class CLIError(Exception):
    """An error caused by the user's input; printed without a traceback."""


# ---------------------------------------------------------------------------------------------- protocols
def _number_or_range(text: str):
    """'9' -> 9.0; '5:12' -> (5.0, 12.0) (a range sampled uniformly per pair)."""
    try:
        parts = [float(v) for v in text.split(":")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or LOW:HIGH, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected a number or LOW:HIGH, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _canvas_sides(text: str):
    """'128' -> 128; '64:256' -> (64, 256)."""
    value = _number_or_range(text)
    sides = value if isinstance(value, tuple) else (value,)
    if not all(v == int(v) for v in sides):
        raise argparse.ArgumentTypeError(f"expected whole pixels PX or LOW:HIGH, got {text!r}")
    return tuple(int(v) for v in sides) if isinstance(value, tuple) else int(value)


NOISE_FREE = "none"  # --snr none: kept as a string until the protocol is built (None means "flag not given")


def _snr(text: str):
    return NOISE_FREE if text.lower() == NOISE_FREE else _number_or_range(text)


def _add_protocol_options(p) -> None:
    """How pairs are simulated: one named protocol, single fields changed by flags (simulate and train)."""
    g = p.add_argument_group("simulation protocol (mpimamba.physics.protocols; unset flags keep the protocol's value)")
    g.add_argument("--protocol", default=None, metavar="NAME",
                   help="named protocol: default (broad: x and z scans, 5-12 T/m, 0.2-0.5 mm, SNR 15-45 dB), "
                        "multiscale (default on 64-256 px canvases, with point sources), multiscale-points (multiscale "
                        "with twice the point sources), authors (time-domain Lissajous "
                        "x-space, 9 T/m), authors-psf, shipped-v1 (default: default)")
    g.add_argument("--scan", choices=["x", "z", "random"], help="drive axis of the input")
    g.add_argument("--target", choices=["phantom", "isotropic"],
                   help="phantom: the concentration map; isotropic: mean of the x and z scans")
    g.add_argument("--forward-model", dest="forward_model", choices=["psf", "xspace"],
                   help="psf: fast FFT model; xspace: time-domain simulator (slow to build, 4*S^4 bytes)")
    g.add_argument("--trajectory", choices=["raster", "lissajous"],
                   help="xspace model: Cartesian raster along --scan, or the authors' Lissajous figure")
    g.add_argument("--gradient", type=_number_or_range, metavar="G|LOW:HIGH", help="gradient strength, T/m")
    g.add_argument("--spacing", type=_number_or_range, metavar="MM|LOW:HIGH", help="pixel spacing, mm")
    g.add_argument("--snr", type=_snr, metavar="DB|LOW:HIGH|none", help="input SNR in dB (none: noise-free)")
    g.add_argument("--background", type=_number_or_range, metavar="B|LOW:HIGH",
                   help="constant offset, fraction of the unit-concentration peak")
    g.add_argument("--concentration", type=_number_or_range, metavar="C|LOW:HIGH",
                   help="concentration relative to the one at which --snr holds")
    g.add_argument("--categories", type=category_names, metavar="A,B,...",
                   help=f"phantom categories, from {', '.join(PHANTOM_CATEGORIES)}, glyphs (needs --font); "
                        "a name given n times is drawn n times as often")
    g.add_argument("--font", type=Path, default=None,
                   help="a TrueType font: adds phantoms of text glyphs in it to the categories")
    g.add_argument("--canvas", type=_canvas_sides, metavar="PX|LOW:HIGH",
                   help="side of the simulated training images cropped to patches, or a range drawn per batch (train)")
    g.add_argument("--xspace-fraction", dest="xspace_fraction", type=float,
                   help="share of training pairs from the time-domain x-space model")


# flag -> Protocol.replace field
_PROTOCOL_FLAGS = {"scan": "scan", "target": "target", "forward_model": "model", "trajectory": "trajectory",
                   "gradient": "gradient",
                   "spacing": "spacing_mm", "snr": "snr_db", "background": "background",
                   "concentration": "concentration", "categories": "categories", "font": "font",
                   "canvas": "canvas", "xspace_fraction": "xspace_fraction"}


def _protocol_changes(args) -> dict:
    changes = {field: getattr(args, flag) for flag, field in _PROTOCOL_FLAGS.items() if getattr(args, flag) is not None}
    if "font" in changes:
        changes["font"] = str(changes["font"])
    if changes.get("snr_db") == NOISE_FREE:
        changes["snr_db"] = None
    return changes


def _protocol(args, base=None):
    """The protocol the flags ask for: --protocol NAME (else `base`, else "default") with fields changed."""
    from .physics.protocols import get_protocol

    if args.protocol is not None or base is None:
        base = get_protocol(args.protocol or "default")
    return base.replace(**_protocol_changes(args))


# ---------------------------------------------------------------------------------------------- simulate
def _add_simulate(sub) -> None:
    p = sub.add_parser("simulate", help="write a simulated paired dataset OUT/{train,val,test}/{lq,gt}")
    p.add_argument("out", type=Path, help="output folder (must be empty or new unless --overwrite)")
    p.add_argument("--count", type=int, required=True, help="number of pairs, split 8:1:1")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: the protocol's canvas, 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=["tiff", "npy", "png"], default="tiff", help="default: float32 TIFF")
    p.add_argument("--overwrite", action="store_true", help="replace the dataset in a non-empty OUT")
    _add_protocol_options(p)
    p.set_defaults(run=_run_simulate)


def _run_simulate(args) -> None:
    from .data.synthetic import write_dataset

    protocol = _protocol(args)
    size = args.size if args.size is not None else protocol.typical_canvas(128)  # no canvas: 128
    if args.count < 1 or size < 8:
        raise CLIError(f"--count must be >= 1 and --size >= 8, got {args.count} and {size}")
    manifest = write_dataset(args.out, args.count, size, protocol, seed=args.seed, fmt=args.format,
                             overwrite=args.overwrite)
    counts = manifest["counts"]
    print(f"wrote {counts['total']} pairs ({size}x{size}, protocol {protocol.name}) to {args.out} "
          f"(train {counts['train']}, val {counts['val']}, test {counts['test']})")


# ---------------------------------------------------------------------------------------------- train
def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a method on a paired folder dataset or on simulated pairs",
        description="Train through all of the method's phases (MPI-Mamba: phase 1 then phase 2). Several "
        "processes: torchrun --nproc_per_node N -m mpimamba.cli train ... Unset options take the released "
        "settings (AdamW lr 2e-4, batch 32, patch 64, 100k steps per phase, seed 101) or, with --resume, "
        "the run's own settings.",
    )
    # training settings default to None so that --resume can tell which ones were given explicitly
    p.add_argument("--method", help="network name, e.g. mpi_mamba, nafnet")
    p.add_argument("--preset", help="size preset: tiny, small (default), paper")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="paired dataset folder ROOT/{train,val}/{lq,gt}")
    source.add_argument("--synthetic", action="store_true", help="train on pairs simulated on the fly (see --protocol)")
    p.add_argument("--init", metavar="MODEL|shipped",
                   help="fine-tune: start from these weights (a run folder or .safetensors of the same method and "
                        "preset, or 'shipped' for the model inside the package) instead of fresh ones")
    p.add_argument("--phases", type=lambda t: tuple(t.split(",")), metavar="P1,P2",
                   help="train only these phases (MPI-Mamba: phase1, phase2; with --init, phase2 alone tunes every "
                        "part inference uses); default: all")
    p.add_argument("--steps", type=int, help="optimiser steps per phase")
    p.add_argument("--batch", type=int, help="batch size per process")
    p.add_argument("--patch", type=int, help="training patch size in pixels")
    p.add_argument("--mixed-patch", type=patch_and_batch, action="append", dest="mixed_patches", metavar="PxB",
                   help="also train on batches of B patches of P px, taking turns with --patch/--batch batches "
                        "(repeatable; --synthetic only; P above the protocol's smallest canvas raises it), e.g. "
                        "--patch 64 --batch 8 --mixed-patch 128x2")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, dest="warmup_steps",
                   help="first steps of each phase with the lr rising linearly to its peak (default 0; "
                        "for fine-tuning, e.g. 50)")
    p.add_argument("--seed", type=int)
    p.add_argument("--val-every", type=int, dest="val_every", help="validate every K steps")
    p.add_argument("--ckpt-every", type=int, dest="ckpt_every", help="write RUN/checkpoint.pt every K steps")
    p.add_argument("--ckpt-minutes", type=float, dest="ckpt_minutes",
                   help="also write it at least every M minutes of wall time (default 10; inf: only every K steps)")
    for name, what in TERM_HELP.items():
        p.add_argument(f"--{name}-weight", type=float, dest=f"{name}_weight",
                       help=f"weight of {what}; default 0 = off")
    p.add_argument("--ema-decay", type=float, dest="ema_decay",
                   help="validate and write an exponential moving average of the weights over about 1/(1-D) steps "
                        "(e.g. 0.999; default 0 = off)")
    p.add_argument("--label", help="name evaluation tables group this run under (default: the method)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="network constructor argument replacing the preset's (VALUE parsed as JSON)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1 ...")
    p.add_argument("--workers", type=int, help="DataLoader worker processes")
    p.add_argument("--out", type=Path, required=True, help="run folder RUN")
    _add_protocol_options(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="continue the run in RUN from its checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="start over, replacing the run in RUN")
    p.set_defaults(run=_run_train)


def category_names(text: str) -> tuple[str, ...]:
    """'mouse, points,points' -> ('mouse', 'points', 'points'): an argparse type; the names are checked where the
    protocol is built (`PairConfig`), and a name given n times is drawn n times as often."""
    return tuple(name.strip() for name in text.split(","))


def patch_and_batch(text: str) -> tuple[int, int]:
    """'128x2' -> (128, 2): an argparse type."""
    patch, sep, batch = text.lower().partition("x")
    if not (sep and patch.isdigit() and batch.isdigit()):
        raise argparse.ArgumentTypeError(f"expected PATCHxBATCH such as 128x2, got {text!r}")
    return int(patch), int(batch)


def _parse_overrides(pairs: list[str]) -> dict:
    import json

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CLIError(f"--override expects KEY=VALUE, got {pair!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value  # a bare string
    return overrides


def _run_train(args) -> None:
    from .physics.protocols import Protocol
    from .train import TrainConfig, train

    given = {k: getattr(args, k) for k in ("method", "preset", "init", "phases", "steps", "batch", "patch", "lr", "seed",
                                           "val_every", "ckpt_every", "ckpt_minutes", "warmup_steps", "ema_decay",
                                           "label", "device", "workers", "mixed_patches",
                                           *(f"{name}_weight" for name in TERM_HELP))}
    given = {k: v for k, v in given.items() if v is not None}
    if args.data is not None:
        given["data"] = str(args.data)
        given["protocol"] = None
    elif args.synthetic:
        given["data"] = None
    if args.override:
        given["overrides"] = _parse_overrides(args.override)

    if args.resume:  # start from the run's own settings; explicit options must agree with them
        stored = args.out / "config.json"
        if not stored.is_file():
            raise FileNotFoundError(f"cannot resume: {stored} not found")
        settings = TrainConfig.from_json(stored).to_dict()
    else:
        if "method" not in given:
            raise CLIError("--method is required (e.g. --method mpi_mamba)")
        if "data" not in given:
            raise CLIError("give the training data: --data DIR or --synthetic")
        settings = TrainConfig().to_dict()
    settings.update(given, out=str(args.out))
    protocol_asked = args.protocol is not None or _protocol_changes(args)
    if protocol_asked:
        if settings.get("data") is not None:
            raise CLIError("--protocol and the simulation flags apply to --synthetic, not to --data")
        stored = settings.get("protocol")  # on --resume, flags change the run's own protocol (and must agree)
        base = Protocol.from_dict(stored) if isinstance(stored, dict) else None
        settings["protocol"] = _protocol(args, base).to_dict()
    train(TrainConfig.from_dict(settings), resume=args.resume, overwrite=args.overwrite)
    print(f"trained model: {args.out / 'model.safetensors'}")


# ---------------------------------------------------------------------------------------------- evaluate
def _add_restoration_options(p) -> None:
    """How a model restores an image: the same options, defaults and rule for evaluate and calibrate, so
    that evaluate scores what calibrate writes (mpimamba.infer.Restoration)."""
    p.add_argument("--normalise", default="max", choices=("max", "none"),
                   help="max (default): divide each image by its maximum before the network and multiply back; "
                        "none: feed it as it is (values outside [0, 1] are refused)")
    p.add_argument("--tile", type=int, default=256, help="tile size for images larger than this (default 256)")
    p.add_argument("--overlap", type=int, default=32, help="overlap between tiles in pixels (default 32)")
    _add_flip_average(p)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _add_flip_average(p) -> None:
    p.add_argument("--flip-average", action="store_true",
                   help="average the restorations of each image and its mirror images along x, z and both "
                        "(the simulated x-space PSF is mirror-symmetric along each axis; relaxation on a scanner "
                        "breaks that slightly along the drive axis; 4x the time)")


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="score trained models on a dataset split; tables and figures")
    p.add_argument("models", nargs="+", type=Path, metavar="RUN_OR_CKPT", help="run folders or .safetensors files")
    p.add_argument("--data", type=Path, required=True, help="paired dataset root DIR/{train,val,test}/{lq,gt}")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, required=True, help="report folder: table.md, table.csv, scores.csv, figures/")
    p.add_argument("--convention", default="ours", choices=("ours", "authors"),
                   help="metric convention (mpimamba.eval.metrics; README, Evaluate): ours (default) or the authors' 8-bit variant")
    _add_restoration_options(p)
    p.add_argument("--label", action="append", default=[], metavar="NAME=PATH",
                   help="put checkpoint PATH in table row NAME (repeatable); checkpoints are otherwise one row "
                        "only when they are seeds of one configuration")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="skip the PNG figures")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.set_defaults(run=_run_evaluate)


def _run_evaluate(args) -> None:
    from .eval.evaluate import evaluate

    labels = {}
    for item in args.label:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CLIError(f"--label expects NAME=PATH, got {item!r}")
        labels[path] = name
    evaluate(args.models, args.data, split=args.split, out=args.out, convention=args.convention, tile=args.tile,
             overlap=args.overlap, normalise=args.normalise, device=args.device, overwrite=args.overwrite,
             figures=args.figures, labels=labels, flip_average=args.flip_average)
    print((args.out / "table.md").read_text(), end="")
    print(f"report written to {args.out}")


# ---------------------------------------------------------------------------------------------- calibrate
def _add_calibrate(sub) -> None:
    p = sub.add_parser(
        "calibrate",
        help="restore MPI images (files or folders) with a trained model",
        description="Restore images, keeping names, folder structure and formats. Each image is divided by its "
        "maximum before the network and multiplied back after, so outputs keep the input's scale; outputs "
        "are clamped at zero (concentrations are never negative). Outputs keep the input's dtype (integers "
        "are rounded and clipped to it; clipped pixels are reported per file), shape and metadata. 3-D "
        "stacks and volumes (multi-page TIFF, 3-D NPY/NPZ, MDF) are restored slice by slice.",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output folder (or, for one input file, an output file name)")
    p.add_argument("--model", type=Path, default=None, help="checkpoint (default: the shipped MPI-Mamba small)")
    _add_restoration_options(p)
    p.add_argument("--slice-axis", type=int, default=0, choices=(0, 1, 2),
                   help="axis of a 3-D stack or volume to restore slice by slice along (default 0: the first, "
                        "pages of a TIFF, z of an MDF volume); 2-D images are restored whole")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--skip-existing", action="store_true",
                   help="keep existing output files and restore only the missing ones (continue a stopped run)")
    g = p.add_argument_group("physics-consistency refinement (mpimamba.refine)")
    g.add_argument("--physics", action="store_true",
                   help="after the network, refine each image until, blurred by the scan's PSF, it agrees with the "
                        "input within the input's noise (needs --scan-axis, --gradient, --spacing)")
    g.add_argument("--scan-axis", choices=("x", "z"), help="drive axis of the scan (x = image columns)")
    g.add_argument("--gradient", type=float, help="gradient strength of the scan, T/m")
    g.add_argument("--spacing", type=float, help="pixel spacing of the image, mm")
    g.add_argument("--physics-iterations", type=int, default=None, help="at most this many steps per image (default 100)")
    p.set_defaults(run=_run_calibrate)


def _run_calibrate(args) -> None:
    from .calibrate import calibrate
    from .refine import ScanGeometry

    geometry = None
    scan = {"--scan-axis": args.scan_axis, "--gradient": args.gradient, "--spacing": args.spacing,
            "--physics-iterations": args.physics_iterations}
    if args.physics:
        missing = [flag for flag, value in scan.items() if value is None and flag != "--physics-iterations"]
        if missing:
            raise CLIError(f"--physics needs the scan's {', '.join(missing)} (e.g. --scan-axis x --gradient 5.7 "
                           "--spacing 0.25)")
        geometry = ScanGeometry(args.scan_axis, args.gradient, args.spacing)
    elif any(value is not None for value in scan.values()):
        given = ", ".join(flag for flag, value in scan.items() if value is not None)
        raise CLIError(f"{given}: these describe the scan for --physics; add --physics")
    written = calibrate(args.inputs, args.out, model_path=args.model, tile=args.tile, overlap=args.overlap,
                        normalise=args.normalise, device=args.device, overwrite=args.overwrite,
                        skip_existing=args.skip_existing, slice_axis=args.slice_axis, physics=geometry,
                        physics_iterations=args.physics_iterations or 100, flip_average=args.flip_average)
    clipped = sum(1 for w in written if w.clipped)
    note = f" ({clipped} with clipped pixels, listed above)" if clipped else ""
    print(f"{len(written)} image(s) written to {args.out}{note}")


# ---------------------------------------------------------------------------------------------- demo
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="simulate unseen phantoms, calibrate them with the shipped model, write a figure")
    p.add_argument("out", type=Path, help="folder for demo.png and metrics.md")
    p.add_argument("--model", type=Path, default=None, help="a checkpoint instead of the shipped model")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's files")
    p.add_argument("--per-category", type=int, default=2, help="pairs per phantom category (default 2)")
    _add_flip_average(p)
    p.set_defaults(run=_run_demo)


def _run_demo(args) -> None:
    from .demo import run_demo

    if args.per_category < 1:
        raise CLIError(f"--per-category must be at least 1, got {args.per_category}")
    mean = run_demo(args.out, args.model, overwrite=args.overwrite, per_category=args.per_category,
                    flip_average=args.flip_average)
    print(
        f"PSNR {mean['psnr_in']:.2f} -> {mean['psnr_out']:.2f} dB, SSIM {mean['ssim_in']:.3f} -> "
        f"{mean['ssim_out']:.3f}, nRMSE {mean['nrmse_in']:.4f} -> {mean['nrmse_out']:.4f}"
    )
    print(f"wrote {args.out / 'demo.png'} and {args.out / 'metrics.md'}")


# ---------------------------------------------------------------------------------------------- info
def _add_info(sub) -> None:
    p = sub.add_parser("info", help="version, devices and available selective-scan backends")
    p.set_defaults(run=_run_info)


def _run_info(args) -> None:
    import torch

    from .models import METHODS
    from .models.ssm import chosen_backend, importable, resolve_backend

    print(f"mpimamba {__version__}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(f"CUDA devices: {', '.join(gpus) if gpus else 'none'}")
    backends = {
        "reference": True,
        "cpu (numba)": importable("numba"),
        "chunked": True,
        "cuda (mamba_ssm)": importable("mamba_ssm.ops.selective_scan_interface") and bool(gpus),
    }
    print("selective-scan backends: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in backends.items()))
    print(f"scan backend asked for: {chosen_backend()}; runs on CPU: {resolve_backend(None, torch.zeros(1))}"
          + (f", on GPU: {resolve_backend(None, torch.zeros(1, device='cuda'))}" if gpus else ""))
    if importable("numba"):
        from .models.ssm import native

        found = native.library()
        print("cpu scan kernels: " + (f"C ({found.variant} build) for N = {found.state_size} and channels "
                                      f"divisible by {found.vector_width}, numba otherwise" if found else
                                      "numba (the C kernels are not built for this machine)"))
    print(f"methods: {', '.join(METHODS)}")


# ---------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpimamba", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mpimamba {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_simulate, _add_train, _add_evaluate, _add_calibrate, _add_demo, _add_info):
        add(sub)
    for command in sub.choices.values():
        _add_runtime_options(command)
    return parser


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """Options of every subcommand: how to run, never what the model is (nothing here is saved with it)."""
    group = parser.add_argument_group("run-time options")
    group.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch and the scan kernels (default: $MPIMAMBA_THREADS, else torch's)")
    group.add_argument("--scan-backend", choices=SCAN_BACKENDS, default=None,
                       help="selective-scan implementation (default: $MPIMAMBA_SCAN_BACKEND, else auto); "
                            "any backend runs any model")
    group.add_argument("--debug", action="store_true",
                       help="show the full traceback of every error, also of those reported in one line")


# optional packages a command may need: top-level module -> (what needs it, how to install it)
OPTIONAL_PACKAGES = {
    "pydicom": ("DICOM (.dcm) files need", "pip install 'mpimamba[dicom]'"),
    "mamba_ssm": ("the cuda scan backend needs", "pip install 'mpimamba[cuda]'"),
    "skimage": ("this command needs", "pip install scikit-image"),
    "tensorboard": ("TensorBoard logs need", "pip install tensorboard"),
}
USER_ERROR, FAILURE, INTERRUPTED = 2, 1, 130  # exit codes


# a temp file of `fileutil.atomic_path`: .STEM.XXXXXXXX.tmp.EXT, about to become STEM.EXT
_TEMP_NAME = r"\.([^/\s]+?)\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?"


def _untemp(text: str) -> str:
    """`text` with each temp file name replaced by the name of the file it was about to become."""
    import re

    return re.sub(rf"(?<![^/\s'\"(]){_TEMP_NAME}", lambda m: m[1] + (m[2] or ""), text)


def _shown_path(name) -> str:
    return _untemp(os.fsdecode(name))


def _os_fault(err: OSError, command: str, args) -> tuple[int, str] | None:
    import errno

    names = [_shown_path(n) for n in (err.filename2, err.filename) if n is not None]
    where = names[0] if names else None
    if isinstance(err, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)):
        return USER_ERROR, str(err)
    if isinstance(err, PermissionError) or err.errno == errno.EROFS:
        reason = "read-only file system" if err.errno == errno.EROFS else "permission denied"
        place = f" {where}" if where else ""
        return USER_ERROR, (f"cannot access{place}: {reason}; check the permissions of the file and its folder, "
                            "or choose another location")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        place = f" writing {where}" if where else ""
        what = "no space left on device" if err.errno == errno.ENOSPC else "disk quota exceeded"
        if command == "train":
            then = f"; the last checkpoint is kept: free space, then continue with: {_resume_command(args)}"
        elif command == "calibrate":
            then = "; free space, then rerun with --skip-existing to keep what was written"
        else:
            then = "; free space and run the command again"
        return FAILURE, f"{what}{place}{then}"
    return None  # an unexpected system error: keep the traceback


def _import_fault(err: ImportError) -> tuple[int, str] | None:
    module = err.name or getattr(err.__cause__, "name", None) or ""
    package = module.split(".")[0]
    if package not in OPTIONAL_PACKAGES:
        return None  # a broken installation or a bug: keep the traceback
    what, install = OPTIONAL_PACKAGES[package]
    message = str(err)
    if install not in message:
        message = f"{what} the optional package {package}, which is not installed: {install}"
    return USER_ERROR, message


def _resume_command(args) -> str:
    import shlex

    return f"mpimamba train --out {shlex.quote(str(args.out))} --resume"


def _interrupt_message(err: KeyboardInterrupt, args) -> str:
    """Ctrl-C: outputs are written atomically, so what exists is whole; for train, how to continue."""
    if args.command != "train":
        return "interrupted"
    step = ""
    if getattr(err, "checkpoint", None) is not None:  # train.loop.TrainingInterrupted
        step = f" at {err.phase} step {err.step}, checkpoint saved"
    elif (args.out / "checkpoint.pt").is_file():
        step = ", the last checkpoint kept"
    elif (args.out / "config.json").is_file():
        step = " before the first checkpoint (the run starts again from its beginning)"
    else:
        return "interrupted before the run began; nothing was written"
    return f"interrupted{step}; continue with: {_resume_command(args)}"


def _fault(err: BaseException, args) -> tuple[int, str] | None:
    """(exit code, one-line message) for an ordinary fault; None for a bug, which keeps its traceback."""
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED, _interrupt_message(err, args)
    if isinstance(err, (CLIError, ValueError)):  # bad option values, unusable files, wrong models
        return USER_ERROR, str(err)
    if isinstance(err, OSError):
        return _os_fault(err, args.command, args)
    if isinstance(err, ImportError):
        return _import_fault(err)
    if isinstance(err, FloatingPointError):
        from .train.loop import TrainingDiverged  # torch is loaded already: something computed

        if isinstance(err, TrainingDiverged):
            return FAILURE, str(err)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run one command. Ordinary faults (bad options or files, permissions, a full disk, a missing optional
    package, a diverged training) end in one line `mpimamba CMD: error: ...` and exit 2 (the user's to fix)
    or 1 (a failure); Ctrl-C exits 130; anything else is a bug and keeps its traceback. --debug prints the
    traceback of every error."""
    args = build_parser().parse_args(argv)
    try:
        from .models.ssm import use_scan_backend
        from .threads import configure_threads

        configure_threads(args.threads)  # once per process, before any work
        if args.scan_backend is not None:  # also for threads and worker processes the command starts
            os.environ["MPIMAMBA_SCAN_BACKEND"] = args.scan_backend
        with use_scan_backend(args.scan_backend):
            args.run(args)
    except BaseException as err:  # noqa: B036 - KeyboardInterrupt included; SystemExit passes through below
        if isinstance(err, SystemExit):
            raise
        fault = _fault(err, args)
        if fault is None:
            raise
        if args.debug:
            import traceback

            traceback.print_exc()
        code, message = fault
        message = _untemp(" ".join(str(message).split("\n")))  # one line, naming no temp file
        if code == INTERRUPTED:
            print(f"mpimamba {args.command}: {message}", file=sys.stderr)
        else:
            print(f"mpimamba {args.command}: error: {message}", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
