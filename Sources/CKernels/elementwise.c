#include "CKernels.h"
#include "internal.h"

/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e−7), the formula PyTorch's own
/// vectorised CPU `erf` (and so its exact-GELU kernel) uses.
GS_INLINE __m512 gs_erf512(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 sign = _mm512_and_ps(x, _mm512_set1_ps(-0.0f));
    __m512 ax = _mm512_abs_ps(x);
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), ax, one));
    __m512 r = _mm512_fmadd_ps(_mm512_set1_ps(1.061405429f), t, _mm512_set1_ps(-1.453152027f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(1.421413741f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(-0.284496736f));
    r = _mm512_fmadd_ps(r, t, _mm512_set1_ps(0.254829592f));
    __m512 e = gs_exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(x, x)));
    __m512 y = _mm512_fnmadd_ps(_mm512_mul_ps(e, t), r, one);
    return _mm512_or_ps(y, sign);
}

GS_TARGET void gs_gelu(float *x, long count) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), alpha = _mm512_set1_ps(0.70710678118654752440f);
    for (long i = 0; i < count; i += 16) {
        __mmask16 m = gs_lanes(count - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 y = _mm512_mul_ps(_mm512_mul_ps(v, half), _mm512_add_ps(one, gs_erf512(_mm512_mul_ps(v, alpha))));
        _mm512_mask_storeu_ps(x + i, m, y);
    }
}

GS_TARGET void gs_exp(float *x, long count) {
    for (long i = 0; i < count; i += 16) {
        __mmask16 m = gs_lanes(count - i);
        _mm512_mask_storeu_ps(x + i, m, gs_exp512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

GS_TARGET void gs_layer_norm(float *x, long rows, long channels, const float *weight, const float *bias, float eps) {
    for (long r = 0; r < rows; r++) {
        float *row = x + r * channels;
        // Two passes as PyTorch does: the mean, then the mean of centred squares.
        __m512 acc = _mm512_setzero_ps();
        for (long c = 0; c < channels; c += 16) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps(gs_lanes(channels - c), row + c));
        float mean = _mm512_reduce_add_ps(acc) / (float)channels;
        __m512 mv = _mm512_set1_ps(mean);
        acc = _mm512_setzero_ps();
        for (long c = 0; c < channels; c += 16) {
            __mmask16 m = gs_lanes(channels - c);
            __m512 d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, row + c), mv);
            acc = _mm512_fmadd_ps(d, d, acc);
        }
        float variance = _mm512_reduce_add_ps(acc) / (float)channels;
        __m512 inv = _mm512_set1_ps(1.0f / sqrtf(variance + eps));
        for (long c = 0; c < channels; c += 16) {
            __mmask16 m = gs_lanes(channels - c);
            __m512 d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + c), mv), inv);
            __m512 y = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(m, weight + c), _mm512_maskz_loadu_ps(m, bias + c));
            _mm512_mask_storeu_ps(row + c, m, y);
        }
    }
}

GS_TARGET void gs_softmax_rows(float *x, long rows, long columns, long ld) {
    for (long r = 0; r < rows; r++) {
        float *row = x + r * ld;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (long c = 0; c < columns; c += 16)
            mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), gs_lanes(columns - c), row + c));
        __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        __m512 sum = _mm512_setzero_ps();
        for (long c = 0; c < columns; c += 16) {
            __mmask16 m = gs_lanes(columns - c);
            __m512 e = _mm512_maskz_mov_ps(m, gs_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + c), mv)));
            _mm512_mask_storeu_ps(row + c, m, e);
            sum = _mm512_add_ps(sum, e);
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        for (long c = 0; c < columns; c += 16) {
            __mmask16 m = gs_lanes(columns - c);
            _mm512_mask_storeu_ps(row + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, row + c), inv));
        }
    }
}
