#include "CKernels.h"
#include "internal.h"

#include <stdint.h>

// Scaled dot-product attention for one head with bf16 products and fp32 accumulation
// (AVX512_BF16 `vdpbf16ps`), for the reduced-precision encoder.
//
// The structure is that of the fp32 kernel (attention.c): queries 32 at a time kept transposed
// (one zmm lane per query), Sᵀ = K·Qᵀ and Oᵀ += Vᵀ·Pᵀ on 12×32 register tiles, keys in blocks
// with an online softmax, so 4096-key global attention never forms a 4096×4096 score matrix.
// `vdpbf16ps` multiplies *pairs* along the reduction, so each operand is packed with its
// reduction axis in 32-bit pairs: q and k pair consecutive head dimensions (the scores reduce
// over d), p and v pair consecutive keys (the output reduces over keys). Scores, the softmax,
// its running max and sum, and the output stay fp32; only the operands of the two products are
// rounded (nearest even). The queries are packed once for all key blocks.

#define GS_BF16_TARGET __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx512bf16,fma")))
#define GS_BF16_INLINE static inline __attribute__((always_inline)) GS_BF16_TARGET

enum { QB = 32, KT = 12, KB = 384 };

/// bf16 of a finite float, rounded to nearest even (as `vcvtneps2bf16`).
static inline uint32_t bf16_bits(float f) {
    union { float f; uint32_t u; } v = {f};
    return (v.u + 0x7FFF + ((v.u >> 16) & 1)) >> 16;
}

/// Lane-wise pairs (bf16(lo), bf16(hi)) of two vectors of finite floats: lo in the low half.
GS_BF16_INLINE __m512i pair_bf16(__m512 lo, __m512 hi) {
    const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
    __m512i a = _mm512_castps_si512(lo), b = _mm512_castps_si512(hi);
    a = _mm512_add_epi32(a, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(a, 16), one)));
    b = _mm512_add_epi32(b, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(b, 16), one)));
    return _mm512_or_si512(_mm512_srli_epi32(a, 16), _mm512_and_si512(b, _mm512_set1_epi32((int)0xFFFF0000u)));
}

size_t gs_attention_bf16_scratch_count(long nq, long nk, long hd) {
    (void)nk;
    long nqb = (nq + QB - 1) / QB, hp = (hd + 1) / 2;
    return (size_t)(KB * hp          // packed key block
                    + (KB / 2) * hd  // packed value block
                    + KB * QB        // scores
                    + (KB / 2) * QB  // packed probabilities
                    + nqb * (hp * QB + hd * QB + 2 * QB) + 64);
}

/// Sᵀ rows [0, R) of one key tile: st[r][:] = Σ_t kp[t][r] · qt[t][:] over the hp head-dim pairs.
GS_BF16_INLINE void scores_tile(const int R, const int NV, const uint32_t *kp, const uint32_t *qt, long hp, float *st) {
    __m512 acc[KT][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_setzero_ps();
    for (long t = 0; t < hp; t++) {
        __m512bh b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = (__m512bh)_mm512_loadu_si512(qt + t * QB + 16 * u);
        const uint32_t *a = kp + t * KT;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[r]);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_dpbf16_ps(acc[r][u], x, b[u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm512_storeu_ps(st + r * QB + 16 * u, acc[r][u]);
}

/// Oᵀ rows [d0, d0+R): ot[d][:] = ot[d][:]·corr + Σ_jp vp[jp][d] · pt[jp][:] over key pairs.
GS_BF16_INLINE void values_tile(const int R, const int NV, const uint32_t *vp, long hd, const uint32_t *pt, long kbp, float *ot,
                                const __m512 *corr) {
    __m512 acc[KT][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_mul_ps(_mm512_loadu_ps(ot + r * QB + 16 * u), corr[u]);
    for (long j = 0; j < kbp; j++) {
        __m512bh b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = (__m512bh)_mm512_loadu_si512(pt + j * QB + 16 * u);
        const uint32_t *a = vp + j * hd;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)a[r]);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_dpbf16_ps(acc[r][u], x, b[u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm512_storeu_ps(ot + r * QB + 16 * u, acc[r][u]);
}

/// One query block against one key block (NV = 1 or 2 vectors of queries). `s` is the block's
/// state: Oᵀ [hd][QB], then the running max m [QB] and sum l [QB].
GS_BF16_INLINE void query_block(const int NV, const uint32_t *kp, const uint32_t *qt, float *st, uint32_t *pt,
                                const uint32_t *vp, long kbn, long hd, float *s) {
    const long hp = (hd + 1) / 2, kbp = (kbn + 1) / 2;
    long tiles = (kbn + KT - 1) / KT;
    for (long t = 0; t < tiles; t++) {
        long rows = kbn - t * KT;
        const uint32_t *kpt = kp + t * hp * KT;
        float *stt = st + t * KT * QB;
        if (rows > 8) scores_tile(12, NV, kpt, qt, hp, stt);
        else if (rows > 4) scores_tile(8, NV, kpt, qt, hp, stt);
        else scores_tile(4, NV, kpt, qt, hp, stt);
    }
    __m512 corr[2];
    _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) {
        float *ms = s + hd * QB + 16 * u, *ls = s + hd * QB + QB + 16 * u;
        __m512 mOld = _mm512_loadu_ps(ms);
        __m512 mx = mOld;
        for (long j = 0; j < kbn; j++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(st + j * QB + 16 * u));
        // exp(−∞ − m) on the first block: the partial output is zero, so any finite factor works.
        corr[u] = gs_exp512(_mm512_sub_ps(mOld, mx));
        __m512 sum = _mm512_setzero_ps();
        for (long jp = 0; jp < kbp; jp++) {
            __m512 p0 = gs_exp512(_mm512_sub_ps(_mm512_loadu_ps(st + 2 * jp * QB + 16 * u), mx));
            // An odd block's last pair has no second key: its weight is zero (and so is its v).
            __m512 p1 = 2 * jp + 1 < kbn ? gs_exp512(_mm512_sub_ps(_mm512_loadu_ps(st + (2 * jp + 1) * QB + 16 * u), mx))
                                         : _mm512_setzero_ps();
            _mm512_storeu_si512(pt + jp * QB + 16 * u, pair_bf16(p0, p1));
            sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
        }
        _mm512_storeu_ps(ls, _mm512_fmadd_ps(_mm512_loadu_ps(ls), corr[u], sum));
        _mm512_storeu_ps(ms, mx);
    }
    long d0 = 0;
    for (; d0 + 12 <= hd; d0 += 12) values_tile(12, NV, vp + d0, hd, pt, kbp, s + d0 * QB, corr);
    for (; d0 + 4 <= hd; d0 += 4) values_tile(4, NV, vp + d0, hd, pt, kbp, s + d0 * QB, corr);
    for (; d0 < hd; d0++) values_tile(1, NV, vp + d0, hd, pt, kbp, s + d0 * QB, corr);
}

GS_BF16_TARGET void gs_attention_head_bf16(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                                           float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch) {
    if (nq <= 0) return;
    const long nqb = (nq + QB - 1) / QB, hp = (hd + 1) / 2;
    uint32_t *kp = (uint32_t *)scratch;     // [KB/KT tiles][hp][KT]
    uint32_t *vp = kp + KB * hp;            // [KB/2][hd]
    float *st = (float *)(vp + (KB / 2) * hd);  // [KB][QB]
    uint32_t *pt = (uint32_t *)(st + KB * QB);  // [KB/2][QB]
    float *state = (float *)(pt + (KB / 2) * QB);
    // Per query block: packed queries [hp][QB], then Oᵀ [hd][QB], m [QB], l [QB].
    const long stateSize = hp * QB + hd * QB + 2 * QB;
    for (long b = 0; b < nqb; b++) {
        long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        uint32_t *qt = (uint32_t *)(state + b * stateSize);
        float *s = state + b * stateSize + hp * QB;
        for (long t = 0; t < hp; t++) {
            for (long i = 0; i < QB; i++) {
                const float *row = q + (q0 + i) * ldq;
                float lo = i < qn ? row[2 * t] * scale : 0.0f;
                float hi = i < qn && 2 * t + 1 < hd ? row[2 * t + 1] * scale : 0.0f;
                qt[t * QB + i] = bf16_bits(lo) | bf16_bits(hi) << 16;
            }
        }
        for (long i = 0; i < hd * QB; i++) s[i] = 0;
        for (long i = 0; i < QB; i++) { s[hd * QB + i] = -INFINITY; s[hd * QB + QB + i] = 0; }
    }
    for (long kb0 = 0; kb0 < nk; kb0 += KB) {
        long kbn = nk - kb0 < KB ? nk - kb0 : KB;
        long tiles = (kbn + KT - 1) / KT, kbp = (kbn + 1) / 2;
        // Keys as [tile][d pair][KT], zero rows past the end.
        for (long t = 0; t < tiles; t++) {
            uint32_t *dst = kp + t * hp * KT;
            for (long r = 0; r < KT; r++) {
                long j = t * KT + r;
                const float *row = k + (kb0 + j) * ldk;
                for (long dp = 0; dp < hp; dp++) {
                    uint32_t lo = j < kbn ? bf16_bits(row[2 * dp]) : 0;
                    uint32_t hi = j < kbn && 2 * dp + 1 < hd ? bf16_bits(row[2 * dp + 1]) : 0;
                    dst[dp * KT + r] = lo | hi << 16;
                }
            }
        }
        // Values as [key pair][d], the second key of an odd block's last pair zero.
        for (long jp = 0; jp < kbp; jp++) {
            const float *r0 = v + (kb0 + 2 * jp) * ldv;
            const float *r1 = 2 * jp + 1 < kbn ? r0 + ldv : NULL;
            uint32_t *dst = vp + jp * hd;
            for (long d = 0; d < hd; d += 16) {
                __mmask16 m = gs_lanes(hd - d);
                __m512 lo = _mm512_maskz_loadu_ps(m, r0 + d);
                __m512 hi = r1 ? _mm512_maskz_loadu_ps(m, r1 + d) : _mm512_setzero_ps();
                _mm512_mask_storeu_epi32(dst + d, m, pair_bf16(lo, hi));
            }
        }
        for (long b = 0; b < nqb; b++) {
            long qn = nq - b * QB < QB ? nq - b * QB : QB;
            const uint32_t *qt = (const uint32_t *)(state + b * stateSize);
            float *s = state + b * stateSize + hp * QB;
            if (qn > 16) query_block(2, kp, qt, st, pt, vp, kbn, hd, s);
            else query_block(1, kp, qt, st, pt, vp, kbn, hd, s);
        }
    }
    for (long b = 0; b < nqb; b++) {
        long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        float *s = state + b * stateSize + hp * QB;
        for (long i = 0; i < qn; i++) {
            float *o = out + (q0 + i) * ldo;
            float inv = 1.0f / s[hd * QB + QB + i];
            for (long d = 0; d < hd; d++) o[d] = s[d * QB + i] * inv;
        }
    }
}
