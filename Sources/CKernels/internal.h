#ifndef GEOSAM2_CKERNELS_INTERNAL_H
#define GEOSAM2_CKERNELS_INTERNAL_H

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>

// Every function that uses AVX-512 intrinsics carries this attribute: the package is built for
// the baseline x86-64 target, and the Swift side only calls in after `gs_has_avx512()`.
#define GS_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define GS_INLINE static inline __attribute__((always_inline)) GS_TARGET

/// The k block of the packed fp32 GEMM (gemm.c, gemm_avx2.c). Each block's products are summed
/// from zero and then added to the output, so the block is part of the arithmetic: both
/// instruction sets use this one to give the same bits.
enum { GS_GEMM_KC = 256 };

/// The flash attention's blocking (attention.c, attention_avx2.c): queries per block (the scratch
/// layout), keys per packed tile, and keys per block, where the online softmax rescales (part of
/// the arithmetic, like GS_GEMM_KC).
enum { GS_ATTENTION_QB = 32, GS_ATTENTION_KT = 12, GS_ATTENTION_KB = 384 };

// The flash attention's scalar steps, shared by attention.c and attention_avx2.c: the state of
// every query block (Oᵀ [hd][QB], running max, running sum), a key block packed [tile][d][KT],
// a query block transposed and scaled, and the final division by the sums.

/// Starts the state of `blocks` query blocks at `state`: O = 0, m = −∞, l = 0.
static inline void gs_attention_start(float *state, long blocks, long hd) {
    long size = hd * GS_ATTENTION_QB + 2 * GS_ATTENTION_QB;
    for (long b = 0; b < blocks; b++) {
        float *s = state + b * size;
        for (long i = 0; i < hd * GS_ATTENTION_QB; i++) s[i] = 0;
        for (long i = 0; i < GS_ATTENTION_QB; i++) { s[hd * GS_ATTENTION_QB + i] = -INFINITY; s[hd * GS_ATTENTION_QB + GS_ATTENTION_QB + i] = 0; }
    }
}

/// Packs keys [0, kbn) of a block (rows `ldk` apart) as [tile][d][KT], zero rows past the end.
static inline void gs_attention_pack_keys(const float *k, long ldk, long kbn, long hd, float *kp) {
    long tiles = (kbn + GS_ATTENTION_KT - 1) / GS_ATTENTION_KT;
    for (long t = 0; t < tiles; t++) {
        float *dst = kp + t * hd * GS_ATTENTION_KT;
        for (long r = 0; r < GS_ATTENTION_KT; r++) {
            long j = t * GS_ATTENTION_KT + r;
            for (long d = 0; d < hd; d++) dst[d * GS_ATTENTION_KT + r] = j < kbn ? k[j * ldk + d] : 0.0f;
        }
    }
}

/// Query block `q` (qn rows `ldq` apart) as qt[d][i] = q[i][d]·scale, zero past qn.
static inline void gs_attention_load_queries(const float *q, long ldq, long qn, long hd, float scale, float *qt) {
    for (long d = 0; d < hd; d++)
        for (long i = 0; i < GS_ATTENTION_QB; i++) qt[d * GS_ATTENTION_QB + i] = i < qn ? q[i * ldq + d] * scale : 0.0f;
}

/// out[i][d] = O[d][i] / l[i] for the nq queries of every block.
static inline void gs_attention_finish(const float *state, long nq, long hd, float *out, long ldo) {
    long size = hd * GS_ATTENTION_QB + 2 * GS_ATTENTION_QB;
    for (long b = 0; b * GS_ATTENTION_QB < nq; b++) {
        long q0 = b * GS_ATTENTION_QB, qn = nq - q0 < GS_ATTENTION_QB ? nq - q0 : GS_ATTENTION_QB;
        const float *s = state + b * size;
        for (long i = 0; i < qn; i++) {
            float *o = out + (q0 + i) * ldo;
            float inv = 1.0f / s[hd * GS_ATTENTION_QB + GS_ATTENTION_QB + i];
            for (long d = 0; d < hd; d++) o[d] = s[d * GS_ATTENTION_QB + i] * inv;
        }
    }
}

/// The packed GEMM's empty sum (k = 0): y = bias (+ y), for the columns of panels [panel_begin, panel_end).
static inline void gs_gemm_empty_sum(const float *bias, float *y, long ldy, long m, long n, long panel_begin, long panel_end,
                                     int accumulate) {
    for (long r = 0; r < m; r++)
        for (long j = panel_begin * GS_PANEL; j < n && j < panel_end * GS_PANEL; j++)
            y[r * ldy + j] = (bias ? bias[j] : 0) + (accumulate ? y[r * ldy + j] : 0);
}

/// Writes an `mr × width` tile (row stride GS_PANEL) transposed, + bias: y[(col + j)·ldy + i].
static inline void gs_store_tile_transposed(const float *tile, long mr, long width, const float *bias, long col, float *y,
                                            long ldy) {
    for (long j = 0; j < width; j++) {
        float bj = bias ? bias[col + j] : 0.0f;
        float *o = y + (col + j) * ldy;
        for (long i = 0; i < mr; i++) o[i] = tile[i * GS_PANEL + j] + bj;
    }
}

/// Input pixels of look-ahead for the transposed-convolution epilogue's software prefetch.
enum { GS_EPILOGUE_PREFETCH = 4 };

/// Prefetches the high-res map's pixels of both output rows of input pixel (x + look-ahead, y):
/// the map streams from memory, and the hardware prefetcher of the machines measured does not keep
/// up (a cold map doubled the epilogue's time). An input pixel covers 2·oc floats of each row.
static inline void gs_epilogue_prefetch(const float *addend, long y, long x, long w, long oc) {
    if (x + GS_EPILOGUE_PREFETCH >= w) return;
    for (long r = 0; r < 2; r++) {
        const char *ahead = (const char *)(addend + ((2 * y + r) * 2 * w + 2 * (x + GS_EPILOGUE_PREFETCH)) * oc);
        for (long line = 0; line < 2 * oc * (long)sizeof(float); line += 64) _mm_prefetch(ahead + line, _MM_HINT_T0);
    }
}

// Bilinear upsampling (`upsample_bilinear2d`, align_corners=False), shared by the AVX-512 and
// AVX2 mask kernels: both axes' taps and the scratch; each does the width pass itself.

/// One axis of `upsample_bilinear2d` (align_corners=False): source taps and weights.
static inline void gs_bilinear_axis(long in, long out, int *i0, int *i1, float *l0, float *l1) {
    // Inlined into FMA kernels, `scale·(i + 0.5) − 0.5` would become one fused operation and move
    // the taps: kept as a multiply and a subtraction, as the plain Swift loop computes it.
#pragma clang fp contract(off)
    float scale = (float)in / (float)out;
    for (long i = 0; i < out; i++) {
        // Parity: area_pixel_compute_source_index clamps the source index at 0 (non-cubic).
        float real = scale * ((float)i + 0.5f) - 0.5f;
        if (real < 0) real = 0;
        long a = (long)real;
        if (a > in - 1) a = in - 1;
        long b = a + (a < in - 1 ? 1 : 0);
        float lambda = real - (float)a;
        if (lambda < 0) lambda = 0;
        if (lambda > 1) lambda = 1;
        i0[i] = (int)a; i1[i] = (int)b; l0[i] = 1.0f - lambda; l1[i] = lambda;
    }
}

/// The scratch of a bilinear upsampling: both axes' source indices and weights, and the width
/// pass of every source row (h · ow floats); the height pass happens per output row.
typedef struct {
    int *xi0, *xi1, *yi0, *yi1;
    float *xl0, *xl1, *yl0, *yl1, *rows;
    long ow;
} upsampling;

static inline void gs_upsampling_free(upsampling *u) {
    free(u->xi0); free(u->xi1); free(u->xl0); free(u->xl1); free(u->yi0); free(u->yi1); free(u->yl0); free(u->yl1); free(u->rows);
}

/// Allocates `u`'s scratch for an h × w map upsampled to oh × ow and fills both axes' taps (the
/// width pass, in the instruction set's kernel, fills `rows`). Returns −1 when memory is short.
static inline int gs_upsampling_allocate(upsampling *u, long h, long w, long oh, long ow) {
    u->ow = ow;
    u->xi0 = malloc(sizeof(int) * (size_t)ow); u->xi1 = malloc(sizeof(int) * (size_t)ow);
    u->xl0 = malloc(sizeof(float) * (size_t)ow); u->xl1 = malloc(sizeof(float) * (size_t)ow);
    u->yi0 = malloc(sizeof(int) * (size_t)oh); u->yi1 = malloc(sizeof(int) * (size_t)oh);
    u->yl0 = malloc(sizeof(float) * (size_t)oh); u->yl1 = malloc(sizeof(float) * (size_t)oh);
    u->rows = malloc(sizeof(float) * (size_t)(h * ow + 16));
    if (!u->xi0 || !u->xi1 || !u->xl0 || !u->xl1 || !u->yi0 || !u->yi1 || !u->yl0 || !u->yl1 || !u->rows) {
        gs_upsampling_free(u);
        return -1;
    }
    gs_bilinear_axis(w, ow, u->xi0, u->xi1, u->xl0, u->xl1);
    gs_bilinear_axis(h, oh, u->yi0, u->yi1, u->yl0, u->yl1);
    return 0;
}

/// Mask of the first `n` lanes (n in 0...16).
GS_INLINE __mmask16 gs_lanes(long n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n < 0 ? 0 : n)) - 1u);
}

/// The Cephes single-precision exp: the clamp, ln 2 in two parts for the reduction, and the
/// polynomial's coefficients (highest first). Shared by `gs_exp512` and the AVX2 `gs_exp256`.
#define GS_EXP_LOWEST (-87.3f)
#define GS_EXP_HIGHEST 88.7f
#define GS_LOG2E 1.44269504088896341f
#define GS_LN2_HIGH 0.693359375f
#define GS_LN2_LOW (-2.12194440e-4f)
#define GS_EXP_P5 1.9875691500e-4f
#define GS_EXP_P4 1.3981999507e-3f
#define GS_EXP_P3 8.3334519073e-3f
#define GS_EXP_P2 4.1665795894e-2f
#define GS_EXP_P1 1.6666665459e-1f
#define GS_EXP_P0 5.0000001201e-1f

/// exp(x) with the Cephes single-precision polynomial (≈1 ulp on the reduced range), scaled by
/// 2ⁿ with `scalef`. Inputs below −87.3 give ≈1e−38 rather than 0, which is harmless where it
/// is used (softmax weights relative to the row maximum, erf tails).
GS_INLINE __m512 gs_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(GS_EXP_LOWEST)), _mm512_set1_ps(GS_EXP_HIGHEST));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(GS_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(GS_LN2_HIGH), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(GS_LN2_LOW), r);
    __m512 p = _mm512_set1_ps(GS_EXP_P5);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(GS_EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(GS_EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(GS_EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(GS_EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(GS_EXP_P0));
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/// erf(x) from a table of quintics in t = 8|x| − k on the 32 intervals [k/8, (k+1)/8) of [0, 4),
/// with coefficients from tools/kernels/make_erf_table.py (which also prints the error). The
/// float32 evaluation is within 6e−8 of erf — about one ulp near 1, and closer than the
/// Abramowitz & Stegun 7.1.26 formula of PyTorch's vectorised CPU erf (1.5e−7) — in 19
/// instructions instead of that formula's 31 (an exp and a reciprocal). GELU's epilogues in the
/// mask decoder's upscaling were mostly this function.
// Generated; max |error| of the float32 evaluation on [-4.5, 4.5]: 5.94e-08
static const float gs_erf_c0[32] = {
    0.0f, 0.140316203f, 0.276326388f, 0.404116899f, 0.520499885f, 0.623240888f, 0.711155653f, 0.784075081f,
    0.842700779f, 0.888388216f, 0.92290014f, 0.948170066f, 0.966105163f, 0.978443742f, 0.986671686f, 0.99199003f,
    0.995322287f, 0.997345984f, 0.998537302f, 0.999217033f, 0.999593019f, 0.999794602f, 0.999899387f, 0.999952137f,
    0.999977887f, 0.999990106f, 0.999995708f, 0.999998212f, 0.999999285f, 0.999999702f, 0.999999881f, 0.99999994f,
};
static const float gs_erf_c1[32] = {
    0.141047388f, 0.138860658f, 0.132501766f, 0.122544095f, 0.109847814f, 0.0954374373f, 0.0803663805f, 0.0655931309f,
    0.0518884398f, 0.0397842489f, 0.0295651425f, 0.0212949738f, 0.0148662888f, 0.0100590335f, 0.00659687538f, 0.00419322867f,
    0.00258337311f, 0.0015426022f, 0.000892789452f, 0.000500809343f, 0.000272285193f, 0.000143484125f, 7.32844637e-05f, 3.62784085e-05f,
    1.74065517e-05f, 8.09478752e-06f, 3.6486008e-06f, 1.59395267e-06f, 6.74920614e-07f, 2.76986157e-07f, 1.10177169e-07f, 4.24769446e-08f,
};
static const float gs_erf_c2[32] = {
    1.57936952e-08f, -0.00216964912f, -0.00414060848f, -0.00574417459f, -0.00686541526f, -0.00745599438f, -0.00753431767f, -0.00717424322f,
    -0.00648607034f, -0.00559468847f, -0.00461958768f, -0.00366010657f, -0.00278745568f, -0.0020432598f, -0.00144307688f, -0.000982791651f,
    -0.000645842229f, -0.000409750035f, -0.000251092337f, -0.000148673163f, -8.50852011e-05f, -4.70777049e-05f, -2.51893762e-05f, -1.30361086e-05f,
    -6.52654489e-06f, -3.16148021e-06f, -1.48193283e-06f, -6.72279327e-07f, -2.95189523e-07f, -1.25465348e-07f, -5.1624454e-08f, -2.05650714e-08f,
};
static const float gs_erf_c3[32] = {
    -0.000734685047f, -0.000700836303f, -0.000604152621f, -0.00045908388f, -0.000286378025f, -0.000108973793f, 5.21870716e-05f, 0.000181464988f,
    0.000270316232f, 0.000317412923f, 0.000327366142f, 0.000308614486f, 0.000271116645f, 0.000224379459f, 0.000176134388f, 0.000131737412f,
    9.41813923e-05f, 6.45103137e-05f, 4.24102982e-05f, 2.67972428e-05f, 1.62914912e-05f, 9.53823474e-06f, 5.38179802e-06f, 2.92820869e-06f,
    1.53713984e-06f, 7.78843116e-07f, 3.81042867e-07f, 1.80063196e-07f, 8.22101569e-08f, 3.62730184e-08f, 1.54700022e-08f, 6.37874287e-09f,
};
static const float gs_erf_c4[32] = {
    1.08458103e-07f, 1.71579577e-05f, 3.15798861e-05f, 4.13272137e-05f, 4.53110188e-05f, 4.35514448e-05f, 3.70583912e-05f, 2.75005223e-05f,
    1.67742091e-05f, 6.59564284e-06f, -1.78790253e-06f, -7.72249223e-06f, -1.11161062e-05f, -1.22985302e-05f, -1.18352264e-05f, -1.03514649e-05f,
    -8.40297071e-06f, -6.40586313e-06f, -4.61972968e-06f, -3.16723003e-06f, -2.07144035e-06f, -1.29569958e-06f, -7.76640093e-07f, -4.46765114e-07f,
    -2.46950663e-07f, -1.31293234e-07f, -6.71940796e-08f, -3.3126291e-08f, -1.57405218e-08f, -7.21261539e-09f, -3.18826454e-09f, -1.36019473e-09f,
};
static const float gs_erf_c5[32] = {
    3.37114193e-06f, 2.85824831e-06f, 1.94059089e-06f, 8.05417642e-07f, -3.29511693e-07f, -1.2688663e-06f, -1.88152308e-06f, -2.12072337e-06f,
    -2.02010438e-06f, -1.67075314e-06f, -1.18912646e-06f, -6.86331532e-07f, -2.46457631e-07f, 8.28592093e-08f, 2.8875607e-07f, 3.84197506e-07f,
    3.96361457e-07f, 3.5611211e-07f, 2.90678855e-07f, 2.20024475e-07f, 1.5624623e-07f, 1.04858501e-07f, 6.68339837e-08f, 4.05992608e-08f,
    2.35666686e-08f, 1.3098056e-08f, 6.9811632e-09f, 3.57277696e-09f, 1.75746884e-09f, 8.31712865e-10f, 3.78858028e-10f, 1.66263781e-10f,
};

GS_INLINE __m512 gs_erf512(__m512 x) {
    const __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
    // erf(3.99) rounds to 1. Operand order keeps NaN: min returns its second operand then.
    __m512 a = _mm512_min_ps(_mm512_set1_ps(3.99f), _mm512_abs_ps(x));
    __m512 scaled = _mm512_mul_ps(a, _mm512_set1_ps(8.0f));
    __m512 k = _mm512_roundscale_ps(scaled, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 t = _mm512_sub_ps(scaled, k);  // exact (Sterbenz: k ≤ scaled < k + 1)
    __m512i i = _mm512_cvttps_epi32(k);   // permutex2var reads its low 5 bits: lanes 0…31 of two tables
#define GS_ERF_COEFFICIENT(c) _mm512_permutex2var_ps(_mm512_loadu_ps(c), i, _mm512_loadu_ps((c) + 16))
    __m512 p = GS_ERF_COEFFICIENT(gs_erf_c5);
    p = _mm512_fmadd_ps(p, t, GS_ERF_COEFFICIENT(gs_erf_c4));
    p = _mm512_fmadd_ps(p, t, GS_ERF_COEFFICIENT(gs_erf_c3));
    p = _mm512_fmadd_ps(p, t, GS_ERF_COEFFICIENT(gs_erf_c2));
    p = _mm512_fmadd_ps(p, t, GS_ERF_COEFFICIENT(gs_erf_c1));
    p = _mm512_fmadd_ps(p, t, GS_ERF_COEFFICIENT(gs_erf_c0));
#undef GS_ERF_COEFFICIENT
    return _mm512_or_ps(p, sign);
}

/// Exact GELU, 0.5·x·(1 + erf(x/√2)).
GS_INLINE __m512 gs_gelu512(__m512 v) {
    return _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)),
                         _mm512_add_ps(_mm512_set1_ps(1.0f), gs_erf512(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752440f)))));
}

/// Finishes one row of a 32-column GEMM micro-tile: adds the bias (and, with GS_ACC, what `out`
/// already holds), applies GELU with GS_GELU, and stores the lanes of `m0`/`m1`. Shared by the
/// fp32 and bf16 kernels so their epilogues cannot drift apart.
GS_INLINE void gs_finish_row(float *out, __m512 v0, __m512 v1, __m512 bias0, __m512 bias1,
                             __mmask16 m0, __mmask16 m1, int accumulate, int gelu) {
    v0 = _mm512_add_ps(v0, bias0);
    v1 = _mm512_add_ps(v1, bias1);
    if (accumulate) {
        v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, out));
        v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, out + 16));
    }
    if (gelu) {
        v0 = gs_gelu512(v0);
        v1 = gs_gelu512(v1);
    }
    _mm512_mask_storeu_ps(out, m0, v0);
    _mm512_mask_storeu_ps(out + 16, m1, v1);
}

#endif
