#ifndef GEOSAM2_CKERNELS_INTERNAL_AVX2_H
#define GEOSAM2_CKERNELS_INTERNAL_AVX2_H

#include "internal.h"

// The AVX2/FMA building blocks of the kernels for CPUs without AVX-512 (elementwise_avx2.c,
// gemm_avx2.c, attention_avx2.c). exp, erf and GELU are the AVX-512 functions of internal.h on
// eight lanes, operation for operation, so every kernel built on them can give the AVX-512 bits.

#define GS_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define GS_INLINE_AVX2 static inline __attribute__((always_inline)) GS_TARGET_AVX2

/// Mask of the first `n` lanes (n clamped to 0...8), for maskload/maskstore and blends.
GS_INLINE_AVX2 __m256i gs_lanes8(long n) {
    int lanes = n < 0 ? 0 : (n > 8 ? 8 : (int)n);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// Lanes `c…c+7` of a row of `count`, zero past its end: a plain load where all eight are in the
/// row, a masked one only at the tail (masked stores are microcoded and slow on Zen 1 and 2).
GS_INLINE_AVX2 __m256 gs_load8(const float *row, long c, long count) {
    return c + 8 <= count ? _mm256_loadu_ps(row + c) : _mm256_maskload_ps(row + c, gs_lanes8(count - c));
}

/// Stores the lanes of `v` that fall inside a row of `count`.
GS_INLINE_AVX2 void gs_store8(float *row, long c, long count, __m256 v) {
    if (c + 8 <= count) _mm256_storeu_ps(row + c, v);
    else _mm256_maskstore_ps(row + c, gs_lanes8(count - c), v);
}

GS_INLINE_AVX2 float gs_sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

GS_INLINE_AVX2 float gs_max8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// `gs_exp512` on eight lanes. AVX2 has no `scalef`: 2ⁿ is applied as 2^⌊n/2⌋ · 2^(n−⌊n/2⌋), two
/// exact powers of two in range for every n of the clamped input (−126…128), so the product is
/// rounded once, as `scalef` rounds it.
GS_INLINE_AVX2 __m256 gs_exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(GS_EXP_LOWEST)), _mm256_set1_ps(GS_EXP_HIGHEST));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(GS_LOG2E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(GS_LN2_HIGH), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(GS_LN2_LOW), r);
    __m256 p = _mm256_set1_ps(GS_EXP_P5);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(GS_EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(GS_EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(GS_EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(GS_EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(GS_EXP_P0));
    __m256 r2 = _mm256_mul_ps(r, r);
    __m256 y = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_cvtps_epi32(n);
    __m256i half = _mm256_srai_epi32(e, 1);
    __m256i rest = _mm256_sub_epi32(e, half);
    __m256 scale1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
    __m256 scale2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, _mm256_set1_epi32(127)), 23));
    return _mm256_mul_ps(_mm256_mul_ps(y, scale1), scale2);
}

/// gs_erf_c0…c5 interleaved: row i holds the six coefficients of interval i (and two zeros), so
/// that one lane's coefficients come in two 16-byte loads. Copied from those tables at load time
/// (elementwise_avx2.c), so the values are theirs by construction.
extern float gs_erf_rows[32][8];

/// `gs_erf512` on eight lanes: the same table of quintics, the same operations. AVX2 has no
/// two-table permute: each lane's six coefficients are loaded from its row of `gs_erf_rows` (the
/// high half of a vector from lane l + 4's) and transposed in registers, 20 shuffles where four
/// permutes and three blends per coefficient took 42 (GELU 0.71-0.74x the time on AMD EPYC
/// family 25 model 1; gathers were 1.3-1.8x slower there, and are slow on Zen 1/2 and on Intel
/// cores with the Gather Data Sampling mitigation).
GS_INLINE_AVX2 __m256 gs_erf256(__m256 x) {
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    const __m256 sign = _mm256_and_ps(x, signBit);
    // Operand order keeps NaN: min returns its second operand then.
    __m256 a = _mm256_min_ps(_mm256_set1_ps(3.99f), _mm256_andnot_ps(signBit, x));
    __m256 scaled = _mm256_mul_ps(a, _mm256_set1_ps(8.0f));
    __m256 k = _mm256_round_ps(scaled, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256 t = _mm256_sub_ps(scaled, k);  // exact (Sterbenz: k ≤ scaled < k + 1)
    // NaN gives 0x80000000: row 0 (as the AVX-512 permute reads the low five bits), t stays NaN.
    __m256i rows = _mm256_and_si256(_mm256_cvttps_epi32(k), _mm256_set1_epi32(31));
    int row[8] __attribute__((aligned(32)));
    _mm256_store_si256((__m256i *)row, rows);
    // Lanes l and l + 4 of the first four coefficients, then of the last two (and the zeros).
    __m256 r0 = _mm256_loadu2_m128(gs_erf_rows[row[4]], gs_erf_rows[row[0]]);
    __m256 r1 = _mm256_loadu2_m128(gs_erf_rows[row[5]], gs_erf_rows[row[1]]);
    __m256 r2 = _mm256_loadu2_m128(gs_erf_rows[row[6]], gs_erf_rows[row[2]]);
    __m256 r3 = _mm256_loadu2_m128(gs_erf_rows[row[7]], gs_erf_rows[row[3]]);
    __m256 s0 = _mm256_loadu2_m128(gs_erf_rows[row[4]] + 4, gs_erf_rows[row[0]] + 4);
    __m256 s1 = _mm256_loadu2_m128(gs_erf_rows[row[5]] + 4, gs_erf_rows[row[1]] + 4);
    __m256 s2 = _mm256_loadu2_m128(gs_erf_rows[row[6]] + 4, gs_erf_rows[row[2]] + 4);
    __m256 s3 = _mm256_loadu2_m128(gs_erf_rows[row[7]] + 4, gs_erf_rows[row[3]] + 4);
    // 4×4 transposes within each 128-bit half.
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 u0 = _mm256_unpacklo_ps(s0, s1), u1 = _mm256_unpacklo_ps(s2, s3);
    __m256 p = _mm256_shuffle_ps(u0, u1, 0xEE);                                  // c5
    p = _mm256_fmadd_ps(p, t, _mm256_shuffle_ps(u0, u1, 0x44));                  // c4
    p = _mm256_fmadd_ps(p, t, _mm256_shuffle_ps(t1, t3, 0xEE));                  // c3
    p = _mm256_fmadd_ps(p, t, _mm256_shuffle_ps(t1, t3, 0x44));                  // c2
    p = _mm256_fmadd_ps(p, t, _mm256_shuffle_ps(t0, t2, 0xEE));                  // c1
    p = _mm256_fmadd_ps(p, t, _mm256_shuffle_ps(t0, t2, 0x44));                  // c0
    return _mm256_or_ps(p, sign);
}

GS_INLINE_AVX2 __m256 gs_gelu256(__m256 v) {
    return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), gs_erf256(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752440f)))));
}

/// `gs_finish_row` for 16 columns, `width` (1…16) of them real: + bias, + the output when
/// accumulating, GELU, and a store of the real lanes.
GS_INLINE_AVX2 void gs_finish_row16(float *out, __m256 v0, __m256 v1, __m256 bias0, __m256 bias1, long width, int accumulate,
                                    int gelu) {
    v0 = _mm256_add_ps(v0, bias0);
    v1 = _mm256_add_ps(v1, bias1);
    if (accumulate) {
        v0 = _mm256_add_ps(v0, gs_load8(out, 0, width));
        v1 = _mm256_add_ps(v1, gs_load8(out, 8, width));
    }
    if (gelu) {
        v0 = gs_gelu256(v0);
        v1 = gs_gelu256(v1);
    }
    gs_store8(out, 0, width, v0);
    if (width > 8) gs_store8(out, 8, width, v1);
}

/// The step of a fixed-point row whose largest magnitude is `largest`, rounded to ±`limit`
/// steps, and its inverse: 0 and 0 for a row of zeros or one so small that limit/largest
/// overflows (below 2⁻¹¹⁴ or so: its integers are all 0, an error below that magnitude); NaN and 0
/// for a row with a NaN or infinity (`largest` NaN or ∞), so that the products of the row are NaN.
static inline void gs_i16_step(float largest, float limit, float *step, float *inverse) {
    if (!isfinite(largest)) {
        *step = NAN;
        *inverse = 0;
        return;
    }
    float i = largest > 0 ? limit / largest : 0;
    *step = isfinite(i) ? largest / limit : 0;
    *inverse = isfinite(i) ? i : 0;
}

/// The online softmax's first step for one vector of 8 queries against a key block: the running
/// max over the block's `kbn` scores (`st`, rows GS_ATTENTION_QB apart) and the previous max at
/// `ms`; `*corr` gets the factor of the partial output, exp(old max − new max) (on the first
/// block exp(−∞ − m): the partial output is zero, so any finite factor works).
GS_INLINE_AVX2 __m256 gs_attention_block_max(const float *st, long kbn, const float *ms, __m256 *corr) {
    __m256 mOld = _mm256_loadu_ps(ms);
    __m256 mx = mOld;
    for (long j = 0; j < kbn; j++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(st + j * GS_ATTENTION_QB));
    *corr = gs_exp256(_mm256_sub_ps(mOld, mx));
    return mx;
}

#endif
