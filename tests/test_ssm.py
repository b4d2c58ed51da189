"""The fast selective-scan backends give the reference's numbers: values and the gradient of every input."""

import platform

import pytest
import torch
import torch.nn.functional as F

from mpimamba.models import ssm
from mpimamba.models.ssm import chunked as ssm_chunked

FAST = ["cpu", "chunked"]
NAMES = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    # 16-step chunks so short test sequences span several chunks, the last one partial (L = 150 = 9·16 + 6).
    # The cpu kernel's checkpoint segment is 32 steps, so L = 150 also crosses four segment boundaries.
    monkeypatch.setattr(ssm_chunked, "CHUNK", 16)


def make_inputs(batch=2, d=7, n=4, length=150, groups=None, big_delta=False, seed=0):
    """float64 inputs in mamba_ssm's shapes; A < 0 as Mamba parameterises it."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    bc_shape = (batch, n, length) if groups is None else (batch, groups, n, length)
    inputs = dict(
        u=rand(batch, d, length),
        delta=rand(batch, d, length) * 0.5,
        A=-(torch.rand(d, n, generator=g, dtype=torch.float64) * 1.5 + 0.5),  # |A| in [0.5, 2]
        B=rand(*bc_shape),
        C=rand(*bc_shape),
        D=rand(d),
        z=rand(batch, d, length),
        delta_bias=rand(d) * 0.3,
    )
    if big_delta:  # softplus(Δ) up to 25, so Δ·|A| reaches 50 per step
        inputs["delta"] = torch.rand(batch, d, length, generator=g, dtype=torch.float64) * 25
    return inputs


def run(backend, inputs, delta_softplus, dtype):
    """Output and gradients of a random linear functional of it, for every input that is given."""
    leaves = {k: v.to(dtype).requires_grad_() for k, v in inputs.items() if v is not None}
    y = ssm.selective_scan(**leaves, delta_softplus=delta_softplus, backend=backend)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad((y * weight).sum(), list(leaves.values()))
    return y, dict(zip(leaves, grads))


def assert_matches_reference(backend, inputs, delta_softplus, inert=()):
    """`inert`: inputs whose gradient is exactly zero here (A when L = 1: it only decays the zero state)."""
    # The reference in float64 is the ground truth; the backend runs in float32, as it will in use.
    y_ref, g_ref = run("reference", inputs, delta_softplus, torch.float64)
    y, g = run(backend, inputs, delta_softplus, torch.float32)
    assert y.dtype == torch.float32 and y.shape == y_ref.shape
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-5 * y_ref.abs().max().item())
    assert g.keys() == g_ref.keys()
    for name in g_ref:
        assert g[name].shape == g_ref[name].shape, name
        scale = g_ref[name].abs().max().item()
        assert (scale > 0) != (name in inert), name  # every other input really influences the output
        torch.testing.assert_close(g[name].double(), g_ref[name], rtol=1e-3, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("softplus", [True, False])
def test_full_options(backend, softplus):
    inputs = make_inputs()
    if not softplus:  # keep Δ + bias > 0, as softplus would, so the scan decays instead of blowing up
        inputs["delta"] = inputs["delta"].abs() + 1
    assert_matches_reference(backend, inputs, softplus)


@pytest.mark.parametrize("backend", FAST)
def test_no_optional_inputs(backend):
    inputs = make_inputs()
    inputs.update(D=None, z=None, delta_bias=None, delta=inputs["delta"].abs())
    assert_matches_reference(backend, inputs, delta_softplus=False)


@pytest.mark.parametrize("backend", FAST)
def test_single_step(backend):
    assert_matches_reference(backend, make_inputs(length=1), delta_softplus=True, inert=("A",))


@pytest.mark.parametrize("backend", FAST)
def test_grouped_B_C(backend):
    inputs = make_inputs(d=6, groups=3, length=70)
    inputs.update(z=None)
    assert_matches_reference(backend, inputs, delta_softplus=True)


@pytest.mark.parametrize("backend", FAST)
def test_large_delta_stays_finite(backend):
    inputs = make_inputs(length=100, big_delta=True)
    step = F.softplus(inputs["delta"] + inputs["delta_bias"][:, None]) * inputs["A"].abs().max(1).values[:, None]
    assert step.max() > 40  # Δ·|A| per step really reaches ~50 ...
    assert torch.isinf(torch.exp(step.float().cumsum(-1))).any()  # ... so exp(−Σ Δ·A) overflows
    y, grads = run(backend, inputs, True, torch.float32)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values())
    assert_matches_reference(backend, inputs, delta_softplus=True)


@pytest.mark.parametrize("backend", FAST)
def test_no_grad_and_dtype(backend):
    """Without autograd the result is the same; float64 inputs come back as float64."""
    inputs = make_inputs(length=40)
    y, _ = run(backend, inputs, True, torch.float32)
    with torch.no_grad():
        y_nograd = ssm.selective_scan(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True, backend=backend)
    torch.testing.assert_close(y_nograd, y.detach(), rtol=0, atol=0)
    y64 = ssm.selective_scan(**inputs, delta_softplus=True, backend=backend)
    assert y64.dtype == torch.float64


def test_auto_picks_cpu_kernel_on_cpu():
    inputs = {k: v.float() for k, v in make_inputs(length=20).items()}
    assert ssm.resolve_backend("auto", inputs["u"]) == "cpu"
    y_auto = ssm.selective_scan(**inputs, delta_softplus=True)
    y_cpu = ssm.selective_scan(**inputs, delta_softplus=True, backend="cpu")
    torch.testing.assert_close(y_auto, y_cpu, rtol=0, atol=0)


def test_cpu_kernel_keeps_torch_thread_count():
    """The kernel never touches thread counts (they are set once per process, mpimamba.threads)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        run("cpu", make_inputs(length=20), True, torch.float32)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_without_numba(monkeypatch):
    """No numba: `cpu` explains itself and `auto` falls back to the reference."""
    import sys

    monkeypatch.setitem(sys.modules, "mpimamba.models.ssm.cpu", None)  # makes its import fail
    monkeypatch.setattr(ssm, "importable", lambda name: name != "numba")
    inputs = {k: v.float() for k, v in make_inputs(length=5).items()}
    with pytest.raises(RuntimeError, match="numba"):
        ssm.selective_scan(**inputs, backend="cpu")
    assert ssm.resolve_backend("auto", inputs["u"]) == "reference"


def test_bad_backend_names_the_choices():
    inputs = {k: v.float() for k, v in make_inputs(length=5).items()}
    with pytest.raises(ValueError, match="chunked"):
        ssm.selective_scan(**inputs, backend="fast")
    with pytest.raises(ValueError, match="GPU"):
        ssm.selective_scan(**inputs, backend="cuda")


# ---------------------------------------------------------------- SS2D's four orders in one call

def make_ss2d_inputs(batch=2, height=5, width=7, e=6, n=4, big_delta=False, seed=0):
    """float64 inputs of `ssm.ss2d_scan`: an odd-sized image, channels last, four orders."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    length, k = height * width, ssm.NUM_ORDERS
    delta = rand(batch, length, k, e) * 0.5
    if big_delta:  # softplus(Δ) up to 25, so Δ·|A| reaches 50 per step
        delta = torch.rand(batch, length, k, e, generator=g, dtype=torch.float64) * 25
    return dict(
        u=rand(batch, length, e), delta=delta,
        A=-(torch.rand(k, e, n, generator=g, dtype=torch.float64) * 1.5 + 0.5),
        B=rand(batch, length, k, n), C=rand(batch, length, k, n),
        D=rand(k, e), delta_bias=rand(k, e) * 0.3, height=height, width=width,
    )


def run_ss2d(backend, inputs, dtype):
    tensors = {k: v.to(dtype).requires_grad_() for k, v in inputs.items() if torch.is_tensor(v)}
    y = ssm.ss2d_scan(**tensors, height=inputs["height"], width=inputs["width"], backend=backend)
    weight = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad((y * weight).sum(), list(tensors.values()))
    return y, dict(zip(tensors, grads))


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", [(5, 7), (1, 9), (8, 3)], ids=["5x7", "1x9", "8x3"])
@pytest.mark.parametrize("big_delta", [False, True], ids=["delta", "large-delta"])
def test_ss2d_scan_matches_reference(backend, shape, big_delta):
    """The cpu kernel walks the four orders by index, chunked gets them gathered; both against the
    float64 reference, values and the gradient of every input."""
    inputs = make_ss2d_inputs(height=shape[0], width=shape[1], big_delta=big_delta)
    y_ref, g_ref = run_ss2d("reference", inputs, torch.float64)
    y, g = run_ss2d(backend, inputs, torch.float32)
    assert y.dtype == torch.float32 and y.shape == y_ref.shape == inputs["u"].shape
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-5 * y_ref.abs().max().item())
    for name in g_ref:
        scale = g_ref[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(g[name].double(), g_ref[name], rtol=1e-3, atol=1e-5 * scale, msg=name)


def test_order_positions_walk_rows_columns_and_their_reversals():
    pos = ssm.order_positions(2, 3)  # pixels 0 1 2 / 3 4 5
    assert pos.tolist() == [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]


def test_backend_is_chosen_at_run_time(monkeypatch):
    """Argument > innermost context > environment variable > auto; a bad name is refused where it is given."""
    u = torch.zeros(1)
    monkeypatch.delenv(ssm.ENV_VAR, raising=False)
    assert ssm.resolve_backend(None, u) == "cpu"
    monkeypatch.setenv(ssm.ENV_VAR, "chunked")
    assert ssm.resolve_backend(None, u) == "chunked"
    with ssm.use_scan_backend("reference"):
        assert ssm.resolve_backend(None, u) == "reference"
        with ssm.use_scan_backend("cpu"):
            assert ssm.resolve_backend(None, u) == "cpu"
        assert ssm.resolve_backend("chunked", u) == "chunked"
    assert ssm.resolve_backend(None, u) == "chunked"
    monkeypatch.setenv(ssm.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=ssm.ENV_VAR):
        ssm.resolve_backend(None, u)
    with pytest.raises(ValueError, match="use_scan_backend"):
        with ssm.use_scan_backend("fast"):
            pass


def test_cli_names_the_same_backends():
    from mpimamba.cli import SCAN_BACKENDS

    assert SCAN_BACKENDS == ("auto", *ssm.BACKEND_NAMES)


# ---------------------------------------------------------------- the C kernels of the cpu backend

needs_native = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                  reason="the C kernels are built on x86-64 only")


@needs_native
def test_native_kernels_are_built_and_load():
    """On x86-64 the install builds them (setup.py): a silently failed build would leave CI on numba."""
    from mpimamba.models.ssm import native

    found = native.library()
    assert found is not None, "setup.py's scan_kernels extension is missing: reinstall (pip install -e .)"
    width = found.vector_width
    assert width in (8, 16) and native.usable(16, 2 * width)
    assert not native.usable(4, 2 * width) and not native.usable(16, width + 1)  # the numba kernels cover these
    with native.use_native_kernels(False):
        assert not native.usable(16, 2 * width)


def _count_native_calls(monkeypatch):
    from mpimamba.models.ssm import native

    calls = []
    for name in ("forward", "backward"):
        real = getattr(native, name)
        monkeypatch.setattr(native, name, lambda *a, _real=real, _name=name: (calls.append(_name), _real(*a))[1])
    return calls


def _variants():
    """Every built variant this CPU runs (the AVX2 one too on an AVX-512 machine: its code differs)."""
    from mpimamba.models.ssm import native

    return native.runnable_variants() if platform.machine().lower() in ("x86_64", "amd64") else []


@pytest.fixture(params=_variants() or [None])
def variant(request, monkeypatch):
    """Runs the test once per runnable C variant, with that variant as the one the backend loads."""
    from mpimamba.models.ssm import native

    if request.param is None:
        pytest.skip("no C scan kernels built for this machine")
    chosen = native.Library.of(request.param)
    monkeypatch.setattr(native, "library", lambda: chosen)
    return request.param


@needs_native
@pytest.mark.parametrize("shape", [(5, 7), (1, 9), (11, 13)], ids=["5x7", "1x9", "11x13"])
@pytest.mark.parametrize("big_delta", [False, True], ids=["delta", "large-delta"])
def test_native_kernels_match_reference_on_ss2d(monkeypatch, variant, shape, big_delta):
    """N = 16 and 32 channels (two AVX-512 vectors, four AVX2 ones), the four orders by index, odd lengths
    (11·13 = 143 steps crosses four checkpoint segments, the last partial): values and every gradient."""
    calls = _count_native_calls(monkeypatch)
    inputs = make_ss2d_inputs(height=shape[0], width=shape[1], e=32, n=16, big_delta=big_delta)
    y_ref, g_ref = run_ss2d("reference", inputs, torch.float64)
    y, g = run_ss2d("cpu", inputs, torch.float32)
    assert calls == ["forward", "backward"], "the C kernels did not run"
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-4, atol=1e-5 * y_ref.abs().max().item())
    for name in g_ref:
        scale = g_ref[name].abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(g[name].double(), g_ref[name], rtol=1e-3, atol=1e-5 * scale, msg=name)


@needs_native
@pytest.mark.parametrize("softplus", [True, False])
def test_native_kernels_match_reference_grouped(monkeypatch, variant, softplus):
    """mamba_ssm's API with grouped B/C (2 groups of 16 channels) and every optional input."""
    calls = _count_native_calls(monkeypatch)
    assert_matches_reference("cpu", make_inputs(d=32, n=16, length=70, groups=2), delta_softplus=softplus)
    assert calls == ["forward", "backward"]
    with torch.no_grad():  # inference: no checkpoints kept, the same output
        inputs = {k: v.float() for k, v in make_inputs(d=32, n=16, length=70, groups=2).items()}
        y = ssm.selective_scan(**inputs, delta_softplus=softplus, backend="cpu")
    assert calls == ["forward", "backward", "forward"]
    y_ref, _ = run("reference", make_inputs(d=32, n=16, length=70, groups=2), softplus, torch.float64)
    torch.testing.assert_close(y.double(), y_ref.detach(), rtol=1e-4, atol=1e-5 * y_ref.abs().max().item())


@needs_native
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_and_numba_kernels_agree(monkeypatch, variant, threads):
    """The two implementations of the cpu backend give the same output and gradients (float32 rounding
    apart), whatever the number of threads the items are split over (3 leaves uneven ranges of 8 items)."""
    from mpimamba.models.ssm import native
    from mpimamba.threads import configure_threads

    calls = _count_native_calls(monkeypatch)
    inputs = make_ss2d_inputs(height=6, width=10, e=16, n=16, big_delta=False, seed=3)
    before = torch.get_num_threads()
    try:
        configure_threads(threads)
        y, g = run_ss2d("cpu", inputs, torch.float32)
        with native.use_native_kernels(False):
            y_numba, g_numba = run_ss2d("cpu", inputs, torch.float32)
    finally:
        configure_threads(before)
    assert calls == ["forward", "backward"]  # once, for the first run only
    torch.testing.assert_close(y, y_numba, rtol=1e-5, atol=1e-6 * y_numba.abs().max().item())
    for name in g:
        scale = g_numba[name].abs().max().item()
        torch.testing.assert_close(g[name], g_numba[name], rtol=1e-4, atol=1e-6 * scale, msg=name)


@needs_native
def test_native_kernels_from_two_python_threads_at_once(monkeypatch, variant):
    """Two Python threads scanning at the same time share the helper pool, which one of them has to enlarge
    (2 items use 2 threads, 8 items 3), and each gets its sequential result bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    from mpimamba.models.ssm import native
    from mpimamba.threads import configure_threads

    calls = _count_native_calls(monkeypatch)
    monkeypatch.setattr(native, "_pool", None)  # start without a pool, so that it is made and then enlarged
    monkeypatch.setattr(native, "_pool_size", 0)
    small = make_inputs(batch=1, d=32, n=16, length=40, groups=2)  # B·G = 2 items
    image = make_ss2d_inputs(height=6, width=10, e=16, n=16, seed=5)  # B·K = 8 items
    jobs = [lambda: run("cpu", small, True, torch.float32), lambda: run_ss2d("cpu", image, torch.float32)]
    before = torch.get_num_threads()
    try:
        configure_threads(3)
        alone = [job() for job in jobs]
        with ThreadPoolExecutor(2) as callers:
            together = [f.result() for f in [callers.submit(job) for job in jobs * 3]]
    finally:
        configure_threads(before)
    assert len(calls) == 2 * 4 * 2
    for (y, g), (y_alone, g_alone) in zip(together, alone * 3):
        torch.testing.assert_close(y, y_alone, rtol=0, atol=0)
        for name in g:
            torch.testing.assert_close(g[name], g_alone[name], rtol=0, atol=0, msg=name)


@needs_native
def test_a_library_built_from_other_source_is_not_used(monkeypatch):
    """An editable install does not rebuild the C library when scan_kernels.c changes; one whose ABI
    version differs from this source's is refused with a warning and the numba kernels run."""
    from mpimamba.models.ssm import native

    monkeypatch.setattr(native, "ABI_VERSION", native.ABI_VERSION + 1)
    native.load.cache_clear()
    native.library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="another version"):
            assert native.library() is None
        assert not native.usable(16, 32)
    finally:
        native.load.cache_clear()
        native.library.cache_clear()
