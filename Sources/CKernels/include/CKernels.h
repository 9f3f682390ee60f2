#ifndef GEOSAM2_CKERNELS_H
#define GEOSAM2_CKERNELS_H

// Hand-written AVX-512 kernels for the hot loops of the encoder and decoder, and AVX2 versions
// of the encoder's (packed GEMM, flash attention, layer norm, GELU) and of the elementwise ones for
// CPUs without AVX-512.
//
// Every entry point is compiled for its instruction set with a function-level target attribute,
// so the package needs no special compiler flags; callers must check `gs_has_avx512()` (or
// `gs_has_avx2_fma()` for the `_avx2` functions) first and fall back to the portable
// Swift/OpenBLAS paths when it returns 0. Matrices are row-major.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the CPU supports AVX-512 F/DQ/BW/VL (checked once), else 0.
int gs_has_avx512(void);

/// A spin-wait hint (`pause`): lets the other hardware thread of the core run while one waits.
void gs_cpu_relax(void);

/// CPUs in this process's affinity mask (`sched_getaffinity`), or 0 when it cannot be read.
int gs_affinity_cpu_count(void);

/// Makes glibc keep freed memory for reuse (no mmap for large blocks, no heap trimming); returns
/// 1 if set, 0 where the C library is not glibc.
int gs_retain_freed_memory(void);

/// Width of one packed weight panel (output features per panel).
enum { GS_PANEL = 32 };

/// Flags of `gs_gemm_packed`: add to the existing output; apply exact GELU to the result.
enum { GS_ACC = 1, GS_GELU = 2 };

/// Floats needed to pack an `[n, k]` weight matrix (`nn.Linear` layout).
size_t gs_packed_count(long n, long k);

/// Packs `w` (`[n, k]`, row stride `ldw`) into k-major panels of GS_PANEL output features,
/// zero-padded to a multiple of GS_PANEL: element (j, t) goes to
/// `packed[(j / 32)·k·32 + t·32 + j % 32]`.
void gs_pack_weight(const float *w, long ldw, long n, long k, float *packed);

/// `y[r, j] = Σ_t x[r, t]·w[j, t] (+ bias[j]) (+ y[r, j] when accumulate)` for rows `[0, m)` and the
/// output features of panels `[panel_begin, panel_end)`; `packed` comes from `gs_pack_weight`.
void gs_linear_packed(const float *x, long ldx, const float *packed, const float *bias, float *y, long ldy,
                      long m, long n, long k, long panel_begin, long panel_end, int accumulate);

/// The same product with a general operand: element (r, t) of x at `x[r·xs + t·xk]` (so a
/// transposed operand is `xs = 1, xk = ld`). `flags`: GS_ACC adds the result (with the bias) to
/// y; GS_GELU applies GELU to the final value.
void gs_gemm_packed(const float *x, long xs, long xk, const float *packed, const float *bias, float *y, long ldy,
                    long m, long n, long k, long panel_begin, long panel_end, int flags);

/// `gs_gemm_packed` without accumulation, writing the transposed result: `y[j, r]` (row stride
/// `ldy`) for output feature j of row r. For products whose consumer wants the other layout.
void gs_gemm_packed_transposed(const float *x, long xs, long xk, const float *packed, const float *bias,
                               float *y, long ldy, long m, long n, long k, long panel_begin, long panel_end);

/// Softmax over groups of `group` consecutive rows of `[groups·group, columns]` (row stride
/// `ld`), independently for each column, in place.
void gs_softmax_row_groups(float *x, long groups, long group, long columns, long ld);

/// Packs a `[k, n]` row-major matrix (row stride `ldb`) as the right operand of
/// `gs_gemm_packed`, i.e. like `gs_pack_weight` of its transpose.
void gs_pack_kn(const float *b, long ldb, long k, long n, float *packed);

/// Softmax down each column of `[rows, columns]` (row stride `ld`), in place.
void gs_softmax_columns(float *x, long rows, long columns, long ld);

/// `postprocess_masks` + threshold for one low-resolution logit map `[h, w]`: bilinear
/// upsampling (align_corners=False, no antialias) to `[oh, ow]` and `mask = value > 0`, written
/// as 0/1 bytes. The width pass runs once per source row, so the cost is one blend per output
/// pixel. Returns 0, or −1 (mask untouched) when its scratch memory cannot be allocated.
int gs_upsample_threshold(const float *logits, long h, long w, unsigned char *mask, long oh, long ow);

/// `gs_upsample_threshold` (with `> threshold` for `> 0`) returning the runs of 1s instead of the bytes, for the top-left
/// `rows × columns` of the `[oh, ow]` mask: run r covers pixels [starts[r], ends[r]) of its row, and
/// the runs of row y are row_offsets[y]..<row_offsets[y + 1] (row_offsets has rows + 1 entries).
/// Same arithmetic, so the same pixels. Returns the number of runs, −1 when more than `capacity`,
/// −2 when its scratch memory cannot be allocated.
long gs_upsample_threshold_runs(const float *logits, long h, long w, long oh, long ow, long rows, long columns,
                                float threshold, int *starts, int *ends, long capacity, long *row_offsets);

/// The automatic mask generator's statistics of one upsampled logit map (the same arithmetic as
/// `gs_upsample_threshold`), without storing it: counts[0..2] = how many values are `> high`,
/// `> low` and `> threshold`, and box = the inclusive box (x0, y0, x1, y1) of the values
/// `> threshold` (all 0 when there are none). Returns 0, or −1 when its scratch cannot be allocated.
int gs_upsample_statistics(const float *logits, long h, long w, long oh, long ow, float high, float low, float threshold,
                           long *counts, long *box);

/// The tail of a ConvTranspose2d(k=2, s=2) done as one GEMM, for a band of `rows` input rows of
/// width `w`: scatters `products` (`[rows·w, 4·oc]`, sub-pixel (dy, dx) at column block dy·2+dx)
/// to the `2·rows × 2w` output, adding `bias` and the channels-last `addend`, then optionally a
/// per-pixel LayerNorm (`lnw`/`lnb` non-null) and GELU. Writes the result to `out` (if non-null)
/// and, if `masks > 0`, the dot products with each row of `hyper` (`[masks, oc]`) to
/// `logits[k·plane + pixel]`. `addend`, `out` and `logits` point at the band's first output row.
/// At most 128 channels.
void gs_convt2x2_epilogue(const float *products, long rows, long w, long oc, const float *bias,
                          const float *addend, const float *lnw, const float *lnb, float eps, int gelu,
                          float *out, const float *hyper, long masks, float *logits, long plane);

/// 1 when the CPU also has AVX512_BF16 (for the opt-in bf16 encoder), else 0.
int gs_has_avx512_bf16(void);

/// bf16 elements needed to pack an `[n, k]` weight for `gs_gemm_bf16`.
size_t gs_packed_bf16_count(long n, long k);

/// Rounds `w` (`[n, k]`, row stride `ldw`) to bf16 (nearest even) in panels of 32 output
/// features, k-pairs interleaved: element (j, t) at `[(j/32)·⌈k/2⌉·64 + (t/2)·64 + (j%32)·2 + t%2]`.
void gs_pack_weight_bf16(const float *w, long ldw, long n, long k, uint16_t *packed);

/// `y = x·Wᵀ (+ bias)` with x rounded to bf16 and fp32 accumulation (`flags` as for
/// `gs_gemm_packed`), on the calling thread. Requires `gs_has_avx512_bf16()`.
void gs_gemm_bf16(const float *x, long ldx, const uint16_t *packed, const float *bias, float *y, long ldy,
                  long m, long n, long k, int flags);

/// int16 elements needed to pack an `[n, k]` weight for `gs_gemm_i16_avx2`.
size_t gs_packed_i16_count(long n, long k);

/// Quantises `w` (`[n, k]`, row stride `ldw`) to 16-bit fixed point for `gs_gemm_i16_avx2`: each
/// output feature j against its largest magnitude, its step in `scales[j]` (`n` floats), in halves
/// of 16 features, k-pairs interleaved: element (j, t) at `[(j/16)·⌈k/2⌉·32 + (t/2)·32 + (j%16)·2 + t%2]`.
void gs_pack_weight_i16(const float *w, long ldw, long n, long k, int16_t *packed, float *scales);

/// `y = x·Wᵀ (+ bias)` (`flags` as for `gs_gemm_packed`) with x quantised per row to 16-bit fixed
/// point and exact int32 sums over each k block, on the calling thread. Requires AVX2 and FMA.
void gs_gemm_i16_avx2(const float *x, long xs, const int16_t *packed, const float *scales, const float *bias, float *y,
                      long ldy, long m, long n, long k, int flags);

/// Scaled dot-product attention for one head over `nq` queries and `nk` keys:
/// `out = softmax(q·kᵀ·scale)·v`, with head dimension `hd`. Keys are processed in blocks with an
/// online (running-max) softmax, so memory stays small for 4096 keys.
/// `scratch` must hold `gs_attention_scratch_count(nq, nk, hd)` floats.
size_t gs_attention_scratch_count(long nq, long nk, long hd);
void gs_attention_head(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                       float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch);

/// `gs_attention_head` with bf16 products and fp32 accumulation (q·scale, k, the softmax weights
/// and v rounded to bf16 nearest even; scores, softmax and output in fp32), for the
/// reduced-precision encoder. `scratch` must hold `gs_attention_bf16_scratch_count(nq, nk, hd)`
/// floats. Requires `gs_has_avx512_bf16()`.
size_t gs_attention_bf16_scratch_count(long nq, long nk, long hd);
void gs_attention_head_bf16(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                            float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch);

/// `gs_attention_head` with 16-bit fixed-point products and exact int32 sums (queries, keys,
/// the softmax weights and the values rounded to fixed point; scores, softmax and output fp32),
/// for the int16 encoder. `scratch` must hold `gs_attention_i16_avx2_scratch_count(nq, nk, hd)`
/// floats. Returns -1 (nothing written) when hd is outside 1…256, else 0. Requires AVX2 and FMA.
size_t gs_attention_i16_avx2_scratch_count(long nq, long nk, long hd);
int gs_attention_head_i16_avx2(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                               float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch);

/// Exact GELU `0.5·x·(1 + erf(x/√2))` in place.
void gs_gelu(float *x, long count);

/// `exp` of each element in place (accurate to a few ulp; for tests).
void gs_exp(float *x, long count);

/// Layer norm over each row of `[rows, channels]` (row stride `channels`), in place, with the
/// biased variance, as `nn.LayerNorm`.
void gs_layer_norm(float *x, long rows, long channels, const float *weight, const float *bias, float eps);
/// `gs_layer_norm` that also stores each row's mean and 1/sqrt(variance + eps) (either may be NULL).
void gs_layer_norm_stats(float *x, long rows, long channels, const float *weight, const float *bias, float eps,
                         float *means, float *inverses);

/// Softmax of each row in place.
void gs_softmax_rows(float *x, long rows, long columns, long ld);

/// 1 when the CPU supports AVX2 and FMA (checked once), else 0: the `_avx2` kernels below, for
/// CPUs without AVX-512.
int gs_has_avx2_fma(void);

/// `gs_gelu`, `gs_exp`, `gs_layer_norm`, `gs_layer_norm_stats`, `gs_softmax_rows`,
/// `gs_softmax_columns`, `gs_softmax_row_groups` and `gs_convt2x2_epilogue` on AVX2 with FMA, with
/// the AVX-512 kernels' bits.
void gs_gelu_avx2(float *x, long count);
void gs_exp_avx2(float *x, long count);
void gs_layer_norm_avx2(float *x, long rows, long channels, const float *weight, const float *bias, float eps);
void gs_layer_norm_stats_avx2(float *x, long rows, long channels, const float *weight, const float *bias, float eps,
                              float *means, float *inverses);
void gs_softmax_rows_avx2(float *x, long rows, long columns, long ld);
void gs_softmax_columns_avx2(float *x, long rows, long columns, long ld);
void gs_softmax_row_groups_avx2(float *x, long groups, long group, long columns, long ld);
void gs_convt2x2_epilogue_avx2(const float *products, long rows, long w, long oc, const float *bias,
                               const float *addend, const float *lnw, const float *lnb, float eps, int gelu,
                               float *out, const float *hyper, long masks, float *logits, long plane);

/// `gs_upsample_threshold`, `gs_upsample_threshold_runs` and `gs_upsample_statistics` on AVX2 with
/// FMA: the same values, masks, runs and counts.
int gs_upsample_threshold_avx2(const float *logits, long h, long w, unsigned char *mask, long oh, long ow);
long gs_upsample_threshold_runs_avx2(const float *logits, long h, long w, long oh, long ow, long rows, long columns,
                                     float threshold, int *starts, int *ends, long capacity, long *row_offsets);
int gs_upsample_statistics_avx2(const float *logits, long h, long w, long oh, long ow, float high, float low, float threshold,
                                long *counts, long *box);

/// `gs_gemm_packed` and `gs_gemm_packed_transposed` on AVX2 with FMA, on the same packed weights,
/// with the same bits.
void gs_gemm_packed_avx2(const float *x, long xs, long xk, const float *packed, const float *bias, float *y, long ldy,
                         long m, long n, long k, long panel_begin, long panel_end, int flags);
void gs_gemm_packed_transposed_avx2(const float *x, long xs, long xk, const float *packed, const float *bias,
                                    float *y, long ldy, long m, long n, long k, long panel_begin, long panel_end);

/// `gs_attention_head` on AVX2 with FMA, with the same bits. `scratch` must hold
/// `gs_attention_avx2_scratch_count(nq, nk, hd)` floats.
size_t gs_attention_avx2_scratch_count(long nq, long nk, long hd);
void gs_attention_head_avx2(const float *q, long ldq, const float *k, long ldk, const float *v, long ldv,
                            float *out, long ldo, long nq, long nk, long hd, float scale, float *scratch);

/// Dequantises 16-bit feature codes stored channel-major (`[channels][plane]`) into floats laid
/// out channels-last (`out[p·channels + c]`), for pixels `[p_begin, p_end)`: value =
/// (float)q · scale[c] + offset[c] (a multiply, then an add). The codes are either signed int16
/// (`codes`, with `high`/`low` NULL) or split into byte planes, q = high·256 + low − 32768.
void gs_dequantize_transpose(const int16_t *codes, const uint8_t *high, const uint8_t *low, long channels, long plane,
                             long p_begin, long p_end, const float *scale, const float *offset, float *out);
/// `gs_dequantize_transpose` on AVX2 (8×8 blocks), with the same values.
void gs_dequantize_transpose_avx2(const int16_t *codes, const uint8_t *high, const uint8_t *low, long channels, long plane,
                                  long p_begin, long p_end, const float *scale, const float *offset, float *out);

/// CRC-32C (Castagnoli) of `length` bytes, continuing from `crc` (0 to start): the standard
/// check value of "123456789" is 0xE3069283. SSE4.2 `crc32` in three interleaved lanes where
/// the CPU has it, else a slicing-by-8 table loop.
uint32_t gs_crc32c(uint32_t crc, const void *data, size_t length);
/// The same with the table loop only (the plain reference the tests compare against).
uint32_t gs_crc32c_portable(uint32_t crc, const void *data, size_t length);
/// The CRC-32C of A followed by B from `crc1` = CRC(A), `crc2` = CRC(B) and B's length.
uint32_t gs_crc32c_combine(uint32_t crc1, uint32_t crc2, uint64_t length2);

#ifdef __cplusplus
}
#endif

#endif
