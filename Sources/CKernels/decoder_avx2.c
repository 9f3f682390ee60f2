#include "CKernels.h"
#include "internal_avx2.h"

// The fast mask decoder's kernels (`FastDecoder`) for CPUs with AVX2 and FMA but no AVX-512: the
// column softmax of its re-associated attentions, layer norm with its statistics, and the
// epilogue of the upscaling's transposed convolutions. Each is the AVX-512 kernel's chain of
// operations per element; where that kernel reduces 16 lanes, the lanes are kept as two vectors
// (lanes 0…7 and 8…15) and reduced in the tree _mm512_reduce_add_ps compiles to, so the results
// are the AVX-512 kernels' bits.

GS_TARGET_AVX2 void gs_softmax_columns_avx2(float *x, long rows, long columns, long ld) {
    const __m256 negativeInfinity = _mm256_set1_ps(-INFINITY);
    for (long c = 0; c < columns; c += 8) {
        // A column softmax is lane-wise: eight columns at a time, the same operations as 16.
        __m256 inColumns = _mm256_castsi256_ps(gs_lanes8(columns - c));
        __m256 mx = negativeInfinity;
        for (long r = 0; r < rows; r++) mx = _mm256_max_ps(mx, _mm256_blendv_ps(negativeInfinity, gs_load8(x + r * ld, c, columns), inColumns));
        __m256 sum = _mm256_setzero_ps();
        for (long r = 0; r < rows; r++) {
            __m256 e = gs_exp256(_mm256_sub_ps(gs_load8(x + r * ld, c, columns), mx));
            gs_store8(x + r * ld, c, columns, e);
            sum = _mm256_add_ps(sum, e);
        }
        __m256 inv = _mm256_div_ps(_mm256_set1_ps(1.0f), sum);
        for (long r = 0; r < rows; r++) gs_store8(x + r * ld, c, columns, _mm256_mul_ps(gs_load8(x + r * ld, c, columns), inv));
    }
}

GS_TARGET_AVX2 void gs_softmax_row_groups_avx2(float *x, long groups, long group, long columns, long ld) {
    for (long g = 0; g < groups; g++) gs_softmax_columns_avx2(x + g * group * ld, group, columns, ld);
}

/// Lanes 0…7 and 8…15 of a 16-lane vector of `count` channels from `c`, zero past the end.
typedef struct { __m256 low, high; } gs_pair;

GS_INLINE_AVX2 gs_pair gs_load16(const float *row, long c, long count) {
    return (gs_pair){gs_load8(row, c, count), gs_load8(row, c + 8, count)};
}

/// `_mm512_reduce_add_ps` of a 16-lane vector kept as two halves.
GS_INLINE_AVX2 float gs_sum16(gs_pair v) { return gs_sum8(_mm256_add_ps(v.low, v.high)); }

/// Lanes of a 16-lane vector that are among the first `count` from `c` (all ones), as two halves.
GS_INLINE_AVX2 gs_pair gs_lanes16(long c, long count) {
    return (gs_pair){_mm256_castsi256_ps(gs_lanes8(count - c)), _mm256_castsi256_ps(gs_lanes8(count - c - 8))};
}

/// Finishes one output pixel of the transposed-convolution epilogue: `vectors` 16-lane vectors
/// of `oc` channels, as `convt_epilogue` in elementwise.c.
GS_INLINE_AVX2 void convt_pixel(const long vectors, gs_pair *v, long oc, const float *lnw, const float *lnb, float eps, int gelu,
                                float *out, const float *hyper, long masks, float *logits, long plane, long pixel) {
    if (lnw) {
        // LayerNorm2d over the channels of the pixel (biased variance, two passes).
        gs_pair acc = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (long u = 0; u < vectors; u++) {
            acc.low = _mm256_add_ps(acc.low, v[u].low);
            acc.high = _mm256_add_ps(acc.high, v[u].high);
        }
        __m256 mean = _mm256_set1_ps(gs_sum16(acc) / (float)oc);
        acc.low = acc.high = _mm256_setzero_ps();
        for (long u = 0; u < vectors; u++) {
            gs_pair in = gs_lanes16(16 * u, oc);
            __m256 c0 = _mm256_and_ps(_mm256_sub_ps(v[u].low, mean), in.low);
            __m256 c1 = _mm256_and_ps(_mm256_sub_ps(v[u].high, mean), in.high);
            acc.low = _mm256_fmadd_ps(c0, c0, acc.low);
            acc.high = _mm256_fmadd_ps(c1, c1, acc.high);
        }
        __m256 inv = _mm256_set1_ps(1.0f / sqrtf(gs_sum16(acc) / (float)oc + eps));
        for (long u = 0; u < vectors; u++) {
            gs_pair w = gs_load16(lnw, 16 * u, oc), b = gs_load16(lnb, 16 * u, oc);
            v[u].low = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(v[u].low, mean), inv), w.low, b.low);
            v[u].high = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_sub_ps(v[u].high, mean), inv), w.high, b.high);
        }
    }
    if (gelu)
        for (long u = 0; u < vectors; u++) {
            gs_pair in = gs_lanes16(16 * u, oc);
            v[u].low = _mm256_and_ps(gs_gelu256(v[u].low), in.low);
            v[u].high = _mm256_and_ps(gs_gelu256(v[u].high), in.high);
        }
    if (out)
        for (long u = 0; u < vectors; u++) {
            gs_store8(out + pixel * oc, 16 * u, oc, v[u].low);
            gs_store8(out + pixel * oc, 16 * u + 8, oc, v[u].high);
        }
    if (masks == 4) {
        // The AVX-512 kernel's reduction of the four dot products: unpack and add within 128-bit
        // lanes (two of them in each half), then fold the halves and the lanes.
        gs_pair a[4];
        for (long k = 0; k < 4; k++) {
            a[k].low = a[k].high = _mm256_setzero_ps();
            for (long u = 0; u < vectors; u++) {
                gs_pair h = gs_load16(hyper + k * oc, 16 * u, oc);
                a[k].low = _mm256_fmadd_ps(v[u].low, h.low, a[k].low);
                a[k].high = _mm256_fmadd_ps(v[u].high, h.high, a[k].high);
            }
        }
        __m256 q[2];
        for (int half = 0; half < 2; half++) {
            __m256 a0 = half ? a[0].high : a[0].low, a1 = half ? a[1].high : a[1].low;
            __m256 a2 = half ? a[2].high : a[2].low, a3 = half ? a[3].high : a[3].low;
            __m256 t0 = _mm256_add_ps(_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
            __m256 t1 = _mm256_add_ps(_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
            q[half] = _mm256_add_ps(_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t1))),
                                    _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t1))));
        }
        __m256 h8 = _mm256_add_ps(q[0], q[1]);
        __m128 r = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
        float sums[4];
        _mm_storeu_ps(sums, r);
        for (long k = 0; k < 4; k++) logits[k * plane + pixel] = sums[k];
    } else {
        for (long k = 0; k < masks; k++) {
            gs_pair acc = {_mm256_setzero_ps(), _mm256_setzero_ps()};
            for (long u = 0; u < vectors; u++) {
                gs_pair h = gs_load16(hyper + k * oc, 16 * u, oc);
                acc.low = _mm256_fmadd_ps(v[u].low, h.low, acc.low);
                acc.high = _mm256_fmadd_ps(v[u].high, h.high, acc.high);
            }
            logits[k * plane + pixel] = gs_sum16(acc);
        }
    }
}

GS_INLINE_AVX2 void convt_epilogue(const long vectors, const float *products, long rows, long w, long oc, const float *bias,
                                   const float *addend, const float *lnw, const float *lnb, float eps, int gelu, float *out,
                                   const float *hyper, long masks, float *logits, long plane) {
    const long ow = 2 * w;
    gs_pair v[8];
    for (long y = 0; y < rows; y++) {
        for (long x = 0; x < w; x++) {
            const float *s = products + (y * w + x) * 4 * oc;
            gs_epilogue_prefetch(addend, y, x, w, oc);
            for (long d = 0; d < 4; d++) {
                long pixel = (2 * y + d / 2) * ow + 2 * x + d % 2;
                const float *a = addend + pixel * oc;
                // Parity: conv bias first, then the high-res map (`dc(x) + feat`).
                for (long u = 0; u < vectors; u++) {
                    gs_pair p = gs_load16(s + d * oc, 16 * u, oc), b = gs_load16(bias, 16 * u, oc), f = gs_load16(a, 16 * u, oc);
                    v[u].low = _mm256_add_ps(_mm256_add_ps(p.low, b.low), f.low);
                    v[u].high = _mm256_add_ps(_mm256_add_ps(p.high, b.high), f.high);
                }
                convt_pixel(vectors, v, oc, lnw, lnb, eps, gelu, out, hyper, masks, logits, plane, pixel);
            }
        }
    }
}

GS_TARGET_AVX2 void gs_convt2x2_epilogue_avx2(const float *products, long rows, long w, long oc, const float *bias,
                                              const float *addend, const float *lnw, const float *lnb, float eps, int gelu,
                                              float *out, const float *hyper, long masks, float *logits, long plane) {
    // Constant channel counts let the per-pixel vectors live in registers.
    switch ((oc + 15) / 16) {
    case 2: convt_epilogue(2, products, rows, w, oc, bias, addend, lnw, lnb, eps, gelu, out, hyper, masks, logits, plane); break;
    case 4: convt_epilogue(4, products, rows, w, oc, bias, addend, lnw, lnb, eps, gelu, out, hyper, masks, logits, plane); break;
    default:
        if (oc <= 128)
            convt_epilogue((oc + 15) / 16, products, rows, w, oc, bias, addend, lnw, lnb, eps, gelu, out, hyper, masks, logits, plane);
    }
}
