#include "CKernels.h"
#include "internal.h"

#include <stdint.h>

// Opt-in bfloat16 GEMM for the encoder's linear layers (`--precision bf16`): weights are rounded
// to bf16 once at load, activations per call, and products accumulate in fp32 with AVX512_BF16
// `vdpbf16ps` (two multiply-adds per lane per instruction, twice the fp32 FMA rate).
// Same blocking as the fp32 kernel: a 12×32 register tile, the weight panel block in L1.

#define GS_BF16_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma")))
#define GS_BF16_INLINE static inline __attribute__((always_inline)) GS_BF16_TARGET

enum { BMR = 12, BKC = 512, BMC = 192 };

int gs_has_avx512_bf16(void) {
    static int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = gs_has_avx512() && __builtin_cpu_supports("avx512bf16");
    }
    return cached;
}

size_t gs_packed_bf16_count(long n, long k) {
    long panels = (n + GS_PANEL - 1) / GS_PANEL;
    return (size_t)panels * (size_t)((k + 1) / 2) * 2 * GS_PANEL;
}

/// Round to nearest even, as `vcvtne2ps2bf16` does (inputs are finite weights).
static uint16_t to_bf16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t rounding = 0x7FFF + ((v.u >> 16) & 1);
    return (uint16_t)((v.u + rounding) >> 16);
}

void gs_pack_weight_bf16(const float *w, long ldw, long n, long k, uint16_t *packed) {
    long panels = (n + GS_PANEL - 1) / GS_PANEL, pairs = (k + 1) / 2;
    for (long p = 0; p < panels; p++) {
        uint16_t *dst = packed + p * pairs * 2 * GS_PANEL;
        for (long t = 0; t < pairs; t++) {
            for (long j = 0; j < GS_PANEL; j++) {
                long row = p * GS_PANEL + j;
                for (long e = 0; e < 2; e++) {
                    long col = 2 * t + e;
                    dst[(t * GS_PANEL + j) * 2 + e] = (row < n && col < k) ? to_bf16(w[row * ldw + col]) : 0;
                }
            }
        }
    }
}

/// Rows [0, rows) × columns [k0, k0 + kc) of x as bf16, row-major with `pairs` 32-bit pairs per
/// row (zero-padded to an even count).
GS_BF16_TARGET static void convert_rows(const float *x, long ldx, long rows, long k0, long kc, long k, uint32_t *dst, long pairs) {
    for (long r = 0; r < rows; r++) {
        const float *src = x + r * ldx + k0;
        uint32_t *out = dst + r * pairs;
        for (long c = 0; c < kc; c += 32) {
            long left = kc - c;
            __m512 lo = _mm512_maskz_loadu_ps(gs_lanes(left), src + c);
            __m512 hi = _mm512_maskz_loadu_ps(gs_lanes(left - 16), src + c + 16);
            __m512bh packed = _mm512_cvtne2ps_pbh(hi, lo);
            long words = (left >= 32 ? 32 : left + (left & 1)) / 2;
            _mm512_mask_storeu_epi32(out + c / 2, gs_lanes(words), (__m512i)packed);
        }
        (void)k;
    }
}

GS_BF16_INLINE void micro_bf16(const uint32_t *a, long as, const uint16_t *b, long kcp, float *y, long ldy, long mr,
                              __mmask16 m0, __mmask16 m1, const float *bias, int mode) {
    __m512 acc[BMR][2];
    _Pragma("clang loop unroll(full)") for (int i = 0; i < BMR; i++) { acc[i][0] = _mm512_setzero_ps(); acc[i][1] = _mm512_setzero_ps(); }
    for (long t = 0; t < kcp; t++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + t * 2 * GS_PANEL);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + t * 2 * GS_PANEL + GS_PANEL);
        _Pragma("clang loop unroll(full)") for (int i = 0; i < BMR; i++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[i * as + t]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], x, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], x, b1);
        }
    }
    __m512 bias0 = _mm512_setzero_ps(), bias1 = _mm512_setzero_ps();
    if (bias) {
        bias0 = _mm512_maskz_loadu_ps(m0, bias);
        bias1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
    for (long i = 0; i < mr; i++) {
        gs_finish_row(y + i * ldy, acc[i][0], acc[i][1], bias0, bias1, m0, m1, mode & GS_ACC, mode & GS_GELU);
    }
}

GS_BF16_TARGET void gs_gemm_bf16(const float *x, long ldx, const uint16_t *packed, const float *bias, float *y, long ldy,
                                 long m, long n, long k, int flags) {
    if (m <= 0 || n <= 0 || k <= 0) return;
    static _Thread_local uint32_t abuf[BMC * (BKC / 2)] __attribute__((aligned(64)));
    const long panels = (n + GS_PANEL - 1) / GS_PANEL, pairsTotal = (k + 1) / 2;
    for (long k0 = 0; k0 < k; k0 += BKC) {
        long kc = k - k0 < BKC ? k - k0 : BKC;
        long kcp = (kc + 1) / 2;
        int mode = (k0 > 0 || (flags & GS_ACC)) ? GS_ACC : 0;
        if (k0 + BKC >= k) mode |= flags & GS_GELU;
        for (long m0 = 0; m0 < m; m0 += BMC) {
            long mc = m - m0 < BMC ? m - m0 : BMC;
            // Rows past the end of a short slice read zeros: the buffer is padded to 12-row slices.
            long padded = (mc + BMR - 1) / BMR * BMR;
            convert_rows(x + m0 * ldx, ldx, mc, k0, kc, k, abuf, kcp);
            for (long r = mc; r < padded; r++)
                for (long t = 0; t < kcp; t++) abuf[r * kcp + t] = 0;
            for (long p = 0; p < panels; p++) {
                const uint16_t *b = packed + p * pairsTotal * 2 * GS_PANEL + (k0 / 2) * 2 * GS_PANEL;
                long col = p * GS_PANEL;
                long width = n - col < GS_PANEL ? n - col : GS_PANEL;
                __mmask16 mk0 = gs_lanes(width), mk1 = gs_lanes(width - 16);
                const float *pb = bias && k0 == 0 ? bias + col : NULL;
                for (long s = 0; s < mc; s += BMR) {
                    long mr = mc - s < BMR ? mc - s : BMR;
                    micro_bf16(abuf + s * kcp, kcp, b, kcp, y + (m0 + s) * ldy + col, ldy, mr, mk0, mk1, pb, mode);
                }
            }
        }
    }
}
