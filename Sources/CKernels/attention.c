#include "CKernels.h"
#include "internal.h"

// Scaled dot-product attention for one head, flash-style.
//
// Queries are taken 16 at a time and kept *transposed*: one zmm lane per query. The scores are
// computed as Sᵀ (keys × 16 queries), so the softmax over keys is purely vertical (lane-wise max,
// exp and sum over rows, no horizontal reductions), and the weighted sum of values is computed as
// Oᵀ (head dims × 16 queries) += Vᵀ·Pᵀ, broadcasting value elements against rows of Pᵀ.
//
// Keys are processed in blocks of KB with an online softmax (running max `m`, running sum `l`,
// rescaling of the partial output), so 4096-key global attention never materialises a
// 4096×4096 score matrix; the packed key block and the value rows it reads stay in L2 while every
// query block runs over them.

enum { QB = 16, KT = 24, KB = 384 };

size_t gs_attention_scratch_count(long nq, long nk, long hd) {
    (void)nk;
    long nqb = (nq + QB - 1) / QB;
    return (size_t)(KB * hd + hd * QB + KB * QB + nqb * (hd * QB + 2 * QB) + 64);
}

/// Sᵀ rows [0, R) of one key tile: st[r][:] = Σ_d kp[d][r] · qt[d][:].
GS_INLINE void scores_tile(const int R, const float *kp, const float *qt, long hd, float *st) {
    __m512 acc[KT];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (long d = 0; d < hd; d++) {
        __m512 b = _mm512_loadu_ps(qt + d * QB);
        const float *a = kp + d * KT;
        for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r]), b, acc[r]);
    }
    for (int r = 0; r < R; r++) _mm512_storeu_ps(st + r * QB, acc[r]);
}

/// Oᵀ rows [d0, d0+R): ot[d][:] = ot[d][:]·corr + Σ_j v[j][d] · pt[j][:].
GS_INLINE void values_tile(const int R, const float *v, long ldv, const float *pt, long kbn, float *ot, __m512 corr) {
    __m512 acc[KT];
    for (int r = 0; r < R; r++) acc[r] = _mm512_mul_ps(_mm512_loadu_ps(ot + r * QB), corr);
    for (long j = 0; j < kbn; j++) {
        __m512 b = _mm512_loadu_ps(pt + j * QB);
        const float *a = v + j * ldv;
        for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[r]), b, acc[r]);
    }
    for (int r = 0; r < R; r++) _mm512_storeu_ps(ot + r * QB, acc[r]);
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
    for (long b = 0; b < nqb; b++) {
        float *s = state + b * stateSize;
        for (long i = 0; i < hd * QB; i++) s[i] = 0;
        _mm512_storeu_ps(s + hd * QB, _mm512_set1_ps(-INFINITY));
        _mm512_storeu_ps(s + hd * QB + QB, _mm512_setzero_ps());
    }
    for (long kb0 = 0; kb0 < nk; kb0 += KB) {
        long kbn = nk - kb0 < KB ? nk - kb0 : KB;
        long tiles = (kbn + KT - 1) / KT;
        // Pack the key block as [tile][d][KT], zero rows past the end.
        for (long t = 0; t < tiles; t++) {
            float *dst = kp + t * hd * KT;
            for (long r = 0; r < KT; r++) {
                long j = t * KT + r;
                if (j < kbn) {
                    const float *row = k + (kb0 + j) * ldk;
                    for (long d = 0; d < hd; d++) dst[d * KT + r] = row[d];
                } else {
                    for (long d = 0; d < hd; d++) dst[d * KT + r] = 0;
                }
            }
        }
        const float *vb = v + kb0 * ldv;
        for (long b = 0; b < nqb; b++) {
            long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
            for (long d = 0; d < hd; d++)
                for (long i = 0; i < QB; i++) qt[d * QB + i] = i < qn ? q[(q0 + i) * ldq + d] * scale : 0.0f;
            for (long t = 0; t < tiles; t++) {
                long rows = kbn - t * KT;
                const float *kpt = kp + t * hd * KT;
                float *stt = st + t * KT * QB;
                if (rows > 16) scores_tile(24, kpt, qt, hd, stt);
                else if (rows > 8) scores_tile(16, kpt, qt, hd, stt);
                else scores_tile(8, kpt, qt, hd, stt);
            }
            float *s = state + b * stateSize;
            __m512 mOld = _mm512_loadu_ps(s + hd * QB);
            __m512 mx = mOld;
            for (long j = 0; j < kbn; j++) mx = _mm512_max_ps(mx, _mm512_loadu_ps(st + j * QB));
            // exp(−∞ − m) on the first block: the partial output is zero, so any finite factor works.
            __m512 corr = gs_exp512(_mm512_sub_ps(mOld, mx));
            __m512 sum = _mm512_setzero_ps();
            for (long j = 0; j < kbn; j++) {
                __m512 p = gs_exp512(_mm512_sub_ps(_mm512_loadu_ps(st + j * QB), mx));
                _mm512_storeu_ps(st + j * QB, p);
                sum = _mm512_add_ps(sum, p);
            }
            __m512 l = _mm512_loadu_ps(s + hd * QB + QB);
            _mm512_storeu_ps(s + hd * QB + QB, _mm512_fmadd_ps(l, corr, sum));
            _mm512_storeu_ps(s + hd * QB, mx);
            long d0 = 0;
            for (; d0 + 24 <= hd; d0 += 24) values_tile(24, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
            for (; d0 + 8 <= hd; d0 += 8) values_tile(8, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
            for (; d0 < hd; d0++) values_tile(1, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
        }
    }
    for (long b = 0; b < nqb; b++) {
        long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        float *s = state + b * stateSize;
        float inv[QB];
        _mm512_storeu_ps(inv, _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_loadu_ps(s + hd * QB + QB)));
        for (long i = 0; i < qn; i++) {
            float *o = out + (q0 + i) * ldo;
            for (long d = 0; d < hd; d++) o[d] = s[d * QB + i] * inv[i];
        }
    }
}
