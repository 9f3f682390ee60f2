#include "CKernels.h"
#include "internal_avx2.h"

// The mask kernels of elementwise.c (`postprocess_masks` upsampling read as it is produced: a
// thresholded mask, its row runs, the automatic mask generator's statistics) for CPUs with AVX2
// and FMA but no AVX-512. The same taps and the same multiplies and adds (no fused ones), so the
// same values, masks and counts as the AVX-512 kernels and the plain Swift loops.

/// Allocates the scratch and runs the width pass over every source row, eight outputs at a time.
GS_TARGET_AVX2 static int start(upsampling *u, const float *logits, long h, long w, long oh, long ow) {
    if (gs_upsampling_allocate(u, h, w, oh, ow) != 0) return -1;
    for (long i = 0; i < h; i++) {
        const float *src = logits + i * w;
        float *dst = u->rows + i * ow;
        for (long x = 0; x < ow; x += 8) {
            __m256i m = gs_lanes8(ow - x);
            __m256i a = _mm256_maskload_epi32(u->xi0 + x, m), b = _mm256_maskload_epi32(u->xi1 + x, m);
            __m256 va = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, a, _mm256_castsi256_ps(m), 4);
            __m256 vb = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, b, _mm256_castsi256_ps(m), 4);
            __m256 v = _mm256_add_ps(_mm256_mul_ps(gs_load8(u->xl0, x, ow), va), _mm256_mul_ps(gs_load8(u->xl1, x, ow), vb));
            gs_store8(dst, x, ow, v);
        }
    }
    return 0;
}

/// Output pixels x…x+7 of output row y, of the first `count` (zero past it).
GS_INLINE_AVX2 __m256 values(const upsampling *u, long y, long x, long count) {
    const float *r0 = u->rows + (long)u->yi0[y] * u->ow, *r1 = u->rows + (long)u->yi1[y] * u->ow;
    return _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(u->yl0[y]), gs_load8(r0, x, count)),
                         _mm256_mul_ps(_mm256_set1_ps(u->yl1[y]), gs_load8(r1, x, count)));
}

/// Bit i set where output pixel x + i of row y is among the first `count` and `> threshold`.
GS_INLINE_AVX2 unsigned above(const upsampling *u, long y, long x, long count, float threshold) {
    // Parity: strict `>` against the mask threshold.
    unsigned bits = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(values(u, y, x, count), _mm256_set1_ps(threshold), _CMP_GT_OQ));
    long lanes = count - x < 8 ? count - x : 8;
    return bits & ((1u << lanes) - 1u);
}

GS_TARGET_AVX2 int gs_upsample_threshold_avx2(const float *logits, long h, long w, unsigned char *mask, long oh, long ow) {
    upsampling u;
    if (start(&u, logits, h, w, oh, ow) != 0) return -1;
    for (long y = 0; y < oh; y++) {
        unsigned char *o = mask + y * ow;
        for (long x = 0; x < ow; x += 8) {
            unsigned bits = above(&u, y, x, ow, 0.0f);
            for (long i = 0; i < 8 && x + i < ow; i++) o[x + i] = (unsigned char)((bits >> i) & 1u);
        }
    }
    gs_upsampling_free(&u);
    return 0;
}

GS_TARGET_AVX2 long gs_upsample_threshold_runs_avx2(const float *logits, long h, long w, long oh, long ow, long rows, long columns,
                                                    float threshold, int *starts, int *ends, long capacity, long *row_offsets) {
    upsampling u;
    if (start(&u, logits, h, w, oh, ow) != 0) return -2;
    long count = 0;
    row_offsets[0] = 0;
    for (long y = 0; y < rows; y++) {
        long open = -1;  // start of the run in progress
        for (long x = 0; x < columns; x += 8) {
            unsigned bits = above(&u, y, x, columns, threshold);
            unsigned valid = columns - x < 8 ? (1u << (columns - x)) - 1u : 0xFFu;
            // Walk the changes of value along the 8 lanes.
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
                valid &= ~((2u << lane) - 1u);
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

GS_TARGET_AVX2 int gs_upsample_statistics_avx2(const float *logits, long h, long w, long oh, long ow, float high, float low,
                                               float threshold, long *counts, long *box) {
    upsampling u;
    if (start(&u, logits, h, w, oh, ow) != 0) return -1;
    long above_high = 0, above_low = 0, above_count = 0;
    long min_x = ow, min_y = -1, max_x = -1, max_y = -1;
    const __m256 vh = _mm256_set1_ps(high), vl = _mm256_set1_ps(low), vt = _mm256_set1_ps(threshold);
    for (long y = 0; y < oh; y++) {
        int row_has = 0;
        for (long x = 0; x < ow; x += 8) {
            __m256 v = values(&u, y, x, ow);
            long lanes = ow - x < 8 ? ow - x : 8;
            unsigned valid = (1u << lanes) - 1u;
            above_high += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, vh, _CMP_GT_OQ)) & valid);
            above_low += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, vl, _CMP_GT_OQ)) & valid);
            unsigned bits = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(v, vt, _CMP_GT_OQ)) & valid;
            if (bits) {
                above_count += __builtin_popcount(bits);
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
    counts[0] = above_high; counts[1] = above_low; counts[2] = above_count;
    if (max_y < 0) { box[0] = box[1] = box[2] = box[3] = 0; }
    else { box[0] = min_x; box[1] = min_y; box[2] = max_x; box[3] = max_y; }
    gs_upsampling_free(&u);
    return 0;
}
