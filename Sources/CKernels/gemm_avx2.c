#include "CKernels.h"
#include "internal_avx2.h"

// The packed fp32 GEMM of gemm.c for CPUs with AVX2 and FMA but no AVX-512, on the same packed
// weights. Against OpenBLAS, which these CPUs used before: the weights are packed once at load
// instead of on every call (and on every row block of a split call), and the bias, the
// accumulation into the output and GELU happen in the tile's store instead of in passes of their
// own over the output.
//
// With 16 ymm registers a 32-column panel makes too small a tile, so the micro-kernel takes half a
// panel: 6 rows × 16 columns in 12 accumulators, two weight vectors and one broadcast (the shape
// of OpenBLAS's and BLIS's Haswell kernels). Each half panel (KC×16, 16 KB) stays in L1 while the
// 6-row slices of the row block (in L2) run over it.
//
// Every output element goes through gemm.c's chain of operations: one FMA per k, from zero, in
// each GS_GEMM_KC block, then + bias (first block), + the output (later blocks, or GS_ACC), and
// GELU on the last; so the two kernels give the same bits (the tests check it where AVX-512 exists).

enum { MR = 6, KC = GS_GEMM_KC, MC = 192, HALF = GS_PANEL / 2 };

/// Copies a slice of up to MR rows × kc of x (element (i, t) at x[i·as + t·ak]) into the [kc][MR]
/// layout, zero rows past `rows`, so that the micro-kernel reads one stream. `available`: the rows
/// of x from the slice's first to the matrix's end (0 when unknown).
GS_TARGET_AVX2 static void pack_rows(const float *x, long as, long ak, long rows, long kc, float *dst, long available) {
    if (as == 1 && rows == MR && available >= 8 && ak <= 1024) {
        // A transposed x (a slice's six values contiguous): eight floats a load, where the
        // element-wise copy took six loads and six stores. Each store's two extra floats are
        // overwritten by the next; the last one's land in the slack after the buffer (or on the
        // next slice's first two, written after this slice). Not for columns a page or more apart:
        // there the element-wise copy was faster (4096 × 256 × 64 with 16 KB between columns).
        for (long t = 0; t < kc; t++) _mm256_storeu_ps(dst + t * MR, _mm256_loadu_ps(x + t * ak));
        return;
    }
    for (long t = 0; t < kc; t++) {
        float *o = dst + t * MR;
        for (int i = 0; i < MR; i++) o[i] = i < rows ? x[i * as + t * ak] : 0.0f;
    }
}

/// The 6×16 micro-kernel on half a panel (`b` points at its first column, rows HALF apart):
/// y[0..mr) × [0..width) = A·B (+ bias if given) (+ y when `mode & GS_ACC`), then GELU when
/// `mode & GS_GELU`. Element (i, t) of A is at `a[i·as + t·ak]`.
GS_INLINE_AVX2 void micro_6x16(const float *a, long as, long ak, const float *b, long kc, float *y, long ldy, long mr,
                               long width, const float *bias, int mode) {
    __m256 c[MR][2];
    _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (long t = 0; t < kc; t++) {
        __m256 b0 = _mm256_load_ps(b + t * HALF);
        __m256 b1 = _mm256_load_ps(b + t * HALF + 8);
        const float *at = a + t * ak;
        _Pragma("clang loop unroll(full)") for (int i = 0; i < MR; i++) {
            __m256 x = _mm256_broadcast_ss(at + i * as);
            c[i][0] = _mm256_fmadd_ps(x, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(x, b1, c[i][1]);
        }
    }
    // Without a bias, + 0 as in gemm.c (it turns −0 into +0: the same bits).
    __m256 bias0 = _mm256_setzero_ps(), bias1 = _mm256_setzero_ps();
    if (bias) {
        bias0 = gs_load8(bias, 0, width);
        bias1 = gs_load8(bias, 8, width);
    }
    for (long i = 0; i < mr; i++) gs_finish_row16(y + i * ldy, c[i][0], c[i][1], bias0, bias1, width, mode & GS_ACC, mode & GS_GELU);
}

/// Copies kc rows of half a panel (rows GS_PANEL apart) to `dst`, contiguous: in the panel the
/// half's 16 KB of a k block are spread over 32 KB, 64 bytes in every 128, which fills every way
/// of half of L1's sets, and the slices of x streaming past evicted it (the load of the weights was
/// the kernel's hot spot).
GS_TARGET_AVX2 static void copy_half(const float *b, long kc, float *dst) {
    for (long t = 0; t < kc; t++) {
        _mm256_store_ps(dst + t * HALF, _mm256_loadu_ps(b + t * GS_PANEL));
        _mm256_store_ps(dst + t * HALF + 8, _mm256_loadu_ps(b + t * GS_PANEL + 8));
    }
}

/// Real columns (0…16) of half `half` of a panel of `width` columns.
static inline long half_width(long width, int half) {
    long w = width - half * HALF;
    return w < 0 ? 0 : (w > HALF ? HALF : w);
}

GS_TARGET_AVX2 void gs_gemm_packed_avx2(const float *x, long xs, long xk, const float *packed, const float *bias, float *y,
                                        long ldy, long m, long n, long k, long panel_begin, long panel_end, int flags) {
    const int accumulate = flags & GS_ACC;
    if (m <= 0 || panel_end <= panel_begin) return;
    if (k == 0) {
        // An empty sum: y = bias (+ y), as gemm.c.
        gs_gemm_empty_sum(bias, y, ldy, m, n, panel_begin, panel_end, accumulate);
        return;
    }
    // The row block's slices of x, packed [slice][kc][MR] (zero rows past the end), and a half
    // panel's k block, per thread.
    static _Thread_local float abuf[MC * KC + 8] __attribute__((aligned(32)));  // + pack_rows' slack
    static _Thread_local float bbuf[KC * HALF] __attribute__((aligned(64)));
    // A narrow product (four half panels at most) reads the full slices of a row-major x where they
    // are: packing a slice cost as much as the few products it served (the decoder's thin products,
    // 4096 × 48…64 × 256, ran about a fifth faster so). A short last slice is still packed.
    const int inPlace = xk == 1 && n <= 2 * GS_PANEL;
    // Row blocks outside k blocks (gemm.c has them inside): the row block's outputs stay in L2
    // from one k block to the next instead of going through memory for every k block of a long
    // sum. Each element still takes its k blocks in order.
    for (long m0 = 0; m0 < m; m0 += MC) {
        long mc = m - m0 < MC ? m - m0 : MC;
        for (long k0 = 0; k0 < k; k0 += KC) {
            long kc = k - k0 < KC ? k - k0 : KC;
            // Bias on the first k block, the activation on the last.
            int mode = (k0 > 0 || accumulate) ? GS_ACC : 0;
            if (k0 + KC >= k) mode |= flags & GS_GELU;
            for (long s = 0; s < mc; s += MR) {
                long rows = mc - s < MR ? mc - s : MR;
                if (!inPlace || rows < MR) pack_rows(x + (m0 + s) * xs + k0 * xk, xs, xk, rows, kc, abuf + s * kc, m - m0 - s);
            }
            for (long p = panel_begin; p < panel_end; p++) {
                const float *b = packed + p * k * GS_PANEL + k0 * GS_PANEL;
                long col = p * GS_PANEL;
                long width = n - col < GS_PANEL ? n - col : GS_PANEL;
                for (int half = 0; half < 2; half++) {
                    long hw = half_width(width, half);
                    if (hw == 0) break;
                    long c0 = col + half * HALF;
                    const float *pb = bias && k0 == 0 ? bias + c0 : NULL;
                    copy_half(b + half * HALF, kc, bbuf);
                    for (long s = 0; s < mc; s += MR) {
                        long mr = mc - s < MR ? mc - s : MR;
                        float *out = y + (m0 + s) * ldy + c0;
                        if (inPlace && mr == MR) micro_6x16(x + (m0 + s) * xs + k0, xs, 1, bbuf, kc, out, ldy, mr, hw, pb, mode);
                        else micro_6x16(abuf + s * kc, 1, MR, bbuf, kc, out, ldy, mr, hw, pb, mode);
                    }
                }
            }
        }
    }
}

GS_TARGET_AVX2 void gs_gemm_packed_transposed_avx2(const float *x, long xs, long xk, const float *packed, const float *bias,
                                                   float *y, long ldy, long m, long n, long k, long panel_begin, long panel_end) {
    if (m <= 0 || panel_end <= panel_begin) return;
    static _Thread_local float abuf[MR * KC] __attribute__((aligned(32)));
    static _Thread_local float bbuf[KC * HALF] __attribute__((aligned(64)));
    float tile[MR * GS_PANEL] __attribute__((aligned(32)));
    for (long m0 = 0; m0 < m; m0 += MR) {
        long mr = m - m0 < MR ? m - m0 : MR;
        for (long p = panel_begin; p < panel_end; p++) {
            long col = p * GS_PANEL;
            long width = n - col < GS_PANEL ? n - col : GS_PANEL;
            for (long k0 = 0; k0 < k || k0 == 0; k0 += KC) {
                long kc = k - k0 < KC ? k - k0 : KC;
                const float *b = packed + p * k * GS_PANEL + k0 * GS_PANEL;
                const float *xt = x + m0 * xs + k0 * xk;
                int mode = k0 > 0 ? GS_ACC : 0;
                if (kc <= 0) {
                    for (long i = 0; i < MR * GS_PANEL; i++) tile[i] = 0;
                } else {
                    if (mr < MR) pack_rows(xt, xs, xk, mr, kc, abuf, 0);
                    for (int half = 0; half < 2 && half_width(width, half) > 0; half++) {
                        copy_half(b + half * HALF, kc, bbuf);
                        if (mr == MR) micro_6x16(xt, xs, xk, bbuf, kc, tile + half * HALF, GS_PANEL, MR, HALF, NULL, mode);
                        else micro_6x16(abuf, 1, MR, bbuf, kc, tile + half * HALF, GS_PANEL, MR, HALF, NULL, mode);
                    }
                }
                if (k0 + KC >= k) break;
            }
            gs_store_tile_transposed(tile, mr, width, bias, col, y + m0, ldy);
        }
    }
}
