#include <string.h>

#include "CKernels.h"
#include "internal_avx2.h"

// The elementwise kernels for CPUs with AVX2 and FMA but no AVX-512 (AMD before Zen 4, Intel's
// client cores since Alder Lake): without them those CPUs ran GELU through libm's scalar erff and
// softmax through scalar expf, a fifth of an encode and a third of a decode on AMD EPYC family 23.
// exp and erf are the AVX-512 kernels' functions on eight lanes, operation for operation, and
// layer norm and softmax sum in the AVX-512 kernels' order, so all four give the same bits. The
// feature tiles' dequantisation is the same multiply and add per element.

int gs_has_avx2_fma(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}

float gs_erf_rows[32][8] __attribute__((aligned(32)));

/// Fills `gs_erf_rows` from the coefficient tables before any kernel can run (at load time).
__attribute__((constructor)) static void gs_fill_erf_rows(void) {
    const float *coefficients[6] = {gs_erf_c0, gs_erf_c1, gs_erf_c2, gs_erf_c3, gs_erf_c4, gs_erf_c5};
    for (int i = 0; i < 32; i++) {
        for (int c = 0; c < 8; c++) gs_erf_rows[i][c] = c < 6 ? coefficients[c][i] : 0.0f;
    }
}

GS_TARGET_AVX2 void gs_gelu_avx2(float *x, long count) {
    for (long i = 0; i < count; i += 8) gs_store8(x, i, count, gs_gelu256(gs_load8(x, i, count)));
}

GS_TARGET_AVX2 void gs_exp_avx2(float *x, long count) {
    for (long i = 0; i < count; i += 8) gs_store8(x, i, count, gs_exp256(gs_load8(x, i, count)));
}

GS_TARGET_AVX2 void gs_layer_norm_avx2(float *x, long rows, long channels, const float *weight, const float *bias,
                                       float eps) {
    gs_layer_norm_stats_avx2(x, rows, channels, weight, bias, eps, NULL, NULL);
}

GS_TARGET_AVX2 void gs_layer_norm_stats_avx2(float *x, long rows, long channels, const float *weight, const float *bias,
                                             float eps, float *means, float *inverses) {
    for (long r = 0; r < rows; r++) {
        float *row = x + r * channels;
        // Two passes as PyTorch does: the mean, then the mean of centred squares. Each sum runs
        // as gs_layer_norm's 16 lanes, in two vectors (channels c…c+7 and c+8…c+15 of each
        // step), and is reduced in the tree _mm512_reduce_add_ps compiles to (upper half onto
        // lower, 8 → 4 → 2 → 1): the same bits as the AVX-512 kernel. Lanes past the row load as
        // zero, and their centred values are masked back to zero.
        __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();
        for (long c = 0; c < channels; c += 16) {
            low = _mm256_add_ps(low, gs_load8(row, c, channels));
            high = _mm256_add_ps(high, gs_load8(row, c + 8, channels));
        }
        float mean = gs_sum8(_mm256_add_ps(low, high)) / (float)channels;
        __m256 mv = _mm256_set1_ps(mean);
        low = high = _mm256_setzero_ps();
        for (long c = 0; c < channels; c += 16) {
            __m256 d0 = _mm256_and_ps(_mm256_sub_ps(gs_load8(row, c, channels), mv), _mm256_castsi256_ps(gs_lanes8(channels - c)));
            __m256 d1 = _mm256_and_ps(_mm256_sub_ps(gs_load8(row, c + 8, channels), mv),
                                      _mm256_castsi256_ps(gs_lanes8(channels - c - 8)));
            low = _mm256_fmadd_ps(d0, d0, low);
            high = _mm256_fmadd_ps(d1, d1, high);
        }
        float variance = gs_sum8(_mm256_add_ps(low, high)) / (float)channels;
        float inverse = 1.0f / sqrtf(variance + eps);
        if (means) means[r] = mean;
        if (inverses) inverses[r] = inverse;
        __m256 inv = _mm256_set1_ps(inverse);
        for (long c = 0; c < channels; c += 8) {
            __m256 d = _mm256_mul_ps(_mm256_sub_ps(gs_load8(row, c, channels), mv), inv);
            gs_store8(row, c, channels, _mm256_fmadd_ps(d, gs_load8(weight, c, channels), gs_load8(bias, c, channels)));
        }
    }
}

GS_TARGET_AVX2 void gs_softmax_rows_avx2(float *x, long rows, long columns, long ld) {
    const __m256 negativeInfinity = _mm256_set1_ps(-INFINITY);
    for (long r = 0; r < rows; r++) {
        float *row = x + r * ld;
        __m256 mx = negativeInfinity;
        for (long c = 0; c < columns; c += 8) {
            __m256 inRow = _mm256_castsi256_ps(gs_lanes8(columns - c));
            mx = _mm256_max_ps(mx, _mm256_blendv_ps(negativeInfinity, gs_load8(row, c, columns), inRow));
        }
        __m256 mv = _mm256_set1_ps(gs_max8(mx));
        // The sum as gs_softmax_rows's 16 lanes (two vectors), reduced in its tree: its bits.
        __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();
        for (long c = 0; c < columns; c += 16) {
            __m256 e0 = _mm256_and_ps(gs_exp256(_mm256_sub_ps(gs_load8(row, c, columns), mv)), _mm256_castsi256_ps(gs_lanes8(columns - c)));
            __m256 e1 = _mm256_and_ps(gs_exp256(_mm256_sub_ps(gs_load8(row, c + 8, columns), mv)),
                                      _mm256_castsi256_ps(gs_lanes8(columns - c - 8)));
            gs_store8(row, c, columns, e0);
            if (c + 8 < columns) gs_store8(row, c + 8, columns, e1);
            low = _mm256_add_ps(low, e0);
            high = _mm256_add_ps(high, e1);
        }
        __m256 inv = _mm256_set1_ps(1.0f / gs_sum8(_mm256_add_ps(low, high)));
        for (long c = 0; c < columns; c += 8) gs_store8(row, c, columns, _mm256_mul_ps(gs_load8(row, c, columns), inv));
    }
}

// MARK: Feature tiles

/// 8 codes of one channel at 8 pixels (the first n), as floats: (float)q · s + o, as
/// `dequantize16` of elementwise.c. A short tail goes through a zeroed copy: the codes' mapping
/// may end right after it, and AVX2 has no masked 16- or 8-bit loads.
GS_INLINE_AVX2 __m256 dequantize8(const int16_t *codes, const uint8_t *high, const uint8_t *low, long at, long n, __m256 s,
                                  __m256 o) {
    __m256i q;
    if (codes) {
        int16_t tail[8] = {0};
        const int16_t *src = codes + at;
        if (n < 8) {
            memcpy(tail, src, (size_t)n * sizeof(int16_t));
            src = tail;
        }
        q = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)src));
    } else {
        uint8_t tailHigh[8] = {0}, tailLow[8] = {0};
        const uint8_t *h = high + at, *l = low + at;
        if (n < 8) {
            memcpy(tailHigh, h, (size_t)n);
            memcpy(tailLow, l, (size_t)n);
            h = tailHigh;
            l = tailLow;
        }
        __m256i hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)h));
        __m256i lo = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)l));
        q = _mm256_sub_epi32(_mm256_or_si256(_mm256_slli_epi32(hi, 8), lo), _mm256_set1_epi32(32768));
    }
    // Parity with the plain loop `Float(q) * scale + offset`: a multiply, then an add (no FMA).
    return _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(q), s), o);
}

/// In-register transpose of an 8×8 block: r[i] lane j ↔ r[j] lane i.
GS_INLINE_AVX2 void transpose8(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    __m256 u[8];
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    // u[4a + b] holds, in 128-bit lane k, rows 4a…4a+3 of column 4k + b.
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

GS_TARGET_AVX2 void gs_dequantize_transpose_avx2(const int16_t *codes, const uint8_t *high, const uint8_t *low, long channels,
                                                 long plane, long p_begin, long p_end, const float *scale,
                                                 const float *offset, float *out) {
    for (long p0 = p_begin; p0 < p_end; p0 += 8) {
        long n = p_end - p0 < 8 ? p_end - p0 : 8;
        for (long c0 = 0; c0 < channels; c0 += 8) {
            long cn = channels - c0 < 8 ? channels - c0 : 8;
            __m256 r[8];
            for (long i = 0; i < 8; i++) {
                long c = c0 + i;
                r[i] = i < cn ? dequantize8(codes, high, low, c * plane + p0, n, _mm256_set1_ps(scale[c]), _mm256_set1_ps(offset[c]))
                              : _mm256_setzero_ps();
            }
            transpose8(r);
            for (long j = 0; j < n; j++) gs_store8(out + (p0 + j) * channels, c0, channels, r[j]);
        }
    }
}
