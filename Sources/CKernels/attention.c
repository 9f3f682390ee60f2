#include "CKernels.h"
#include "internal.h"

// Scaled dot-product attention for one head, flash-style.
//
// Queries are taken 32 at a time and kept *transposed*: one zmm lane per query, two registers
// per row. The scores are computed as Sᵀ (keys × 32 queries), so the softmax over keys is purely
// vertical (lane-wise max, exp and sum over rows, no horizontal reductions), and the weighted sum
// of values is computed as Oᵀ (head dims × 32 queries) += Vᵀ·Pᵀ, broadcasting value elements
// against rows of Pᵀ. Both products use a 12×32 register tile (24 accumulators), so each
// broadcast feeds two FMAs.
//
// Keys are processed in blocks of KB with an online softmax (running max `m`, running sum `l`,
// rescaling of the partial output), so 4096-key global attention never materialises a
// 4096×4096 score matrix; the packed key block and the value rows it reads stay in L2 while every
// query block runs over them.

enum { QB = GS_ATTENTION_QB, KT = GS_ATTENTION_KT, KB = GS_ATTENTION_KB };

size_t gs_attention_scratch_count(long nq, long nk, long hd) {
    (void)nk;
    long nqb = (nq + QB - 1) / QB;
    return (size_t)(KB * hd + hd * QB + KB * QB + nqb * (hd * QB + 2 * QB) + 64);
}

/// Sᵀ rows [0, R) of one key tile, NV vectors of 16 queries: st[r][:] = Σ_d kp[d][r] · qt[d][:].
GS_INLINE void scores_tile(const int R, const int NV, const float *kp, const float *qt, long hd, float *st) {
    __m512 acc[KT][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_setzero_ps();
    for (long d = 0; d < hd; d++) {
        __m512 b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm512_loadu_ps(qt + d * QB + 16 * u);
        const float *a = kp + d * KT;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m512 x = _mm512_set1_ps(a[r]);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_fmadd_ps(x, b[u], acc[r][u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm512_storeu_ps(st + r * QB + 16 * u, acc[r][u]);
}

/// Oᵀ rows [d0, d0+R): ot[d][:] = ot[d][:]·corr + Σ_j v[j][d] · pt[j][:].
GS_INLINE void values_tile(const int R, const int NV, const float *v, long ldv, const float *pt, long kbn, float *ot,
                           const __m512 *corr) {
    __m512 acc[KT][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_mul_ps(_mm512_loadu_ps(ot + r * QB + 16 * u), corr[u]);
    for (long j = 0; j < kbn; j++) {
        __m512 b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm512_loadu_ps(pt + j * QB + 16 * u);
        const float *a = v + j * ldv;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m512 x = _mm512_set1_ps(a[r]);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm512_fmadd_ps(x, b[u], acc[r][u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm512_storeu_ps(ot + r * QB + 16 * u, acc[r][u]);
}

/// One query block against one key block (NV = 1 or 2 vectors of queries).
GS_INLINE void query_block(const int NV, const float *kp, const float *qt, float *st, const float *vb, long ldv,
                           long kbn, long hd, float *s) {
    long tiles = (kbn + KT - 1) / KT;
    for (long t = 0; t < tiles; t++) {
        long rows = kbn - t * KT;
        const float *kpt = kp + t * hd * KT;
        float *stt = st + t * KT * QB;
        if (rows > 8) scores_tile(12, NV, kpt, qt, hd, stt);
        else if (rows > 4) scores_tile(8, NV, kpt, qt, hd, stt);
        else scores_tile(4, NV, kpt, qt, hd, stt);
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
        for (long j = 0; j < kbn; j++) {
            __m512 p = gs_exp512(_mm512_sub_ps(_mm512_loadu_ps(st + j * QB + 16 * u), mx));
            _mm512_storeu_ps(st + j * QB + 16 * u, p);
            sum = _mm512_add_ps(sum, p);
        }
        _mm512_storeu_ps(ls, _mm512_fmadd_ps(_mm512_loadu_ps(ls), corr[u], sum));
        _mm512_storeu_ps(ms, mx);
    }
    long d0 = 0;
    for (; d0 + 12 <= hd; d0 += 12) values_tile(12, NV, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
    for (; d0 + 4 <= hd; d0 += 4) values_tile(4, NV, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
    for (; d0 < hd; d0++) values_tile(1, NV, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
}

GS_TARGET void gs_attention_head(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                                 float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch) {
    if (nq <= 0) return;
    long nqb = (nq + QB - 1) / QB;
    float *kp = scratch;                 // [KB/KT tiles][hd][KT]
    float *qt = kp + KB * hd;            // [hd][QB]
    float *st = qt + hd * QB;            // [KB][QB]: scores, then probabilities
    float *state = st + KB * QB;         // per query block: Oᵀ [hd][QB], m [QB], l [QB]
    long stateSize = hd * QB + 2 * QB;
    gs_attention_start(state, nqb, hd);
    for (long kb0 = 0; kb0 < nk; kb0 += KB) {
        long kbn = nk - kb0 < KB ? nk - kb0 : KB;
        gs_attention_pack_keys(k + kb0 * ldk, ldk, kbn, hd, kp);
        const float *vb = v + kb0 * ldv;
        for (long b = 0; b < nqb; b++) {
            long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
            gs_attention_load_queries(q + q0 * ldq, ldq, qn, hd, scale, qt);
            float *s = state + b * stateSize;
            if (qn > 16) query_block(2, kp, qt, st, vb, ldv, kbn, hd, s);
            else query_block(1, kp, qt, st, vb, ldv, kbn, hd, s);
        }
    }
    gs_attention_finish(state, nq, hd, out, ldo);
}
