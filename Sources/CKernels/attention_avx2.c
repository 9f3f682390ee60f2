#include "CKernels.h"
#include "internal_avx2.h"

// The flash attention of attention.c for CPUs with AVX2 and FMA but no AVX-512: the same
// transposed layout (one lane per query, the softmax over keys down the rows), the same key
// blocks of GS_ATTENTION_KB with the online softmax (its scratch also holds the packed values and
// every block's queries), and per query the same chain of operations (scores as FMAs over the
// head dimension from zero, max, exp, sums in key order, the rescaled partial output), so it
// gives the AVX-512 kernel's bits. Without it, these CPUs computed each head's full score matrix
// with OpenBLAS (4096×4096 in the global blocks) and spent a tenth of an encode in its softmax.
//
// The register tiles hold 12 accumulators: 6 keys (or head dimensions) × 2 vectors of 8 queries,
// or 12 × 1 for a last odd vector, so a short block does not pay for empty lanes.
//
// Unlike attention.c, the value rows of a key block are packed (they are columns of a fused qkv
// matrix, rows 4.6 KB apart in the global blocks), and the weighted sum runs over the block in
// chunks of JC keys, so that a chunk's probabilities and values stay in L1 while every head
// dimension's tile reads them: the scores, probabilities and values of a whole block do not fit
// the 32 KB L1 and 512 KB L2 of these CPUs together, and the first version ran at a quarter of
// the FMA peak. Chunking is exact: the partial sums go to memory and come back unchanged.

enum { QB = GS_ATTENTION_QB, KT = GS_ATTENTION_KT, KB = GS_ATTENTION_KB, JC = 32 };

size_t gs_attention_avx2_scratch_count(long nq, long nk, long hd) {
    (void)nk;
    long nqb = (nq + QB - 1) / QB;
    // gs_attention_head_avx2's layout: kp, vp, every block's queries, st, the state (and slack).
    return (size_t)(2 * KB * hd + nqb * hd * QB + KB * QB + nqb * (hd * QB + 2 * QB) + 64);
}

/// Sᵀ rows [0, R) of a key tile (`kp` at its row r0, rows KT apart per head dimension), NV vectors
/// of 8 queries: st[r][:] = Σ_d kp[d][r] · qt[d][:].
GS_INLINE_AVX2 void scores_tile(const int R, const int NV, const float *kp, const float *qt, long hd, float *st) {
    __m256 acc[12][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_setzero_ps();
    for (long d = 0; d < hd; d++) {
        __m256 b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm256_loadu_ps(qt + d * QB + 8 * u);
        const float *a = kp + d * KT;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(a + r);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_fmadd_ps(x, b[u], acc[r][u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm256_storeu_ps(st + r * QB + 8 * u, acc[r][u]);
}

/// Oᵀ rows [d0, d0+R) (`v` and `ot` at d0) over keys [0, kbn) of a chunk: ot[d][:] += Σ_j v[j][d] · pt[j][:],
/// after ot[d][:]·corr on the block's first chunk (`first`).
GS_INLINE_AVX2 void values_tile(const int R, const int NV, const float *v, long ldv, const float *pt, long kbn, float *ot,
                                const __m256 *corr, int first) {
    __m256 acc[12][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) {
        acc[r][u] = _mm256_loadu_ps(ot + r * QB + 8 * u);
        if (first) acc[r][u] = _mm256_mul_ps(acc[r][u], corr[u]);
    }
    for (long j = 0; j < kbn; j++) {
        __m256 b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm256_loadu_ps(pt + j * QB + 8 * u);
        const float *a = v + j * ldv;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m256 x = _mm256_broadcast_ss(a + r);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_fmadd_ps(x, b[u], acc[r][u]);
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) _mm256_storeu_ps(ot + r * QB + 8 * u, acc[r][u]);
}

/// Sᵀ rows [0, kbn) of a key block for NV (1 or 2) vectors of 8 queries from `qt` into `st`
/// (both at the vectors' first lane), R = 12/NV keys per register tile.
GS_INLINE_AVX2 void block_scores(const int NV, const float *kp, const float *qt, float *st, long kbn, long hd) {
    const int R = 12 / NV;
    long tiles = (kbn + KT - 1) / KT;
    for (long t = 0; t < tiles; t++) {
        long rows = kbn - t * KT;
        // Rows past the block's last key score its zero padding; the softmax never reads them.
        for (long r0 = 0; r0 < rows && r0 < KT; r0 += R) scores_tile(R, NV, kp + t * hd * KT + r0, qt, hd, st + (t * KT + r0) * QB);
    }
}

/// The weighted sum of a key block's values for NV (1 or 2) vectors of 8 queries (`st`, `ot` and
/// `corr` at the vectors' first lane), chunk by chunk of JC keys, R = 12/NV head dimensions per tile.
GS_INLINE_AVX2 void block_values(const int NV, const float *vp, const float *st, float *ot, const __m256 *corr, long kbn,
                                 long hd) {
    const int R = 12 / NV;
    for (long j0 = 0; j0 < kbn; j0 += JC) {
        long jn = kbn - j0 < JC ? kbn - j0 : JC;
        const float *vc = vp + j0 * hd, *pc = st + j0 * QB;
        long d0 = 0;
        for (; d0 + R <= hd; d0 += R) values_tile(R, NV, vc + d0, hd, pc, jn, ot + d0 * QB, corr, j0 == 0);
        for (; d0 < hd; d0++) values_tile(1, NV, vc + d0, hd, pc, jn, ot + d0 * QB, corr, j0 == 0);
    }
}

/// One query block of `nv` vectors of 8 queries (1…4) against one key block of `kbn` keys
/// (values `vp` packed `[kbn][hd]`). The products run on pairs of vectors: 12 accumulators,
/// two operand vectors and a broadcast fill the 16 registers (four vectors would spill).
GS_INLINE_AVX2 void query_block(long nv, const float *kp, const float *qt, float *st, const float *vp, long kbn, long hd,
                                float *s) {
    for (long u0 = 0; u0 < nv; u0 += 2) {
        if (nv - u0 >= 2) block_scores(2, kp, qt + 8 * u0, st + 8 * u0, kbn, hd);
        else block_scores(1, kp, qt + 8 * u0, st + 8 * u0, kbn, hd);
    }
    __m256 corr[4];
    for (long u = 0; u < nv; u++) {
        float *ms = s + hd * QB + 8 * u, *ls = s + hd * QB + QB + 8 * u;
        __m256 mx = gs_attention_block_max(st + 8 * u, kbn, ms, &corr[u]);
        __m256 sum = _mm256_setzero_ps();
        for (long j = 0; j < kbn; j++) {
            __m256 p = gs_exp256(_mm256_sub_ps(_mm256_loadu_ps(st + j * QB + 8 * u), mx));
            _mm256_storeu_ps(st + j * QB + 8 * u, p);
            sum = _mm256_add_ps(sum, p);
        }
        _mm256_storeu_ps(ls, _mm256_fmadd_ps(_mm256_loadu_ps(ls), corr[u], sum));
        _mm256_storeu_ps(ms, mx);
    }
    for (long u0 = 0; u0 < nv; u0 += 2) {
        if (nv - u0 >= 2) block_values(2, vp, st + 8 * u0, s + 8 * u0, corr + u0, kbn, hd);
        else block_values(1, vp, st + 8 * u0, s + 8 * u0, corr + u0, kbn, hd);
    }
}

GS_TARGET_AVX2 void gs_attention_head_avx2(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                                           float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch) {
    if (nq <= 0) return;
    long nqb = (nq + QB - 1) / QB;
    float *kp = scratch;                 // [KB/KT tiles][hd][KT]
    float *vp = kp + KB * hd;            // [KB][hd]: the key block's values
    // [nqb][hd][QB]: every query block's scaled queries, transposed once (loading them again for
    // each key block took 7 % of a global head: 4096 queries, 11 key blocks).
    float *queries = vp + KB * hd;
    float *st = queries + nqb * hd * QB; // [KB][QB]: scores, then probabilities
    float *state = st + KB * QB;         // per query block: Oᵀ [hd][QB], m [QB], l [QB]
    long stateSize = hd * QB + 2 * QB;
    gs_attention_start(state, nqb, hd);
    for (long b = 0; b < nqb; b++) {
        long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        gs_attention_load_queries(q + q0 * ldq, ldq, qn, hd, scale, queries + b * hd * QB);
    }
    for (long kb0 = 0; kb0 < nk; kb0 += KB) {
        long kbn = nk - kb0 < KB ? nk - kb0 : KB;
        gs_attention_pack_keys(k + kb0 * ldk, ldk, kbn, hd, kp);
        for (long j = 0; j < kbn; j++) {
            const float *row = v + (kb0 + j) * ldv;
            for (long d = 0; d < hd; d++) vp[j * hd + d] = row[d];
        }
        for (long b = 0; b < nqb; b++) {
            long qn = nq - b * QB < QB ? nq - b * QB : QB;
            query_block((qn + 7) / 8, kp, queries + b * hd * QB, st, vp, kbn, hd, state + b * stateSize);
        }
    }
    gs_attention_finish(state, nq, hd, out, ldo);
}
