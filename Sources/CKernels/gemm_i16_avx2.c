#include "CKernels.h"
#include "internal_avx2.h"

#include <stdint.h>

// The int16 encoder's GEMM (`--precision int16`, the default on CPUs with AVX2 and no AVX-512;
// it runs on any CPU with AVX2): 16-bit fixed-point operands and exact int32 sums. `vpmaddwd` multiplies
// 16 pairs of int16 and adds each pair into an int32 lane: 16 products an instruction where an
// fp32 FMA does 8, and these CPUs issue two of each a cycle (the micro-kernel in L1 runs 1.5×
// the fp32 one's rate on AMD EPYC family 25 model 1; the `vpaddd` of every product shares the
// vector pipes).
//
// Scales: each output feature's weights are quantised to ±GS_I16_WEIGHT_MAX against their largest
// magnitude (per column of the product), each row of x to ±GS_I16_INPUT_MAX against its own, at
// every call. Both are round-to-nearest, so an operand's error is at most half a step: 1/8190 of
// its row's (or column's) largest value for x, 1/4094 for the weights, where bf16 rounds each
// element to 8 significant bits (1/512 of itself). The sums are exact: a k block of GS_GEMM_KC
// products is at most 256 · 4095 · 2047 < 2³¹ in magnitude, then converted to fp32 (rounded once),
// scaled by the row's and the column's steps and added up block by block as in gemm_avx2.c.
//
// Layout: the weights of each 16 output features (half a GS_PANEL) come k-pair by k-pair, 16
// features × 2 consecutive k (one 64-byte line per pair), so a k block of one half is 8 KB of
// contiguous memory and stays in L1; a 6-row slice of x is packed the same way, [pair][row][2],
// so that one 32-bit broadcast gives a row's pair.

enum { MR = 6, KC = GS_GEMM_KC, MC = 192, HALF = GS_PANEL / 2, PAIR = 2 * HALF };

/// The largest quantised magnitudes of x and of the weights (see the bound on a k block's sum).
enum { GS_I16_INPUT_MAX = 4095, GS_I16_WEIGHT_MAX = 2047 };
_Static_assert((long)KC * GS_I16_INPUT_MAX * GS_I16_WEIGHT_MAX < 2147483648L, "a k block's sum must fit int32");

size_t gs_packed_i16_count(long n, long k) {
    long halves = (n + HALF - 1) / HALF;
    return (size_t)halves * (size_t)((k + 1) / 2) * PAIR;
}

void gs_pack_weight_i16(const float *w, long ldw, long n, long k, int16_t *packed, float *scales) {
    long halves = (n + HALF - 1) / HALF, pairs = (k + 1) / 2;
    for (long h = 0; h < halves; h++) {
        int16_t *dst = packed + h * pairs * PAIR;
        for (long j = 0; j < HALF; j++) {
            long row = h * HALF + j;
            float inverse = 0;
            if (row < n) {
                float largest = 0;
                int nonFinite = 0;
                for (long t = 0; t < k; t++) {
                    largest = fmaxf(largest, fabsf(w[row * ldw + t]));
                    nonFinite |= !isfinite(w[row * ldw + t]);
                }
                gs_i16_step(nonFinite ? NAN : largest, GS_I16_WEIGHT_MAX, &scales[row], &inverse);
            }
            for (long t = 0; t < 2 * pairs; t++) {
                float q = row < n && t < k ? nearbyintf(w[row * ldw + t] * inverse) : 0;
                q = fminf(fmaxf(q, -GS_I16_WEIGHT_MAX), GS_I16_WEIGHT_MAX);
                dst[(t / 2) * PAIR + j * 2 + t % 2] = (int16_t)q;
            }
        }
    }
}

/// The step of each of `rows` rows of x (`scale[i]`, largest magnitude / GS_I16_INPUT_MAX) and
/// its inverse (see gs_i16_step: a row with a NaN or an infinity gets a NaN step, so its outputs
/// are NaN as fp32's would be).
GS_TARGET_AVX2 static void row_scales(const float *x, long xs, long rows, long k, float *scale, float *inverse) {
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    for (long i = 0; i < rows; i++) {
        const float *row = x + i * xs;
        // max_ps returns its second operand when either is NaN: with the running max second, a
        // NaN would be dropped, so non-finite values are flagged on their own.
        __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
        const __m256 infinity = _mm256_set1_ps(INFINITY);
        long t = 0;
        for (; t + 8 <= k; t += 8) {
            __m256 a = _mm256_and_ps(_mm256_loadu_ps(row + t), magnitude);
            m = _mm256_max_ps(m, a);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, infinity, _CMP_NLT_UQ));  // NaN or ∞
        }
        float largest = gs_max8(m);
        int nonFinite = _mm256_movemask_ps(bad) != 0;
        for (; t < k; t++) {
            largest = fmaxf(largest, fabsf(row[t]));
            nonFinite |= !isfinite(row[t]);
        }
        gs_i16_step(nonFinite ? NAN : largest, GS_I16_INPUT_MAX, &scale[i], &inverse[i]);
    }
}

/// Quantises columns [0, kc) of up to MR rows of x into one slice, [pair][MR] words of two int16
/// (zero past `rows` and, for an odd kc, in the last pair's second half).
GS_TARGET_AVX2 static void pack_slice(const float *x, long xs, long rows, long kc, const float *inverse, int32_t *out) {
    long pairs = (kc + 1) / 2;
    for (int i = 0; i < MR; i++) {
        if (i >= rows) {
            for (long p = 0; p < pairs; p++) out[p * MR + i] = 0;
            continue;
        }
        const float *row = x + i * xs;
        const __m256 f = _mm256_set1_ps(inverse[i]);
        long t = 0;
        // 16 values: two vectors rounded to int32, packed to int16 (per 128-bit lane, put back in
        // order by the permute), then stored pair by pair a slice row apart.
        for (; t + 16 <= kc; t += 16) {
            __m256i lo = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + t), f));
            __m256i hi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + t + 8), f));
            __m256i q = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
            int32_t lanes[8] __attribute__((aligned(32)));
            _mm256_store_si256((__m256i *)lanes, q);
            _Pragma("clang loop unroll(full)") for (int p = 0; p < 8; p++) out[(t / 2 + p) * MR + i] = lanes[p];
        }
        for (; t < kc; t += 2) {
            int16_t a = (int16_t)lrintf(row[t] * inverse[i]);
            int16_t b = t + 1 < kc ? (int16_t)lrintf(row[t + 1] * inverse[i]) : 0;
            out[(t / 2) * MR + i] = (int32_t)((uint32_t)(uint16_t)a | ((uint32_t)(uint16_t)b << 16));
        }
    }
}

/// The 6×16 micro-kernel on one k block of a half: exact int32 sums over `pairs` k pairs, then
/// y = sum · (row step · column step) (+ bias) (+ y) (then GELU) for `mr` rows and `width` columns.
GS_INLINE_AVX2 void micro_i16(const int32_t *a32, const int16_t *b, long pairs, float *y, long ldy, long mr, long width,
                              const float *rowScale, __m256 colScale0, __m256 colScale1, const float *bias, int mode) {
    __m256i c[MR][2];
    _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm256_setzero_si256();
    for (long t = 0; t < pairs; t++) {
        __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + t * PAIR));  // Swift arrays are 16-byte aligned
        __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + t * PAIR + HALF));
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {
            __m256i x = _mm256_set1_epi32(a32[t * MR + i]);
            c[i][0] = _mm256_add_epi32(c[i][0], _mm256_madd_epi16(x, b0));
            c[i][1] = _mm256_add_epi32(c[i][1], _mm256_madd_epi16(x, b1));
        }
    }
    __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
    if (bias) {
        bias0 = gs_load8(bias, 0, width);
        bias1 = gs_load8(bias, 8, width);
    }
    for (long i = 0; i < mr; i++) {
        __m256 s = _mm256_set1_ps(rowScale[i]);
        __m256 v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(c[i][0]), _mm256_mul_ps(s, colScale0));
        __m256 v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(c[i][1]), _mm256_mul_ps(s, colScale1));
        gs_finish_row16(y + i * ldy, v0, v1, bias0, bias1, width, mode & GS_ACC, mode & GS_GELU);
    }
}

GS_TARGET_AVX2 void gs_gemm_i16_avx2(const float *x, long xs, const int16_t *packed, const float *scales, const float *bias,
                                     float *y, long ldy, long m, long n, long k, int flags) {
    if (m <= 0 || n <= 0) return;
    if (k == 0) {
        gs_gemm_empty_sum(bias, y, ldy, m, n, 0, (n + GS_PANEL - 1) / GS_PANEL, flags & GS_ACC);
        return;
    }
    // The row block's quantised slices ([slice][pair][MR][2]) and its rows' steps, per thread.
    static _Thread_local int32_t abuf[MC * KC / 2] __attribute__((aligned(64)));
    static _Thread_local float rowScale[MC], rowInverse[MC];
    const long halves = (n + HALF - 1) / HALF, pairsTotal = (k + 1) / 2;
    for (long m0 = 0; m0 < m; m0 += MC) {
        long mc = m - m0 < MC ? m - m0 : MC;
        row_scales(x + m0 * xs, xs, mc, k, rowScale, rowInverse);
        for (long k0 = 0; k0 < k; k0 += KC) {
            long kc = k - k0 < KC ? k - k0 : KC;
            long pairs = (kc + 1) / 2;
            // Bias on the first k block, the activation on the last (as gemm_avx2.c).
            int mode = (k0 > 0 || (flags & GS_ACC)) ? GS_ACC : 0;
            if (k0 + KC >= k) mode |= flags & GS_GELU;
            for (long s = 0; s < mc; s += MR) {
                long rows = mc - s < MR ? mc - s : MR;
                pack_slice(x + (m0 + s) * xs + k0, xs, rows, kc, rowInverse + s, abuf + s * pairs);
            }
            for (long h = 0; h < halves; h++) {
                const int16_t *b = packed + h * pairsTotal * PAIR + (k0 / 2) * PAIR;
                long c0 = h * HALF;
                long width = n - c0 < HALF ? n - c0 : HALF;
                __m256 cs0 = gs_load8(scales + c0, 0, width), cs1 = gs_load8(scales + c0, 8, width);
                const float *pb = bias && k0 == 0 ? bias + c0 : NULL;
                for (long s = 0; s < mc; s += MR) {
                    long mr = mc - s < MR ? mc - s : MR;
                    micro_i16(abuf + s * pairs, b, pairs, y + (m0 + s) * ldy + c0, ldy, mr, width, rowScale + s, cs0, cs1,
                              pb, mode);
                }
            }
        }
    }
}
