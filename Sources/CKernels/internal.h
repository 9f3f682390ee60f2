#ifndef GEOSAM2_CKERNELS_INTERNAL_H
#define GEOSAM2_CKERNELS_INTERNAL_H

#include <immintrin.h>
#include <math.h>

// Every function that uses AVX-512 intrinsics carries this attribute: the package is built for
// the baseline x86-64 target, and the Swift side only calls in after `gs_has_avx512()`.
#define GS_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define GS_INLINE static inline __attribute__((always_inline)) GS_TARGET

/// Mask of the first `n` lanes (n in 0...16).
GS_INLINE __mmask16 gs_lanes(long n) {
    return n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n < 0 ? 0 : n)) - 1u);
}

/// exp(x) with the Cephes single-precision polynomial (≈1 ulp on the reduced range), scaled by
/// 2ⁿ with `scalef`. Inputs below −87.3 give ≈1e−38 rather than 0, which is harmless where it
/// is used (softmax weights relative to the row maximum, erf tails).
GS_INLINE __m512 gs_exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3f)), _mm512_set1_ps(88.7f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    __m512 r2 = _mm512_mul_ps(r, r);
    __m512 y = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(y, n);
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e−7), the formula PyTorch's own
/// vectorised CPU `erf` (and so its exact-GELU kernel) uses.
GS_INLINE __m512 gs_erf512(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
    __m512 ax = _mm512_abs_ps(x);
    // t = 1/(1 + p·|x|): the 14-bit reciprocal estimate and one Newton step (≈ 2⁻²⁷ relative),
    // cheaper than a division; the approximation itself is good to 1.5e-7.
    __m512 den = _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), ax, one);
    __m512 t = _mm512_rcp14_ps(den);
    t = _mm512_mul_ps(t, _mm512_fnmadd_ps(den, t, _mm512_set1_ps(2.0f)));
    __m512 r = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421413741f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284496736f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254829592f));
    __m512 e = gs_exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(x, x)));
    __m512 y = _mm512_fnmadd_ps(_mm512_mul_ps(e, t), r, one);
    return _mm512_or_ps(y, sign);
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
