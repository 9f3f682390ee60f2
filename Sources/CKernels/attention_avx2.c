#include "CKernels.h"
#include "internal_avx2.h"

// The flash attention of attention.c for CPUs with AVX2 and FMA but no AVX-512: the same
// transposed layout (one lane per query, the softmax over keys down the rows), the same key
// blocks of GS_ATTENTION_KB with the online softmax, the same scratch, and per query the same
// chain of operations (scores as FMAs over the head dimension from zero, max, exp, sums in key
// order, the rescaled partial output), so it gives the AVX-512 kernel's bits. Without it, these
// CPUs computed each head's full score matrix with OpenBLAS (4096×4096 in the global blocks) and
// spent a tenth of an encode in its softmax.
//
// The register tiles hold 12 vectors of 8 queries: R keys (or head dimensions) × NV vectors with
// NV = ⌈queries/8⌉ of the block (1…4) and R = 12/NV, so a block of 32 queries runs 3 × 4 tiles
// and a short block does not pay for empty lanes.

enum { QB = GS_ATTENTION_QB, KT = GS_ATTENTION_KT, KB = GS_ATTENTION_KB };

/// Sᵀ rows [0, R) of a key tile (`kp` at its row r0, rows KT apart per head dimension), NV vectors
/// of 8 queries: st[r][:] = Σ_d kp[d][r] · qt[d][:].
GS_INLINE_AVX2 void scores_tile(const int R, const int NV, const float *kp, const float *qt, long hd, float *st) {
    __m256 acc[12][4];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_setzero_ps();
    for (long d = 0; d < hd; d++) {
        __m256 b[4];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm256_loadu_ps(qt + d * QB + 8 * u);
        const float *a = kp + d * KT;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(a + r);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_fmadd_ps(x, b[u], acc[r][u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm256_storeu_ps(st + r * QB + 8 * u, acc[r][u]);
}

/// Oᵀ rows [d0, d0+R) (`v` and `ot` at d0): ot[d][:] = ot[d][:]·corr + Σ_j v[j][d] · pt[j][:].
GS_INLINE_AVX2 void values_tile(const int R, const int NV, const float *v, long ldv, const float *pt, long kbn, float *ot,
                                const __m256 *corr) {
    __m256 acc[12][4];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_mul_ps(_mm256_loadu_ps(ot + r * QB + 8 * u), corr[u]);
    for (long j = 0; j < kbn; j++) {
        __m256 b[4];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm256_loadu_ps(pt + j * QB + 8 * u);
        const float *a = v + j * ldv;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(a + r);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_fmadd_ps(x, b[u], acc[r][u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm256_storeu_ps(ot + r * QB + 8 * u, acc[r][u]);
}

/// One query block (NV vectors of 8 queries) against one key block of `kbn` keys.
GS_INLINE_AVX2 void query_block(const int NV, const float *kp, const float *qt, float *st, const float *vb, long ldv,
                                long kbn, long hd, float *s) {
    const int R = 12 / NV;
    long tiles = (kbn + KT - 1) / KT;
    for (long t = 0; t < tiles; t++) {
        long rows = kbn - t * KT;
        // Rows past the block's last key score its zero padding; the softmax never reads them.
        for (long r0 = 0; r0 < rows && r0 < KT; r0 += R) scores_tile(R, NV, kp + t * hd * KT + r0, qt, hd, st + (t * KT + r0) * QB);
    }
    __m256 corr[4];
    _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) {
        float *ms = s + hd * QB + 8 * u, *ls = s + hd * QB + QB + 8 * u;
        __m256 mOld = _mm256_loadu_ps(ms);
        __m256 mx = mOld;
        for (long j = 0; j < kbn; j++) mx = _mm256_max_ps(mx, _mm256_loadu_ps(st + j * QB + 8 * u));
        // exp(−∞ − m) on the first block: the partial output is zero, so any finite factor works.
        corr[u] = gs_exp256(_mm256_sub_ps(mOld, mx));
        __m256 sum = _mm256_setzero_ps();
        for (long j = 0; j < kbn; j++) {
            __m256 p = gs_exp256(_mm256_sub_ps(_mm256_loadu_ps(st + j * QB + 8 * u), mx));
            _mm256_storeu_ps(st + j * QB + 8 * u, p);
            sum = _mm256_add_ps(sum, p);
        }
        _mm256_storeu_ps(ls, _mm256_fmadd_ps(_mm256_loadu_ps(ls), corr[u], sum));
        _mm256_storeu_ps(ms, mx);
    }
    long d0 = 0;
    for (; d0 + R <= hd; d0 += R) values_tile(R, NV, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
    for (; d0 < hd; d0++) values_tile(1, NV, vb + d0, ldv, st, kbn, s + d0 * QB, corr);
}

GS_TARGET_AVX2 void gs_attention_head_avx2(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
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
        for (long i = 0; i < QB; i++) { s[hd * QB + i] = -INFINITY; s[hd * QB + QB + i] = 0; }
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
            float *s = state + b * stateSize;
            switch ((qn + 7) / 8) {
            case 1: query_block(1, kp, qt, st, vb, ldv, kbn, hd, s); break;
            case 2: query_block(2, kp, qt, st, vb, ldv, kbn, hd, s); break;
            case 3: query_block(3, kp, qt, st, vb, ldv, kbn, hd, s); break;
            default: query_block(4, kp, qt, st, vb, ldv, kbn, hd, s); break;
            }
        }
    }
    for (long b = 0; b < nqb; b++) {
        long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        float *s = state + b * stateSize;
        for (long i = 0; i < qn; i++) {
            float *o = out + (q0 + i) * ldo;
            float inv = 1.0f / s[hd * QB + QB + i];
            for (long d = 0; d < hd; d++) o[d] = s[d * QB + i] * inv;
        }
    }
}
