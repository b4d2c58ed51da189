/* The `cpu` scan backend's kernels in C: the same recurrences as `_forward_kernel` and `_backward_kernel` in
 * cpu.py (read their docstrings for the equations, the layouts and the checkpoints), for state size N = 16
 * and a channel count divisible by the vector width W.
 *
 * Why C: the numba kernels vectorise over channels but cannot keep a (state x channel) tile in registers,
 * and the numba backward reduces dB and dC (sums over channels) one (step, state) at a time. Here W channels
 * are one vector (GCC vector extensions; intrinsics only for min and max), the state h (forward) or the
 * adjoint state λ (backward) of those channels for all 16 states stays in registers for the whole sequence
 * (with AVX2's 16 vector registers, partly in stack slots that stay in L1), and the 16 channel sums of one
 * step are done together by a transposing tree of shuffles (NS - NS/W shuffle-add pairs, 15 with AVX-512 and
 * 14 with AVX2, instead of 16 separate horizontal sums; on AVX2 a tree whose shuffles stay within 128-bit
 * halves).
 *
 * Built twice by setup.py on x86-64 (optional extensions: a failed build leaves the numba kernels in use):
 * W = 16 with -march=x86-64-v4 (AVX-512) and W = 8 with -march=x86-64-v3 (AVX2 + FMA); native.py loads the
 * one the CPU supports through ctypes (the files are plain shared libraries, not Python modules).
 *
 * Precision as in the numba kernels: float32, with the sums over time (dA, dbias) added segment by segment
 * into float64 totals; exp and log1p are the same polynomials (rounding to the nearest integer instead of
 * floor(x + 0.5) in exp2, which only moves ties).
 */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef W
#define W 16  /* channels per vector: 16 for AVX-512, 8 for AVX2 */
#endif
#define NS 16  /* state size N */
#define SEG 32  /* steps between the forward's state checkpoints: cpu.SEGMENT */

typedef float vf __attribute__((vector_size(4 * W)));
typedef int32_t vi __attribute__((vector_size(4 * W)));
typedef float vfu __attribute__((vector_size(4 * W), aligned(4)));

static inline vf ld(const float *p) { return *(const vfu *)p; }
static inline void st(float *p, vf v) { *(vfu *)p = v; }
static inline vf bc(float x) { return x - (vf){0}; }
static inline vf sel(vi m, vf a, vf b) { return (vf)((m & (vi)a) | (~m & (vi)b)); }

/* min(c, x) and max(c, x), one instruction each where sel would take a compare and a blend (the blend is two
 * micro-ops on AVX2). These are the only intrinsics: vector extensions have no min or max in C. The constant
 * goes first: MINPS / MAXPS return their second operand when one is NaN, so a NaN x passes through as it
 * does through sel(x > c, c, x). */
#if W == 16
static inline vf vmin(vf c, vf x) { return (vf)_mm512_min_ps((__m512)c, (__m512)x); }
static inline vf vmax(vf c, vf x) { return (vf)_mm512_max_ps((__m512)c, (__m512)x); }
#elif W == 8
static inline vf vmin(vf c, vf x) { return (vf)_mm256_min_ps((__m256)c, (__m256)x); }
static inline vf vmax(vf c, vf x) { return (vf)_mm256_max_ps((__m256)c, (__m256)x); }
#else
static inline vf vmin(vf c, vf x) { return sel(x > c, c, x); }
static inline vf vmax(vf c, vf x) { return sel(x < c, c, x); }
#endif

static const float LOG2E = 1.4426950408889634f;
static const float P0 = 1.0000001192092896f, P1 = 0.6931469440460205f, P2 = 0.24022121727466583f,
                   P3 = 0.05550742521882057f, P4 = 0.009675459936261177f, P5 = 0.0013266970636323094f;

static inline vf exp2v(vf x) {
    const vf v = vmax(bc(-126.0f), vmin(bc(127.0f), x));
    const vf magic = bc(12582912.0f);  /* 1.5 * 2^23: adding and subtracting it rounds to the nearest integer */
    const vf shifted = v + magic;  /* k + 1.5 * 2^23 exactly, so bits(shifted) - bits(magic) = k */
    vf k = shifted - magic;
    vf r = v - k;
    vf p = ((((bc(P5) * r + bc(P4)) * r + bc(P3)) * r + bc(P2)) * r + bc(P1)) * r + bc(P0);
    vi ki = (vi)shifted - (vi)magic;  /* the integer k, read from those bits instead of converted from k */
    vi bits = (ki + 127) << 23;
    return p * (vf)bits;
}

static inline vf log1p_unit(vf w) {
    vf s = w / (bc(2.0f) + w);
    vf s2 = s * s;
    vf series = ((((bc(1.0f/11) * s2 + bc(1.0f/9)) * s2 + bc(1.0f/7)) * s2 + bc(1.0f/5)) * s2 + bc(1.0f/3)) * s2 + bc(1.0f);
    return bc(2.0f) * s * series;
}

/* Δ = softplus(v) (or v): the forward needs no slope */
static inline vf delta_only(vf v, int64_t softplus) {
    if (!softplus) return v;
    vf a = sel(v < bc(0.0f), -v, v);
    vf pos = sel(v > bc(0.0f), v, bc(0.0f));
    return pos + log1p_unit(exp2v(-a * bc(LOG2E)));
}

/* dt = softplus(v) (or v), slope = its derivative */
static inline void step_delta(vf v, int64_t softplus, vf *dt, vf *slope) {
    if (!softplus) { *dt = v; *slope = bc(1.0f); return; }
    vf a = sel(v < bc(0.0f), -v, v);
    vf w = exp2v(-a * bc(LOG2E));
    vf inv = bc(1.0f) / (bc(1.0f) + w);
    vf pos = sel(v > bc(0.0f), v, bc(0.0f));
    *dt = pos + log1p_unit(w);
    *slope = sel(v >= bc(0.0f), inv, w * inv);
}

/* out[j] lane l = the sum of the lanes of v[j*W + l]: NS horizontal sums in NS - NS/W shuffle-add pairs */
#if W == 8
/* AVX2: the tree of the other widths (below) pairs even and odd lanes across the whole vector, which crosses
 * the two 128-bit halves of an AVX2 vector: a vpermd per operand and a blend, 7 instructions per shuffle-add
 * pair, half of the backward's time in this reduction. Here the first two levels pair lanes within each half
 * (one vshufps per operand) and only the last level joins the halves (one vperm2f128 per operand). Every lane
 * is still ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), as in that tree, so the sums are the same bit for
 * bit; only where the partial sums sit in between differs. */
static const vi IN_HALF_EVEN = {0,2,8,10,4,6,12,14}, IN_HALF_ODD = {1,3,9,11,5,7,13,15};
static const vi LOW_HALVES = {0,1,2,3,8,9,10,11}, HIGH_HALVES = {4,5,6,7,12,13,14,15};
static inline void reduce_lanes(vf *v, vf *out) {
    for (int count = NS; count > NS / 4; count /= 2)  /* [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7] */
        for (int i = 0; i < count / 2; i++)
            v[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], IN_HALF_EVEN)
                 + __builtin_shuffle(v[2 * i], v[2 * i + 1], IN_HALF_ODD);
    for (int j = 0; j < NS / W; j++)  /* [a0123, b, c, d | a4567, b, c, d] pairs -> [a, b, c, d, e, f, g, h] */
        out[j] = __builtin_shuffle(v[2 * j], v[2 * j + 1], LOW_HALVES)
               + __builtin_shuffle(v[2 * j], v[2 * j + 1], HIGH_HALVES);
}
#else
#if W == 16
static const vi EVEN = {0,2,4,6,8,10,12,14,16,18,20,22,24,26,28,30}, ODD = {1,3,5,7,9,11,13,15,17,19,21,23,25,27,29,31};
#elif W == 4
static const vi EVEN = {0,2,4,6}, ODD = {1,3,5,7};
#else
#error "W must be 4, 8 or 16"
#endif
/* [a0+a1, a2+a3, ..., b0+b1, b2+b3, ...]: one level of the transposing reduction */
static inline vf pairsum(vf a, vf b) { return __builtin_shuffle(a, b, EVEN) + __builtin_shuffle(a, b, ODD); }

static inline void reduce_lanes(vf *v, vf *out) {
    int count = NS;
    for (int width = W; width > 1; width /= 2) {
        for (int i = 0; i < count / 2; i++) v[i] = pairsum(v[2 * i], v[2 * i + 1]);
        count /= 2;
    }
    for (int j = 0; j < NS / W; j++) out[j] = v[j];
}
#endif

/* Shapes, in the order native.py passes them. */
typedef struct {
    int64_t batch, length, orders, channels, ku_count, kg_count, segments;
} dims_t;

/* Bumped whenever a signature or a layout changes: native.py refuses a library built from older source
 * (an editable install does not rebuild it when this file changes, and ctypes checks no signatures). */
int64_t scan_abi_version(void) { return 1; }

int64_t scan_vector_width(void) { return W; }

int64_t scan_state_size(void) { return NS; }

/* Forward of item (b, k): y[b, p, k] for every step; when `save`, ckpt[b, k, s] = the state before step
 * s·SEG (layouts as in backward_item; y (B, L, K, E)). */
static void forward_item(int64_t item, const dims_t *d, int64_t softplus, int64_t save,
                         const float *u, const float *delta, const float *bias, const float *A,
                         const float *Bm, const float *Cm, const int64_t *positions, float *y, float *ckpt)
{
    const int64_t K = d->orders, E = d->channels, L = d->length, S = d->segments;
    const int64_t b = item / K, k = item % K;
    const int64_t ku = d->ku_count == 1 ? 0 : k;
    const int64_t *pos = positions + k * L;
    for (int64_t c0 = 0; c0 < E; c0 += W) {
        vf A2k[NS], h[NS];
        for (int n = 0; n < NS; n++) {
            A2k[n] = ld(A + (k * NS + n) * E + c0) * bc(LOG2E);
            h[n] = bc(0.0f);
        }
        const vf bias_v = ld(bias + k * E + c0);
        for (int64_t t = 0; t < L; t++) {
            if (save && t % SEG == 0)
                for (int n = 0; n < NS; n++) st(ckpt + (((b * K + k) * S + t / SEG) * NS + n) * E + c0, h[n]);
            const int64_t p = pos[t];
            const int64_t row = (b * L + p) * K + k;
            const vf dt = delta_only(ld(delta + row * E + c0) + bias_v, softplus);
            const vf x = dt * ld(u + ((b * L + p) * d->ku_count + ku) * E + c0);
            const float *bt = Bm + row * NS, *ct = Cm + row * NS;
            vf yt = bc(0.0f);
            for (int n = 0; n < NS; n++) {
                h[n] = exp2v(dt * A2k[n]) * h[n] + x * bc(bt[n]);
                yt += h[n] * bc(ct[n]);
            }
            st(y + row * E + c0, yt);
        }
    }
}

/* Backward: items [first, last) of the B·K (batch, order) items, each owning its rows of every output (no two items
 * write the same entry). Layouts, channels last: u (B, L, Ku, E); delta, du, ddelta (B, L, K, E); bias (K, E);
 * A (K, N, E); Bm, Cm, dB, dC (B, L, K, N); positions (K, L); ckpt (B, K, S, N, E); gy (B, L, Kg, E);
 * dA_part (B, K, N, E) and dbias_part (B, K, E) in float64.
 *
 * Loop order: segments outside, channel blocks inside. Every channel block reads the same rows of Bm and Cm
 * and adds into the same rows of dB and dC; with the blocks inside, a segment's rows (SEG x 4 arrays x 64
 * bytes) stay in L1 while all blocks pass over them, instead of the whole sequence's (4 MB at L 16384) being
 * streamed from L3 once per block. Each block's adjoint state λ is carried between segments in `lam_all`. The
 * sums are added in the same order as with blocks outside (dB, dC: block by block within a row; dA, dbias:
 * segment by segment), so the numbers are the same bit for bit. */
static void backward_item(int64_t item, const dims_t *d, int64_t softplus,
                        const float *u, const float *delta, const float *bias, const float *A,
                        const float *Bm, const float *Cm, const int64_t *positions, const float *ckpt,
                        const float *gy, float *du, float *ddelta, float *dB, float *dC,
                        double *dA_part, double *dbias_part, vf (*lam_all)[NS])
{
    const int64_t K = d->orders, E = d->channels, L = d->length, S = d->segments;
    const int64_t b = item / K, k = item % K;
    const int64_t ku = d->ku_count == 1 ? 0 : k, kg = d->kg_count == 1 ? 0 : k;
    const int64_t *pos = positions + k * L;
    double *dA_tot = dA_part + (b * K + k) * NS * E;  /* (N, E): this item's totals, added segment by segment */
    double *dbias_tot = dbias_part + (b * K + k) * E;  /* (E,) */
    vf hbuf[SEG + 1][NS], dbuf[SEG][NS], xbuf[SEG], dtbuf[SEG], slbuf[SEG];
    memset(dA_tot, 0, sizeof(double) * NS * E);
    memset(dbias_tot, 0, sizeof(double) * E);
    for (int64_t blk = 0; blk < E / W; blk++)
        for (int n = 0; n < NS; n++) lam_all[blk][n] = bc(0.0f);
    for (int64_t s = S - 1; s >= 0; s--) {
        const int64_t t0 = s * SEG, t1 = t0 + SEG < L ? t0 + SEG : L;
        for (int64_t c0 = 0; c0 < E; c0 += W) {
            const int first = c0 == 0;
            vf *lam = lam_all[c0 / W];
            vf Ak[NS], A2k[NS], dA_seg[NS];
            for (int n = 0; n < NS; n++) {
                Ak[n] = ld(A + (k * NS + n) * E + c0);
                A2k[n] = Ak[n] * bc(LOG2E);
            }
            const vf bias_v = ld(bias + k * E + c0);
            for (int n = 0; n < NS; n++) hbuf[0][n] = ld(ckpt + (((b * K + k) * S + s) * NS + n) * E + c0);
            for (int64_t t = t0; t < t1; t++) {  /* recompute the segment's decays and states */
                const int i = (int)(t - t0);
                const int64_t p = pos[t];
                const int64_t row = (b * L + p) * K + k;
                vf dt, sl;
                step_delta(ld(delta + row * E + c0) + bias_v, softplus, &dt, &sl);
                vf x = dt * ld(u + ((b * L + p) * d->ku_count + ku) * E + c0);
                dtbuf[i] = dt; slbuf[i] = sl; xbuf[i] = x;
                const float *bt = Bm + row * NS;
                for (int n = 0; n < NS; n++) {
                    vf de = exp2v(dt * A2k[n]);
                    dbuf[i][n] = de;
                    hbuf[i + 1][n] = de * hbuf[i][n] + x * bc(bt[n]);
                }
            }
            vf dbias_seg = bc(0.0f);
            for (int n = 0; n < NS; n++) dA_seg[n] = bc(0.0f);
            for (int64_t t = t1 - 1; t >= t0; t--) {  /* walk it backwards */
                const int i = (int)(t - t0);
                const int64_t p = pos[t];
                const int64_t row = (b * L + p) * K + k;
                const vf g = ld(gy + ((b * L + p) * d->kg_count + kg) * E + c0);
                const vf x = xbuf[i], dt = dtbuf[i];
                const float *bt = Bm + row * NS, *ct = Cm + row * NS;
                vf accC[NS], accB[NS];
                vf sum_lb = bc(0.0f), sum_ad = bc(0.0f);
                for (int n = 0; n < NS; n++) {
                    const vf dn = dbuf[i][n];
                    vf lt = lam[n] + bc(ct[n]) * g;
                    accC[n] = g * hbuf[i + 1][n];
                    accB[n] = lt * x;
                    sum_lb += lt * bc(bt[n]);
                    vf dec = lt * dn * hbuf[i][n];
                    sum_ad += Ak[n] * dec;
                    dA_seg[n] += dt * dec;
                    lam[n] = lt * dn;
                }
                vf rc[NS / W], rb[NS / W];
                reduce_lanes(accC, rc);
                reduce_lanes(accB, rb);
                for (int j = 0; j < NS / W; j++) {
                    float *pc = dC + row * NS + j * W, *pb = dB + row * NS + j * W;
                    if (first) { st(pc, rc[j]); st(pb, rb[j]); }
                    else { st(pc, ld(pc) + rc[j]); st(pb, ld(pb) + rb[j]); }
                }
                st(du + row * E + c0, sum_lb * dt);
                vf graw = (sum_ad + sum_lb * ld(u + ((b * L + p) * d->ku_count + ku) * E + c0)) * slbuf[i];
                st(ddelta + row * E + c0, graw);
                dbias_seg += graw;
            }
            for (int n = 0; n < NS; n++) for (int e = 0; e < W; e++) dA_tot[n * E + c0 + e] += dA_seg[n][e];
            for (int e = 0; e < W; e++) dbias_tot[c0 + e] += dbias_seg[e];
        }
    }
}

void scan_backward(int64_t first, int64_t last, const dims_t *d, int64_t softplus,
                   const float *u, const float *delta, const float *bias, const float *A,
                   const float *Bm, const float *Cm, const int64_t *positions, const float *ckpt,
                   const float *gy, float *du, float *ddelta, float *dB, float *dC,
                   double *dA_part, double *dbias_part)
{
    /* λ of every channel block; aligned, since the vector loads and stores of vf may assume it */
    vf (*lam_all)[NS] = aligned_alloc(sizeof(vf), sizeof(vf[NS]) * (size_t)(d->channels / W));
    if (lam_all == NULL) abort();  /* a few kB: failing here means the process is out of memory anyway */
    for (int64_t item = first; item < last; item++)
        backward_item(item, d, softplus, u, delta, bias, A, Bm, Cm, positions, ckpt, gy, du, ddelta, dB, dC,
                      dA_part, dbias_part, lam_all);
    free(lam_all);
}

void scan_forward(int64_t first, int64_t last, const dims_t *d, int64_t softplus, int64_t save,
                  const float *u, const float *delta, const float *bias, const float *A,
                  const float *Bm, const float *Cm, const int64_t *positions, float *y, float *ckpt)
{
    for (int64_t item = first; item < last; item++)
        forward_item(item, d, softplus, save, u, delta, bias, A, Bm, Cm, positions, y, ckpt);
}
