"""Time-domain x-space simulator (DESIGN §2.1): trajectories, the system operator, the reference loop.

A gradient G (A/m² per axis) and a drive field H(t) move the field-free point (FFP) along
x_ffp(t) = H(t)/G; a particle at r sees H(t) − G·r, i.e. ξ = k·G·(x_ffp(t) − r). The receive coils see

    s(t) = Σ_p c_p · m · [L'(|ξ|) P∥ + (L(|ξ|)/|ξ|) P⊥] · k·dH/dt,      dH/dt = G·v(t),

and x-space reconstruction places (v̂·s)/|v| at x_ffp(t), then grids those samples onto the pixel grid.
With the same scale as `psf.py` (a pixel of concentration 1 under a resting-direction FFP gives 1) the
native sample is 3·(v̂·s)/(|v|·m·k·v̂ᵀGv̂); for a Cartesian raster v̂ ≈ drive axis and this is exactly
c ⊛ h_drive (the x-space theorem, tested).

Everything but the phantom is fixed by the protocol (trajectory, grid, particle), so the image is a linear
map of the concentrations: `XSpaceOperator` builds once the dense native operator (T samples × P pixels,
float32, 4·T·P bytes: 570 MB for the authors' 9,900-sample Lissajous on 120×120) and the sparse gridding
matrix (P × T, linear interpolation on the Delaunay triangulation of the sample positions, nearest
sample outside their hull), then images a batch of phantoms with two matrix products.
`simulate_loop` is the plain per-pixel reference of the same physics (griddata for the gridding).

Positions are (x, z) in metres; images are (H, W) = (z, x) like everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp
import torch
from scipy.interpolate import griddata
from scipy.spatial import Delaunay, cKDTree

from .langevin import _SERIES_BELOW, MU0, Particle, langevin_deriv, langevin_over_x
from .psf import drive_axis, per_axis


@dataclass(frozen=True)
class Trajectory:
    """FFP samples: position (T, 2) in m and velocity (T, 2) in m/s, columns (x, z)."""

    position: np.ndarray
    velocity: np.ndarray

    def __post_init__(self):
        if self.position.shape != self.velocity.shape or self.position.shape[1:] != (2,):
            raise ValueError("trajectory position and velocity must both be (T, 2)")
        if not np.all(np.linalg.norm(self.velocity, axis=1) > 0):
            raise ValueError("trajectory has a sample at rest: the velocity direction is undefined there")


def lissajous(amplitude_mm: float = 15.0, fx_hz: float = 25e3, fz_hz: float = 24.75e3,
              sample_rate_hz: float = 2.475e6, samples: int = 9900) -> Trajectory:
    """The authors' Lissajous protocol: drive amplitude G·15 mm per axis, i.e. the FFP sweeps ±15 mm.

    With 25 kHz / 24.75 kHz (the authors' fx, fy; our second axis is z) the pattern repeats every
    4 ms = 9,900 samples at 2.475 MHz. This sin/sin 100:99 figure is run through twice per period, once
    in each direction, so the samples sit at only ~5,000 distinct positions (the gridding merges them).
    """
    t = np.arange(samples) / sample_rate_hz
    a = amplitude_mm * 1e-3
    wx, wz = 2 * np.pi * fx_hz, 2 * np.pi * fz_hz
    position = np.stack([a * np.sin(wx * t), a * np.sin(wz * t)], axis=1)
    velocity = np.stack([a * wx * np.cos(wx * t), a * wz * np.cos(wz * t)], axis=1)
    return Trajectory(position, velocity)


def raster(drive: str, fov_mm, lines: int, samples_per_line: int, overshoot: float = 0.1,
           frequency_hz: float = 25e3) -> Trajectory:
    """Cartesian raster: a fast sinusoidal drive along `drive`, a slow linear shift along the other axis.

    fov_mm: the (z, x) extent to cover. The fast sweep overshoots the FOV by `overshoot` (fraction of the
    half-width) on each side so that its turning points, where v̂ swings off the drive axis, fall outside.
    `lines` half-periods of the fast drive cover the slow axis from edge to edge.
    """
    fov = per_axis(fov_mm, "fov_mm")
    fast = drive_axis(drive)  # 0 = z, 1 = x (array order)
    half_fast = fov[fast] / 2 * (1 + overshoot) * 1e-3
    half_slow = fov[1 - fast] / 2 * 1e-3
    duration = lines / (2 * frequency_hz)
    t = (np.arange(lines * samples_per_line) + 0.5) * duration / (lines * samples_per_line)
    w = 2 * np.pi * frequency_hz
    fast_pos, fast_vel = -half_fast * np.cos(w * t), half_fast * w * np.sin(w * t)
    slow_pos = -half_slow + 2 * half_slow * t / duration
    slow_vel = np.full_like(t, 2 * half_slow / duration)
    # columns are (x, z): the x column is the fast one when the drive is along x (array axis 1)
    cols = (fast_pos, slow_pos) if fast == 1 else (slow_pos, fast_pos)
    vels = (fast_vel, slow_vel) if fast == 1 else (slow_vel, fast_vel)
    return Trajectory(np.stack(cols, axis=1), np.stack(vels, axis=1))


def pixel_centres(shape: tuple[int, int], spacing_mm) -> np.ndarray:
    """(P, 2) pixel centres in m, columns (x, z), row-major like image.reshape(-1)."""
    h, w = shape
    dz, dx = per_axis(spacing_mm, "spacing_mm")
    z = (np.arange(h) - (h - 1) / 2) * dz * 1e-3
    x = (np.arange(w) - (w - 1) / 2) * dx * 1e-3
    zz, xx = np.meshgrid(z, x, indexing="ij")
    return np.stack([xx.ravel(), zz.ravel()], axis=1)


def _gradient_xz(gradient) -> np.ndarray:
    """Gradient in A/m² as an (x, z) vector (the public API takes T/m as a number or a (z, x) pair)."""
    gz, gx = per_axis(gradient, "gradient")
    return np.array([gx, gz]) / MU0


def _native_scale(trajectory: Trajectory, g_xz: np.ndarray, particle: Particle):
    """v̂ (T, 2) and the per-sample factor 3/(|v|·m·k·v̂ᵀGv̂) turning v̂·s into the native image."""
    speed = np.linalg.norm(trajectory.velocity, axis=1)
    vhat = trajectory.velocity / speed[:, None]
    g_along = (vhat**2) @ g_xz  # v̂ᵀ G v̂ for diagonal G
    return vhat, 3.0 / (speed * particle.moment * particle.k * g_along)


def _merge_duplicates(points_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct sample positions in mm (U, 2) and, per sample, the index of its position.

    The authors' 25 kHz / 24.75 kHz Lissajous passes every point twice (once each way), which leaves Qhull
    with thousands of coincident points; the gridding uses each position once, averaging its samples.
    """
    pts = np.round(points_m * 1e3, 9)  # mm, rounded to 1 pm so that float noise does not split a pair
    unique, inverse = np.unique(pts, axis=0, return_inverse=True)
    return unique, inverse.ravel()


def gridding_matrix(points_m: np.ndarray, shape: tuple[int, int], spacing_mm) -> sp.csr_matrix:
    """Sparse (P, T) linear-interpolation weights from scattered samples to pixel centres.

    Barycentric weights on the Delaunay triangulation of the distinct sample positions (what
    griddata(method='linear') does, computed once); pixel centres outside their convex hull take the
    nearest position; samples sharing a position share its weight equally.
    """
    pts, inverse = _merge_duplicates(points_m)
    grid = pixel_centres(shape, spacing_mm) * 1e3
    tri = Delaunay(pts)
    simplex = tri.find_simplex(grid)
    inside = simplex >= 0
    rows, cols, vals = [], [], []
    if inside.any():
        trans = tri.transform[simplex[inside]]  # (n, 3, 2): inverse affine map and the origin vertex
        bary = np.einsum("nij,nj->ni", trans[:, :2], grid[inside] - trans[:, 2])  # (n, 2)
        weights = np.concatenate([bary, 1 - bary.sum(1, keepdims=True)], axis=1)  # (n, 3)
        rows.append(np.repeat(np.flatnonzero(inside), 3))
        cols.append(tri.simplices[simplex[inside]].ravel())
        vals.append(weights.ravel())
    if (~inside).any():
        _, nearest = cKDTree(pts).query(grid[~inside])
        rows.append(np.flatnonzero(~inside))
        cols.append(nearest)
        vals.append(np.ones(len(nearest)))
    to_unique = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(grid.shape[0], len(pts)))  # (P, U)
    counts = np.bincount(inverse, minlength=len(pts))
    spread = sp.csr_matrix((1.0 / counts[inverse], (inverse, np.arange(len(inverse)))),
                           shape=(len(pts), len(inverse)))  # (U, T): the mean over a position's samples
    return (to_unique @ spread).tocsr()


@numba.njit(cache=True)
def _envelopes(xi: float) -> tuple[float, float]:
    """(L'(ξ), L(ξ)/ξ) for ξ ≥ 0: the scalar twin of `langevin` (same series switch, same e = exp(−2ξ) forms)."""
    if xi < _SERIES_BELOW:
        x2 = xi * xi
        return 1.0 / 3.0 - x2 / 15.0 + 2.0 * x2 * x2 / 189.0, 1.0 / 3.0 - x2 / 45.0 + 2.0 * x2 * x2 / 945.0
    e = np.exp(-2.0 * xi)
    return 1.0 / (xi * xi) - 4.0 * e / (1.0 - e) ** 2, ((1.0 + e) / (1.0 - e) - 1.0 / xi) / xi


@numba.njit(parallel=True, cache=True)
def _native_kernel(pos, dhdt, vhat, scale, g, centres, k, m, out):
    """out[t, p] = scale_t · v̂_t · m·k·[L' P∥ + (L/|ξ|) P⊥]·dH/dt for ξ = k·G·(pos_t − r_p), all (x, z).

    One pass per entry with no temporaries: the vectorised form spends its time allocating (T, P, 2)
    arrays, this kernel spends it on the one exp per entry (float64 inside, float32 out).
    """
    for t in numba.prange(pos.shape[0]):
        hx, hz = dhdt[t, 0], dhdt[t, 1]
        for p in range(centres.shape[0]):
            xx = k * g[0] * (pos[t, 0] - centres[p, 0])
            xz = k * g[1] * (pos[t, 1] - centres[p, 1])
            norm = np.sqrt(xx * xx + xz * xz)
            ld, lx = _envelopes(norm)
            inv = 1.0 / norm if norm > 0 else 0.0  # at ξ = 0 ld = lx: P∥ drops out, any ξ̂ will do
            ux, uz = xx * inv, xz * inv
            along = ux * hx + uz * hz  # ξ̂·dH/dt
            sx = ld * along * ux + lx * (hx - along * ux)
            sz = ld * along * uz + lx * (hz - along * uz)
            out[t, p] = scale[t] * m * k * (sx * vhat[t, 0] + sz * vhat[t, 1])


class XSpaceOperator:
    """The time-domain simulator of one protocol as a linear operator: phantoms (B, H, W) -> images (B, H, W).

    `native` (T, P) float32 maps pixel concentrations to native x-space samples (built by a compiled
    kernel, parallel over samples; `simulate_loop` is its reference); `grid` (P, T) sparse grids them.
    """

    def __init__(self, trajectory: Trajectory, shape: tuple[int, int], spacing_mm=0.25, gradient=9.0,
                 particle: Particle = Particle()):
        self.shape = (int(shape[0]), int(shape[1]))
        g = _gradient_xz(gradient)  # (2,) A/m², (x, z)
        vhat, scale = _native_scale(trajectory, g, particle)
        centres = pixel_centres(self.shape, spacing_mm)  # (P, 2)
        native = np.empty((len(vhat), len(centres)), np.float32)  # (T, P)
        _native_kernel(trajectory.position, trajectory.velocity * g, vhat, scale, g, centres,
                       particle.k, particle.moment, native)
        self.native = torch.from_numpy(native)
        self.grid = gridding_matrix(trajectory.position, self.shape, spacing_mm).astype(np.float32)

    def __call__(self, phantoms, chunk: int = 64) -> np.ndarray:
        """Image a batch (B, H, W) (numpy or torch) -> float32 numpy (B, H, W); `chunk` phantoms at a time."""
        c = torch.as_tensor(np.asarray(phantoms, np.float32))
        if c.ndim != 3 or tuple(c.shape[1:]) != self.shape:
            raise ValueError(f"XSpaceOperator built for phantoms (B, {self.shape[0]}, {self.shape[1]}), "
                             f"got {tuple(c.shape)}")
        out = np.empty(tuple(c.shape), np.float32)
        for start in range(0, len(c), chunk):
            flat = c[start:start + chunk].reshape(-1, self.native.shape[1])  # (b, P)
            samples = (flat @ self.native.T).numpy()  # (b, T) native x-space samples
            out[start:start + chunk] = (self.grid @ samples.T).T.reshape(-1, *self.shape)  # (b, H, W)
        return out


def simulate_loop(phantom: np.ndarray, trajectory: Trajectory, spacing_mm=0.25, gradient=9.0,
                  particle: Particle = Particle()) -> np.ndarray:
    """Reference: the same physics summed pixel by pixel in float64, gridded with scipy's griddata."""
    shape = phantom.shape
    g = _gradient_xz(gradient)
    k, m = particle.k, particle.moment
    dhdt = trajectory.velocity * g  # (T, 2)
    signal = np.zeros_like(trajectory.position)  # (T, 2): s(t), received on the x and z coils
    for c, r in zip(phantom.ravel(), pixel_centres(shape, spacing_mm)):
        if c == 0:
            continue
        xi = k * g * (trajectory.position - r)  # (T, 2)
        norm = np.linalg.norm(xi, axis=1)
        xhat = xi / np.where(norm > 0, norm, 1.0)[:, None]
        par = np.sum(xhat * dhdt, axis=1, keepdims=True) * xhat
        signal += c * m * k * (langevin_deriv(norm)[:, None] * par + langevin_over_x(norm)[:, None] * (dhdt - par))
    vhat, scale = _native_scale(trajectory, g, particle)
    native = np.sum(signal * vhat, axis=1) * scale  # (T,)
    pts, inverse = _merge_duplicates(trajectory.position)  # mm, distinct positions as in gridding_matrix
    native = np.bincount(inverse, native) / np.bincount(inverse)  # (U,) mean over coincident samples
    centres = pixel_centres(shape, spacing_mm) * 1e3
    image = griddata(pts, native, centres, method="linear")
    outside = np.isnan(image)
    image[outside] = griddata(pts, native, centres[outside], method="nearest")
    return image.reshape(shape).astype(np.float32)
