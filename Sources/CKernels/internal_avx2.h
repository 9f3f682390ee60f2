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

/// Entry `i` (0…31) of a 32-float table, per lane: four in-register permutes (which read the low
/// three bits of `i`) and blends on bits 3 and 4, moved to the sign bit that `blendv` reads.
/// Gathers would be shorter, but they are slow on Zen 1/2 and on Intel cores with the Gather Data
/// Sampling mitigation.
GS_INLINE_AVX2 __m256 gs_lookup32(const float *table, __m256i i, __m256 bit3, __m256 bit4) {
    __m256 low = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(table), i),
                                  _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 8), i), bit3);
    __m256 high = _mm256_blendv_ps(_mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 16), i),
                                   _mm256_permutevar8x32_ps(_mm256_loadu_ps(table + 24), i), bit3);
    return _mm256_blendv_ps(low, high, bit4);
}

/// `gs_erf512` on eight lanes: the same table of quintics, the same operations.
GS_INLINE_AVX2 __m256 gs_erf256(__m256 x) {
    const __m256 signBit = _mm256_set1_ps(-0.0f);
    const __m256 sign = _mm256_and_ps(x, signBit);
    // Operand order keeps NaN: min returns its second operand then.
    __m256 a = _mm256_min_ps(_mm256_set1_ps(3.99f), _mm256_andnot_ps(signBit, x));
    __m256 scaled = _mm256_mul_ps(a, _mm256_set1_ps(8.0f));
    __m256 k = _mm256_round_ps(scaled, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m256 t = _mm256_sub_ps(scaled, k);  // exact (Sterbenz: k ≤ scaled < k + 1)
    __m256i i = _mm256_cvttps_epi32(k);   // NaN gives 0x80000000: entry 0, and t stays NaN
    __m256 bit3 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 28));
    __m256 bit4 = _mm256_castsi256_ps(_mm256_slli_epi32(i, 27));
    __m256 p = gs_lookup32(gs_erf_c5, i, bit3, bit4);
    p = _mm256_fmadd_ps(p, t, gs_lookup32(gs_erf_c4, i, bit3, bit4));
    p = _mm256_fmadd_ps(p, t, gs_lookup32(gs_erf_c3, i, bit3, bit4));
    p = _mm256_fmadd_ps(p, t, gs_lookup32(gs_erf_c2, i, bit3, bit4));
    p = _mm256_fmadd_ps(p, t, gs_lookup32(gs_erf_c1, i, bit3, bit4));
    p = _mm256_fmadd_ps(p, t, gs_lookup32(gs_erf_c0, i, bit3, bit4));
    return _mm256_or_ps(p, sign);
}

GS_INLINE_AVX2 __m256 gs_gelu256(__m256 v) {
    return _mm256_mul_ps(_mm256_mul_ps(v, _mm256_set1_ps(0.5f)),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), gs_erf256(_mm256_mul_ps(v, _mm256_set1_ps(0.70710678118654752440f)))));
}

#endif
