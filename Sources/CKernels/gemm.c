#include "CKernels.h"
#include "internal.h"

#include <string.h>

// Linear layers `y = x·Wᵀ + b` with W packed once at load time.
//
// Blocking: k in blocks of KC, rows in blocks of MC. A weight panel block (KC×32, 32 KB) stays
// in L1 while the 12-row slices of the row block (in L2) run over it; the micro-kernel keeps a
// 12×32 tile of y in 24 zmm registers and broadcasts x straight from its rows (packing x was
// measured slower: with few panels, as in the 384→96 MLP layers, the copy is not amortised).

enum { MR = 12, KC = GS_GEMM_KC, MC = 192 };

int gs_has_avx512(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    }
    return cached;
}

size_t gs_packed_count(long n, long k) {
    long panels = (n + GS_PANEL - 1) / GS_PANEL;
    return (size_t)panels * (size_t)k * GS_PANEL;
}

void gs_pack_weight(const float *w, long ldw, long n, long k, float *packed) {
    long panels = (n + GS_PANEL - 1) / GS_PANEL;
    for (long p = 0; p < panels; p++) {
        float *dst = packed + p * k * GS_PANEL;
        for (long t = 0; t < k; t++) {
            for (long j = 0; j < GS_PANEL; j++) {
                long row = p * GS_PANEL + j;
                dst[t * GS_PANEL + j] = row < n ? w[row * ldw + t] : 0.0f;
            }
        }
    }
}

/// Copies a short slice of rows (< 12) × kc of x into the [kc][12] layout, zero rows past the end.
GS_TARGET static void pack_rows(const float *x, long as, long ak, long rows, long kc, float *dst) {
    for (long t = 0; t < kc; t++) {
        float *o = dst + t * MR;
        for (int i = 0; i < MR; i++) o[i] = i < rows ? x[i * as + t * ak] : 0.0f;
    }
}

void gs_pack_kn(const float *b, long ldb, long k, long n, float *packed) {
    long panels = (n + GS_PANEL - 1) / GS_PANEL;
    for (long p = 0; p < panels; p++) {
        float *dst = packed + p * k * GS_PANEL;
        for (long t = 0; t < k; t++) {
            for (long j = 0; j < GS_PANEL; j++) {
                long col = p * GS_PANEL + j;
                dst[t * GS_PANEL + j] = col < n ? b[t * ldb + col] : 0.0f;
            }
        }
    }
}

/// The 12×32 micro-kernel: y[0..mr) × [0..32 masked by m0/m1] = A·B (+ bias if given)
/// (+ y when `mode & GS_ACC`), then GELU when `mode & GS_GELU`.
GS_INLINE void micro_12x32(const float *a, long as, long ak, const float *b, long kc, float *y, long ldy, long mr,
                           __mmask16 m0, __mmask16 m1, const float *bias, int mode) {
    __m512 c00 = _mm512_setzero_ps(), c01 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    __m512 c20 = _mm512_setzero_ps(), c21 = _mm512_setzero_ps(), c30 = _mm512_setzero_ps(), c31 = _mm512_setzero_ps();
    __m512 c40 = _mm512_setzero_ps(), c41 = _mm512_setzero_ps(), c50 = _mm512_setzero_ps(), c51 = _mm512_setzero_ps();
    __m512 c60 = _mm512_setzero_ps(), c61 = _mm512_setzero_ps(), c70 = _mm512_setzero_ps(), c71 = _mm512_setzero_ps();
    __m512 c80 = _mm512_setzero_ps(), c81 = _mm512_setzero_ps(), c90 = _mm512_setzero_ps(), c91 = _mm512_setzero_ps();
    __m512 ca0 = _mm512_setzero_ps(), ca1 = _mm512_setzero_ps(), cb0 = _mm512_setzero_ps(), cb1 = _mm512_setzero_ps();
    for (long t = 0; t < kc; t++) {
        __m512 b0 = _mm512_loadu_ps(b + t * GS_PANEL);
        __m512 b1 = _mm512_loadu_ps(b + t * GS_PANEL + 16);
        const float *at = a + t * ak;
        __m512 x;
#define GS_ROW(i, r0, r1) x = _mm512_set1_ps(at[(i) * as]); r0 = _mm512_fmadd_ps(x, b0, r0); r1 = _mm512_fmadd_ps(x, b1, r1);
        GS_ROW(0, c00, c01) GS_ROW(1, c10, c11) GS_ROW(2, c20, c21) GS_ROW(3, c30, c31)
        GS_ROW(4, c40, c41) GS_ROW(5, c50, c51) GS_ROW(6, c60, c61) GS_ROW(7, c70, c71)
        GS_ROW(8, c80, c81) GS_ROW(9, c90, c91) GS_ROW(10, ca0, ca1) GS_ROW(11, cb0, cb1)
#undef GS_ROW
    }
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) {
        bias0 = _mm512_maskz_loadu_ps(m0, bias);
        bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    __m512 rows[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                          {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}};
    for (long i = 0; i < mr; i++) {
        gs_finish_row(y + i * ldy, rows[i][0], rows[i][1], bias0, bias1, m0, m1, mode & GS_ACC, mode & GS_GELU);
    }
}

GS_TARGET void gs_linear_packed(const float *x, long ldx, const float *packed, const float *bias, float *y, long ldy,
                                long m, long n, long k, long panel_begin, long panel_end, int accumulate) {
    gs_gemm_packed(x, ldx, 1, packed, bias, y, ldy, m, n, k, panel_begin, panel_end, accumulate);
}

GS_TARGET void gs_gemm_packed(const float *x, long xs, long xk, const float *packed, const float *bias, float *y, long ldy,
                              long m, long n, long k, long panel_begin, long panel_end, int flags) {
    const long ldx = xs;
    const int accumulate = flags & GS_ACC;
    if (m <= 0 || panel_end <= panel_begin) return;
    if (k == 0) {
        // An empty sum: y = bias (+ y); no model layer has k = 0, so the activation is not applied.
        gs_gemm_empty_sum(bias, y, ldy, m, n, panel_begin, panel_end, accumulate);
        return;
    }
    // The zero-padded copy of a short row tail, per thread.
    static _Thread_local float abuf[MR * KC] __attribute__((aligned(64)));
    for (long k0 = 0; k0 < k; k0 += KC) {
        long kc = k - k0 < KC ? k - k0 : KC;
        // Bias on the first k block, the activation on the last.
        int mode = (k0 > 0 || accumulate) ? GS_ACC : 0;
        if (k0 + KC >= k) mode |= flags & GS_GELU;
        for (long m0 = 0; m0 < m; m0 += MC) {
            long mc = m - m0 < MC ? m - m0 : MC;
            // A short tail of rows is copied to zero-padded rows once for all panels, so the kernel
            // never reads past the last row (thin products are all tail).
            long tail = mc % MR, full = mc - tail;
            if (tail) pack_rows(x + (m0 + full) * ldx + k0 * xk, ldx, xk, tail, kc, abuf);
            for (long p = panel_begin; p < panel_end; p++) {
                const float *b = packed + p * k * GS_PANEL + k0 * GS_PANEL;
                long col = p * GS_PANEL;
                long width = n - col < GS_PANEL ? n - col : GS_PANEL;
                __mmask16 mk0 = gs_lanes(width), mk1 = gs_lanes(width - 16);
                const float *pb = bias && k0 == 0 ? bias + col : NULL;
                for (long s = 0; s < mc; s += MR) {
                    long mr = mc - s < MR ? mc - s : MR;
                    float *yt = y + (m0 + s) * ldy + col;
                    const float *xt = x + (m0 + s) * ldx + k0 * xk;
                    if (mr == MR) micro_12x32(xt, ldx, xk, b, kc, yt, ldy, mr, mk0, mk1, pb, mode);
                    else micro_12x32(abuf, 1, MR, b, kc, yt, ldy, mr, mk0, mk1, pb, mode);
                }
            }
        }
    }
}

GS_TARGET void gs_gemm_packed_transposed(const float *x, long xs, long xk, const float *packed, const float *bias,
                                         float *y, long ldy, long m, long n, long k, long panel_begin, long panel_end) {
    if (m <= 0 || panel_end <= panel_begin) return;
    static _Thread_local float abuf[MR * KC] __attribute__((aligned(64)));
    float tile[MR * GS_PANEL] __attribute__((aligned(64)));
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
                } else if (mr == MR) {
                    micro_12x32(xt, xs, xk, b, kc, tile, GS_PANEL, MR, 0xFFFF, 0xFFFF, NULL, mode);
                } else {
                    pack_rows(xt, xs, xk, mr, kc, abuf);
                    micro_12x32(abuf, 1, MR, b, kc, tile, GS_PANEL, MR, 0xFFFF, 0xFFFF, NULL, mode);
                }
                if (k0 + KC >= k) break;
            }
            gs_store_tile_transposed(tile, mr, width, bias, col, y + m0, ldy);
        }
    }
}
