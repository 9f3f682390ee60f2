#include "CKernels.h"
#include "internal_avx2.h"

#include <stdint.h>

// The flash attention of attention_avx2.c with 16-bit fixed-point products (`--precision int16`'s
// global blocks; any CPU with AVX2): both products run on `vpmaddwd` (16 products an
// instruction, where an fp32 FMA does 8) with exact int32 sums, as in gemm_i16_avx2.c; the
// scores, the online softmax, its sums and the output stay fp32.
//
// - q·kᵀ: each query (row of q) is rounded to ±4095 steps of its largest magnitude, each key to
//   ±2047 of its own; a score is the int32 sum over the head dimension (at most 256 · 4095 · 2047
//   < 2³¹) times the two steps and the softmax scale.
// - p·v: the softmax weights, in [0, 1] after the running max is subtracted, are rounded to
//   multiples of 1/32767 (an absolute error of at most 1.5e-5 per weight), and the softmax's sums
//   are those of the rounded weights; each head dimension of
//   a key block's values to ±2047 steps of its largest magnitude in the block. A chunk of 32 keys
//   sums to at most 32 · 32767 · 2047 < 2³¹, then goes into the fp32 output (as the fp32 kernel's
//   chunks do).
//
// Layouts (int16 pairs, one 32-bit word each): every query block [hd/2][QB][2] (a vector holds 8
// queries' pair); a key tile [hd/2][KT][2] (broadcast a key's pair); the block's values
// [kbn/2][hd][2] (broadcast a head dimension's pair of keys); the weights [kbn/2][QB][2].

enum { QB = GS_ATTENTION_QB, KT = GS_ATTENTION_KT, KB = GS_ATTENTION_KB, JC = 32 };

/// A pair of int16 read as one 32-bit word: the pairs are written as int16, so the word type
/// may alias them.
typedef int32_t word_t __attribute__((may_alias));
enum { Q_MAX = 4095, K_MAX = 2047, P_MAX = 32767, V_MAX = 2047, HD_MAX = 256 };
_Static_assert((long)HD_MAX * Q_MAX * K_MAX < 2147483648L, "a score's sum must fit int32");
_Static_assert((long)JC * P_MAX * V_MAX < 2147483648L, "a chunk's sum must fit int32");

/// Pairs (32-bit words) that hold n int16: ⌈n/2⌉.
static long pairs_of(long n) { return (n + 1) / 2; }

size_t gs_attention_i16_avx2_scratch_count(long nq, long nk, long hd) {
    (void)nk;
    long nqb = (nq + QB - 1) / QB, hdp = pairs_of(hd);
    long tiles = (KB + KT - 1) / KT;
    // queries (+ their steps), keys (+ steps), values (+ steps per head dimension), scores,
    // weights, the state (and slack).
    return (size_t)(nqb * (hdp * QB + QB) + tiles * hdp * KT + KB + (KB / 2) * hd + hd + KB * QB + (KB / 2) * QB +
                    nqb * (hd * QB + 2 * QB) + 64);
}

/// Rounds `n` values of a row (`stride` apart) to ±limit steps of their largest magnitude;
/// returns the step (gs_i16_step: 0 for a row of zeros, NaN for one with a NaN or infinity) and
/// writes the integers.
static float quantize(const float *row, long stride, long n, float limit, int16_t *out, long outStride) {
    float largest = 0, step, inverse;
    int nonFinite = 0;
    for (long i = 0; i < n; i++) {
        largest = fmaxf(largest, fabsf(row[i * stride]));
        nonFinite |= !isfinite(row[i * stride]);
    }
    gs_i16_step(nonFinite ? NAN : largest, limit, &step, &inverse);
    for (long i = 0; i < n; i++) out[i * outStride] = (int16_t)lrintf(row[i * stride] * inverse);
    return step;
}

/// Query block b: [hdp][QB][2] int16 (zero for missing queries and the odd dimension's pair
/// partner) and each query's step times the softmax scale.
static void load_queries(const float *q, long ldq, long qn, long hd, float scale, int16_t *dst, float *steps) {
    long hdp = pairs_of(hd);
    for (long i = 0; i < hdp * QB * 2; i++) dst[i] = 0;
    for (long i = 0; i < QB; i++) steps[i] = 0;
    for (long i = 0; i < qn; i++) {
        // Dimension d of query i at dst[((d/2)·QB + i)·2 + d%2].
        int16_t tmp[HD_MAX];
        float step = quantize(q + i * ldq, 1, hd, Q_MAX, tmp, 1);
        for (long d = 0; d < hd; d++) dst[((d / 2) * QB + i) * 2 + d % 2] = tmp[d];
        steps[i] = step * scale;
    }
}

/// A key block's tiles [tile][hdp][KT][2] (zero past kbn) and each key's step.
static void pack_keys(const float *k, long ldk, long kbn, long hd, int16_t *dst, float *steps) {
    long hdp = pairs_of(hd), tiles = (kbn + KT - 1) / KT;
    for (long i = 0; i < tiles * hdp * KT * 2; i++) dst[i] = 0;
    for (long j = kbn; j < tiles * KT; j++) steps[j] = 0;  // the padding keys' scores are never read
    for (long j = 0; j < kbn; j++) {
        int16_t tmp[HD_MAX];
        steps[j] = quantize(k + j * ldk, 1, hd, K_MAX, tmp, 1);
        int16_t *tile = dst + (j / KT) * hdp * KT * 2;
        for (long d = 0; d < hd; d++) tile[((d / 2) * KT + j % KT) * 2 + d % 2] = tmp[d];
    }
}

/// A key block's values [kbn/2][hd][2] (zero for an odd block's last partner) and each head
/// dimension's step over the block.
static void pack_values(const float *v, long ldv, long kbn, long hd, int16_t *dst, float *steps) {
    long kp = pairs_of(kbn);
    int16_t column[KB];
    for (long d = 0; d < hd; d++) {
        steps[d] = quantize(v + d, ldv, kbn, V_MAX, column, 1);
        for (long j = 0; j < 2 * kp; j++) dst[((j / 2) * hd + d) * 2 + j % 2] = j < kbn ? column[j] : 0;
    }
}

/// Scores of keys [0, R) of a tile against NV vectors of 8 queries: st[r][:] = Σ over pairs ·
/// key step · query steps.
GS_INLINE_AVX2 void scores_tile(const int R, const int NV, const word_t *kp, const word_t *qt, long hdp, const float *kstep,
                                const __m256 *qstep, float *st) {
    __m256i acc[12][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_setzero_si256();
    for (long d = 0; d < hdp; d++) {
        __m256i b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm256_loadu_si256((const __m256i *)(qt + d * QB + 8 * u));
        const word_t *a = kp + d * KT;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m256i x = _mm256_set1_epi32(a[r]);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_add_epi32(acc[r][u], _mm256_madd_epi16(x, b[u]));
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
        __m256 ks = _mm256_set1_ps(kstep[r]);
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++)
            _mm256_storeu_ps(st + r * QB + 8 * u, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[r][u]), qstep[u]), ks));
    }
}

/// Oᵀ rows [d0, d0+R) over key pairs [0, pn) of a chunk: ot[d][:] (·corr on the block's first
/// chunk) += (Σ v pairs · weight pairs) · weight step · value step of d.
GS_INLINE_AVX2 void values_tile(const int R, const int NV, const word_t *v, long hd, const word_t *pt, long pn, float *ot,
                                const float *vstep, const __m256 *corr, int first) {
    __m256i acc[12][2];
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_setzero_si256();
    for (long j = 0; j < pn; j++) {
        __m256i b[2];
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) b[u] = _mm256_loadu_si256((const __m256i *)(pt + j * QB + 8 * u));
        const word_t *a = v + j * hd;
        _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
            __m256i x = _mm256_set1_epi32(a[r]);
            _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) acc[r][u] = _mm256_add_epi32(acc[r][u], _mm256_madd_epi16(x, b[u]));
        }
    }
    _Pragma("clang loop unroll(full)") for (int r = 0; r < R; r++) {
        __m256 s = _mm256_set1_ps(vstep[r] * (1.0f / P_MAX));
        _Pragma("clang loop unroll(full)") for (int u = 0; u < NV; u++) {
            __m256 o = _mm256_loadu_ps(ot + r * QB + 8 * u);
            if (first) o = _mm256_mul_ps(o, corr[u]);
            _mm256_storeu_ps(ot + r * QB + 8 * u, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[r][u]), s, o));
        }
    }
}

/// One query block of `nv` vectors of 8 queries (1…4) against one key block of `kbn` keys.
GS_INLINE_AVX2 void query_block(long nv, const word_t *kp, const float *kstep, const word_t *qt, const float *qsteps, float *st,
                                word_t *pt, const word_t *vp, const float *vstep, long kbn, long hd, float *s) {
    const long hdp = pairs_of(hd), tiles = (kbn + KT - 1) / KT, kbp = pairs_of(kbn);
    // Scores, pairs of vectors at a time (12 accumulators), 12/NV keys per register tile.
    for (long u0 = 0; u0 < nv; u0 += 2) {
        const int NV = nv - u0 >= 2 ? 2 : 1;
        __m256 qs[2] = {_mm256_loadu_ps(qsteps + 8 * u0), NV == 2 ? _mm256_loadu_ps(qsteps + 8 * u0 + 8) : _mm256_setzero_ps()};
        for (long t = 0; t < tiles; t++) {
            long rows = kbn - t * KT;
            const word_t *tile = kp + t * hdp * KT;
            // Rows past the block's last key score its zero padding; the softmax never reads them.
            for (long r0 = 0; r0 < rows && r0 < KT; r0 += 12 / NV) {
                if (NV == 2) scores_tile(6, 2, tile + r0, qt + 8 * u0, hdp, kstep + t * KT + r0, qs, st + (t * KT + r0) * QB + 8 * u0);
                else scores_tile(12, 1, tile + r0, qt + 8 * u0, hdp, kstep + t * KT + r0, qs, st + (t * KT + r0) * QB + 8 * u0);
            }
        }
    }
    // The online softmax in fp32, as attention_avx2.c; the weights are also rounded to pairs.
    __m256 corr[4];
    const __m256 pmax = _mm256_set1_ps(P_MAX);
    for (long u = 0; u < nv; u++) {
        float *ms = s + hd * QB + 8 * u, *ls = s + hd * QB + QB + 8 * u;
        __m256 mx = gs_attention_block_max(st + 8 * u, kbn, ms, &corr[u]);
        // The sums are of the rounded weights (in steps), so that the output is a weighted mean
        // of the values under exactly the weights its products used: a weight below half a step
        // drops out of both instead of out of the numerator alone.
        __m256 sum = _mm256_setzero_ps();
        for (long j = 0; j < 2 * kbp; j += 2) {
            __m256 p0 = gs_exp256(_mm256_sub_ps(_mm256_loadu_ps(st + j * QB + 8 * u), mx));
            __m256 p1 = _mm256_setzero_ps();
            if (j + 1 < kbn) p1 = gs_exp256(_mm256_sub_ps(_mm256_loadu_ps(st + (j + 1) * QB + 8 * u), mx));
            __m256 r0 = _mm256_round_ps(_mm256_min_ps(_mm256_mul_ps(p0, pmax), pmax), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m256 r1 = _mm256_round_ps(_mm256_min_ps(_mm256_mul_ps(p1, pmax), pmax), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            sum = _mm256_add_ps(_mm256_add_ps(sum, r0), r1);
            __m256i q0 = _mm256_cvttps_epi32(r0), q1 = _mm256_cvttps_epi32(r1);
            _mm256_storeu_si256((__m256i *)(pt + (j / 2) * QB + 8 * u), _mm256_or_si256(q0, _mm256_slli_epi32(q1, 16)));
        }
        _mm256_storeu_ps(ls, _mm256_fmadd_ps(_mm256_loadu_ps(ls), corr[u], _mm256_mul_ps(sum, _mm256_set1_ps(1.0f / P_MAX))));
        _mm256_storeu_ps(ms, mx);
    }
    // The weighted sum, chunk by chunk of JC keys (JC/2 pairs), 12/NV head dimensions a tile.
    for (long u0 = 0; u0 < nv; u0 += 2) {
        const int NV = nv - u0 >= 2 ? 2 : 1;
        const int R = 12 / NV;
        for (long j0 = 0; j0 < kbp; j0 += JC / 2) {
            long pn = kbp - j0 < JC / 2 ? kbp - j0 : JC / 2;
            const word_t *vc = vp + j0 * hd, *pc = pt + j0 * QB + 8 * u0;
            float *ot = s + 8 * u0;
            long d0 = 0;
            if (NV == 2) {
                for (; d0 + R <= hd; d0 += R) values_tile(6, 2, vc + d0, hd, pc, pn, ot + d0 * QB, vstep + d0, corr + u0, j0 == 0);
                for (; d0 < hd; d0++) values_tile(1, 2, vc + d0, hd, pc, pn, ot + d0 * QB, vstep + d0, corr + u0, j0 == 0);
            } else {
                for (; d0 + R <= hd; d0 += R) values_tile(12, 1, vc + d0, hd, pc, pn, ot + d0 * QB, vstep + d0, corr + u0, j0 == 0);
                for (; d0 < hd; d0++) values_tile(1, 1, vc + d0, hd, pc, pn, ot + d0 * QB, vstep + d0, corr + u0, j0 == 0);
            }
        }
    }
}

GS_TARGET_AVX2 int gs_attention_head_i16_avx2(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                                              float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch) {
    if (hd > HD_MAX || hd <= 0) return -1;
    if (nq <= 0) return 0;
    const long nqb = (nq + QB - 1) / QB, hdp = pairs_of(hd), tiles = (KB + KT - 1) / KT;
    word_t *queries = (word_t *)scratch;                // [nqb][hdp][QB]
    float *qsteps = (float *)(queries + nqb * hdp * QB);  // [nqb][QB]
    word_t *kp = (word_t *)(qsteps + nqb * QB);           // [tiles][hdp][KT]
    float *ksteps = (float *)(kp + tiles * hdp * KT);     // [KB]
    word_t *vp = (word_t *)(ksteps + KB);                 // [KB/2][hd]
    float *vsteps = (float *)(vp + (KB / 2) * hd);        // [hd]
    float *st = vsteps + hd;                              // [KB][QB]: scores, then weights
    word_t *pt = (word_t *)(st + KB * QB);                // [KB/2][QB]: the weights' pairs
    float *state = (float *)(pt + (KB / 2) * QB);         // per query block: Oᵀ [hd][QB], m [QB], l [QB]
    const long stateSize = hd * QB + 2 * QB;
    gs_attention_start(state, nqb, hd);
    for (long b = 0; b < nqb; b++) {
        long q0 = b * QB, qn = nq - q0 < QB ? nq - q0 : QB;
        load_queries(q + q0 * ldq, ldq, qn, hd, scale, (int16_t *)(queries + b * hdp * QB), qsteps + b * QB);
    }
    for (long kb0 = 0; kb0 < nk; kb0 += KB) {
        long kbn = nk - kb0 < KB ? nk - kb0 : KB;
        pack_keys(k + kb0 * ldk, ldk, kbn, hd, (int16_t *)kp, ksteps);
        pack_values(v + kb0 * ldv, ldv, kbn, hd, (int16_t *)vp, vsteps);
        for (long b = 0; b < nqb; b++) {
            long qn = nq - b * QB < QB ? nq - b * QB : QB;
            query_block((qn + 7) / 8, kp, ksteps, queries + b * hdp * QB, qsteps + b * QB, st, pt, vp, vsteps, kbn, hd,
                        state + b * stateSize);
        }
    }
    gs_attention_finish(state, nq, hd, out, ldo);
    return 0;
}
