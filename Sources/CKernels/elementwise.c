#include <stddef.h>
#include <immintrin.h>
#include "CKernels.h"
#include "internal.h"

GS_TARGET void gs_gelu(float *x, long count) {
    for (long i = 0; i < count; i += 16) {
        __mmask16 m = gs_lanes(count - i);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        _mm512_mask_storeu_ps(x + i, m, gs_gelu512(v));
    }
}

GS_TARGET void gs_exp(float *x, long count) {
    for (long i = 0; i < count; i += 16) {
        __mmask16 m = gs_lanes(count - i);
        _mm512_mask_storeu_ps(x + i, m, gs_exp512(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

GS_TARGET void gs_layer_norm(float *x, long rows, long channels, const float *weight, const float *bias, float eps) {
    gs_layer_norm_stats(x, rows, channels, weight, bias, eps, NULL, NULL);
}

GS_TARGET void gs_layer_norm_stats(float *x, long rows, long channels, const float *weight, const float *bias, float eps,
                                   float *means, float *inverses) {
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
        float inverse = 1.0f / sqrtf(variance + eps);
        if (means) means[r] = mean;
        if (inverses) inverses[r] = inverse;
        __m512 inv = _mm512_set1_ps(inverse);
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

GS_TARGET void gs_softmax_columns(float *x, long rows, long columns, long ld) {
    for (long c = 0; c < columns; c += 16) {
        __mmask16 m = gs_lanes(columns - c);
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (long r = 0; r < rows; r++) mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, x + r * ld + c));
        __m512 sum = _mm512_setzero_ps();
        for (long r = 0; r < rows; r++) {
            __m512 e = gs_exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + r * ld + c), mx));
            _mm512_mask_storeu_ps(x + r * ld + c, m, e);
            sum = _mm512_add_ps(sum, e);
        }
        __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.0f), sum);
        for (long r = 0; r < rows; r++)
            _mm512_mask_storeu_ps(x + r * ld + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + r * ld + c), inv));
    }
}

GS_TARGET static int upsampling_start(upsampling *u, const float *logits, long h, long w, long oh, long ow) {
    if (gs_upsampling_allocate(u, h, w, oh, ow) != 0) return -1;
    for (long i = 0; i < h; i++) {
        const float *src = logits + i * w;
        float *dst = u->rows + i * ow;
        for (long x = 0; x < ow; x += 16) {
            __mmask16 m = gs_lanes(ow - x);
            __m512i a = _mm512_maskz_loadu_epi32(m, u->xi0 + x), b = _mm512_maskz_loadu_epi32(m, u->xi1 + x);
            __m512 va = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, a, src, 4);
            __m512 vb = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, b, src, 4);
            __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, u->xl0 + x), va),
                                     _mm512_mul_ps(_mm512_maskz_loadu_ps(m, u->xl1 + x), vb));
            _mm512_mask_storeu_ps(dst + x, m, v);
        }
    }
    return 0;
}

/// Output pixels x..x+15 of output row y (lanes outside `m` are 0).
GS_INLINE __m512 upsampling_values(const upsampling *u, long y, long x, __mmask16 m) {
    const float *r0 = u->rows + (long)u->yi0[y] * u->ow, *r1 = u->rows + (long)u->yi1[y] * u->ow;
    return _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(u->yl0[y]), _mm512_maskz_loadu_ps(m, r0 + x)),
                         _mm512_mul_ps(_mm512_set1_ps(u->yl1[y]), _mm512_maskz_loadu_ps(m, r1 + x)));
}

/// Which of output pixels x..x+15 of output row y are `> threshold`, among the lanes `m`.
GS_INLINE __mmask16 upsampling_above(const upsampling *u, long y, long x, __mmask16 m, float threshold) {
    // Parity: strict `>` against the mask threshold.
    return _mm512_mask_cmp_ps_mask(m, upsampling_values(u, y, x, m), _mm512_set1_ps(threshold), _CMP_GT_OQ);
}

GS_INLINE __mmask16 upsampling_positive(const upsampling *u, long y, long x, __mmask16 m) {
    return upsampling_above(u, y, x, m, 0.0f);
}

GS_TARGET int gs_upsample_threshold(const float *logits, long h, long w, unsigned char *mask, long oh, long ow) {
    upsampling u;
    if (upsampling_start(&u, logits, h, w, oh, ow) != 0) return -1;
    for (long y = 0; y < oh; y++) {
        unsigned char *o = mask + y * ow;
        for (long x = 0; x < ow; x += 16) {
            __mmask16 m = gs_lanes(ow - x);
            _mm_mask_storeu_epi8(o + x, m, _mm_maskz_mov_epi8(upsampling_positive(&u, y, x, m), _mm_set1_epi8(1)));
        }
    }
    gs_upsampling_free(&u);
    return 0;
}

GS_TARGET long gs_upsample_threshold_runs(const float *logits, long h, long w, long oh, long ow, long rows, long columns,
                                          float threshold, int *starts, int *ends, long capacity, long *row_offsets) {
    upsampling u;
    if (upsampling_start(&u, logits, h, w, oh, ow) != 0) return -2;
    long count = 0;
    row_offsets[0] = 0;
    for (long y = 0; y < rows; y++) {
        long open = -1;  // start of the run in progress
        for (long x = 0; x < columns; x += 16) {
            __mmask16 m = gs_lanes(columns - x);
            unsigned bits = upsampling_above(&u, y, x, m, threshold);
            unsigned valid = m;
            // Walk the changes of value along the 16 lanes.
            while (valid) {
                unsigned look = open >= 0 ? (~bits & valid) : (bits & valid);
                if (!look) break;
                long lane = __builtin_ctz(look);
                if (open >= 0) {
                    if (count == capacity) { gs_upsampling_free(&u); return -1; }
                    starts[count] = (int)open; ends[count] = (int)(x + lane); count++;
                    open = -1;
                } else {
                    open = x + lane;
                }
                valid &= ~((2u << lane) - 1);
            }
        }
        if (open >= 0) {
            if (count == capacity) { gs_upsampling_free(&u); return -1; }
            starts[count] = (int)open; ends[count] = (int)columns; count++;
        }
        row_offsets[y + 1] = count;
    }
    gs_upsampling_free(&u);
    return count;
}

GS_TARGET int gs_upsample_statistics(const float *logits, long h, long w, long oh, long ow, float high, float low, float threshold,
                                    long *counts, long *box) {
    upsampling u;
    if (upsampling_start(&u, logits, h, w, oh, ow) != 0) return -1;
    long above_high = 0, above_low = 0, above = 0;
    long min_x = ow, min_y = -1, max_x = -1, max_y = -1;
    const __m512 vh = _mm512_set1_ps(high), vl = _mm512_set1_ps(low), vt = _mm512_set1_ps(threshold);
    for (long y = 0; y < oh; y++) {
        int row_has = 0;
        for (long x = 0; x < ow; x += 16) {
            __mmask16 m = gs_lanes(ow - x);
            __m512 v = upsampling_values(&u, y, x, m);
            above_high += __builtin_popcount(_mm512_mask_cmp_ps_mask(m, v, vh, _CMP_GT_OQ));
            above_low += __builtin_popcount(_mm512_mask_cmp_ps_mask(m, v, vl, _CMP_GT_OQ));
            unsigned bits = _mm512_mask_cmp_ps_mask(m, v, vt, _CMP_GT_OQ);
            if (bits) {
                above += __builtin_popcount(bits);
                long first = x + __builtin_ctz(bits), last = x + 31 - __builtin_clz(bits);
                if (first < min_x) min_x = first;
                if (last > max_x) max_x = last;
                row_has = 1;
            }
        }
        if (row_has) {
            if (min_y < 0) min_y = y;
            max_y = y;
        }
    }
    counts[0] = above_high; counts[1] = above_low; counts[2] = above;
    if (max_y < 0) { box[0] = box[1] = box[2] = box[3] = 0; }
    else { box[0] = min_x; box[1] = min_y; box[2] = max_x; box[3] = max_y; }
    gs_upsampling_free(&u);
    return 0;
}

GS_TARGET void gs_softmax_row_groups(float *x, long groups, long group, long columns, long ld) {
    // Each group of rows is a column softmax of its own.
    for (long g = 0; g < groups; g++) gs_softmax_columns(x + g * group * ld, group, columns, ld);
}

GS_INLINE void convt_epilogue(const long vectors, const float *products, long rows, long w, long oc,
                              const float *bias, const float *addend, const float *lnw, const float *lnb, float eps,
                              int gelu, float *out, const float *hyper, long masks, float *logits, long plane) {
    const long ow = 2 * w;
    __m512 v[8];
    for (long y = 0; y < rows; y++) {
        for (long x = 0; x < w; x++) {
            const float *s = products + (y * w + x) * 4 * oc;
            gs_epilogue_prefetch(addend, y, x, w, oc);
            for (long d = 0; d < 4; d++) {
                long pixel = (2 * y + d / 2) * ow + 2 * x + d % 2;
                const float *a = addend + pixel * oc;
                // Parity: conv bias first, then the high-res map (`dc(x) + feat`).
                for (long u = 0; u < vectors; u++) {
                    __mmask16 m = gs_lanes(oc - 16 * u);
                    v[u] = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(m, s + d * oc + 16 * u), _mm512_maskz_loadu_ps(m, bias + 16 * u)),
                                         _mm512_maskz_loadu_ps(m, a + 16 * u));
                }
                if (lnw) {
                    // LayerNorm2d over the channels of the pixel (biased variance, two passes).
                    __m512 acc = _mm512_setzero_ps();
                    for (long u = 0; u < vectors; u++) acc = _mm512_add_ps(acc, v[u]);
                    __m512 mean = _mm512_set1_ps(_mm512_reduce_add_ps(acc) / (float)oc);
                    acc = _mm512_setzero_ps();
                    for (long u = 0; u < vectors; u++) {
                        __m512 c = _mm512_maskz_sub_ps(gs_lanes(oc - 16 * u), v[u], mean);
                        acc = _mm512_fmadd_ps(c, c, acc);
                    }
                    __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(acc) / (float)oc + eps));
                    for (long u = 0; u < vectors; u++) {
                        __mmask16 m = gs_lanes(oc - 16 * u);
                        v[u] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_sub_ps(v[u], mean), inv), _mm512_maskz_loadu_ps(m, lnw + 16 * u),
                                               _mm512_maskz_loadu_ps(m, lnb + 16 * u));
                    }
                }
                if (gelu)
                    for (long u = 0; u < vectors; u++) v[u] = _mm512_maskz_mov_ps(gs_lanes(oc - 16 * u), gs_gelu512(v[u]));
                if (out)
                    for (long u = 0; u < vectors; u++) _mm512_mask_storeu_ps(out + pixel * oc + 16 * u, gs_lanes(oc - 16 * u), v[u]);
                if (masks == 4) {
                    // SAM2's four mask tokens: the four dot products reduced together (unpack and
                    // add within 128-bit lanes, then fold the lanes) instead of one by one.
                    __m512 a[4];
                    for (long k = 0; k < 4; k++) {
                        a[k] = _mm512_setzero_ps();
                        for (long u = 0; u < vectors; u++)
                            a[k] = _mm512_fmadd_ps(v[u], _mm512_maskz_loadu_ps(gs_lanes(oc - 16 * u), hyper + k * oc + 16 * u), a[k]);
                    }
                    __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(a[0], a[1]), _mm512_unpackhi_ps(a[0], a[1]));
                    __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(a[2], a[3]), _mm512_unpackhi_ps(a[2], a[3]));
                    __m512 q = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))),
                                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t1))));
                    __m256 h8 = _mm256_add_ps(_mm512_castps512_ps256(q), _mm512_extractf32x8_ps(q, 1));
                    __m128 r = _mm_add_ps(_mm256_castps256_ps128(h8), _mm256_extractf128_ps(h8, 1));
                    float sums[4];
                    _mm_storeu_ps(sums, r);
                    for (long k = 0; k < 4; k++) logits[k * plane + pixel] = sums[k];
                } else for (long k = 0; k < masks; k++) {
                    __m512 acc = _mm512_setzero_ps();
                    for (long u = 0; u < vectors; u++)
                        acc = _mm512_fmadd_ps(v[u], _mm512_maskz_loadu_ps(gs_lanes(oc - 16 * u), hyper + k * oc + 16 * u), acc);
                    logits[k * plane + pixel] = _mm512_reduce_add_ps(acc);
                }
            }
        }
    }
}

GS_TARGET void gs_convt2x2_epilogue(const float *products, long rows, long w, long oc, const float *bias,
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

void gs_cpu_relax(void) { _mm_pause(); }

// MARK: Feature tiles

/// 16 codes of one channel at 16 pixels (the first n), as floats: (float)q · s + o.
GS_INLINE __m512 dequantize16(const int16_t *codes, const uint8_t *high, const uint8_t *low, long at, __mmask16 m,
                              __m512 s, __m512 o) {
    __m512i q;
    if (codes) {
        q = _mm512_cvtepi16_epi32(_mm256_maskz_loadu_epi16(m, codes + at));
    } else {
        __m512i h = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, high + at));
        __m512i l = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, low + at));
        q = _mm512_sub_epi32(_mm512_or_si512(_mm512_slli_epi32(h, 8), l), _mm512_set1_epi32(32768));
    }
    // Parity with the plain loop `Float(q) * scale + offset`: a multiply, then an add (no FMA).
    return _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(q), s), o);
}

/// In-register transpose of a 16×16 block: r[i] lane j ↔ r[j] lane i.
GS_INLINE void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    // Now r[4a + b] holds, in each 128-bit lane k, row (4a..4a+3)'s column (4k + b) entries.
    for (int i = 0; i < 4; i++) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xDD);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xDD);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xDD);
    }
}

GS_TARGET void gs_dequantize_transpose(const int16_t *codes, const uint8_t *high, const uint8_t *low, long channels, long plane,
                                       long p_begin, long p_end, const float *scale, const float *offset, float *out) {
    for (long p0 = p_begin; p0 < p_end; p0 += 16) {
        long n = p_end - p0 < 16 ? p_end - p0 : 16;
        __mmask16 pixels = gs_lanes(n);
        for (long c0 = 0; c0 < channels; c0 += 16) {
            long cn = channels - c0 < 16 ? channels - c0 : 16;
            __m512 r[16];
            for (long i = 0; i < 16; i++) {
                long c = c0 + i;
                r[i] = i < cn ? dequantize16(codes, high, low, c * plane + p0, pixels, _mm512_set1_ps(scale[c]), _mm512_set1_ps(offset[c]))
                              : _mm512_setzero_ps();
            }
            transpose16(r);
            __mmask16 lanes = gs_lanes(cn);
            for (long j = 0; j < n; j++) _mm512_mask_storeu_ps(out + (p0 + j) * channels + c0, lanes, r[j]);
        }
    }
}
