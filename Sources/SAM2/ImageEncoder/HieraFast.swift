import Kernels

// `MultiScaleBlock` on the AVX-512 kernels (the plain version in Hiera.swift stays the portable
// path and the reference).
//
// Written as in PyTorch, a block materialises several token-sized tensors (the windows, the fused
// qkv — 150 MB in stage 1 — the attention output, its projection, the unpartitioned copy, the MLP
// hidden layer) and each one costs page faults and a round trip through memory. Here the windowed
// attention runs group by group of windows (gather → qkv → attention → projection → add into the
// residual) and the MLP chunk by chunk of rows (norm → fc1+GELU → fc2 added into the residual),
// with small per-worker buffers that stay in cache.
//
// Padded window tokens (stage 3 and 4 at 1024²: 64² padded to 70², 32² to 35²) are zeros after the
// norm, so their q, k and v are just the qkv bias: they skip the qkv GEMM, and padded query rows
// (discarded by window_unpartition) skip the output projection.

/// The encoder's arithmetic precision.
public enum EncoderPrecision: String, Sendable, CaseIterable {
    /// fp32 everywhere: the default, matching PyTorch within the parity tolerances.
    case float32
    /// Opt-in: the Hiera blocks' linear layers (qkv, projections, MLPs — most of the work) take
    /// bf16 inputs and weights with fp32 accumulation (AVX512_BF16). Attention, norms and
    /// everything else stay fp32. Features differ from fp32 by about 1 % of their spread, so
    /// this does not meet the fp32 parity tolerances; falls back to fp32 on CPUs without bf16.
    case bfloat16
}

extension Linear {
    /// The layer's GEMM on the calling thread (packed fp32, or bf16 when asked and available).
    func applySingleThreaded(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, bias: UnsafePointer<Float>?, into y: UnsafeMutablePointer<Float>,
        yStride: Int, accumulate: Bool = false, gelu: Bool = false, bfloat16: Bool
    ) {
        if bfloat16, let w = packedBF16 {
            w.applySingleThreaded(x, rows: rows, xStride: xStride, bias: bias, into: y, yStride: yStride,
                                  accumulate: accumulate, gelu: gelu)
        } else if let w = packed {
            w.applySingleThreaded(x, rows: rows, xStride: xStride, bias: bias, into: y, yStride: yStride,
                                  accumulate: accumulate, gelu: gelu)
        } else {
            preconditionFailure("fast path without packed weights")
        }
    }
}

extension MultiScaleBlock {
    /// Runs the block in place: `x` `[H, W, dim]` becomes `[H', W', dimOut]`.
    func fast(_ x: inout Tensor, precision: EncoderPrecision = .float32) {
        let bf16 = precision == .bfloat16
        let normed = norm1(x)
        var y: Tensor
        if let proj {
            // Parity: the residual of a stage-change block is the pooled projection of the
            // *normalised* input, not of x.
            y = proj(normed)
            if poolsQueries { y = Pooling.maxPool2x2(y) }
        } else {
            y = x
        }
        x = Tensor(shape: [0])  // y is now the only reference: it is updated in place
        if windowSize > 0 {
            windowedAttention(normed, into: &y, bf16: bf16)
        } else {
            globalAttention(normed, into: &y, bf16: bf16)
        }
        mlpResidual(&y, bf16: bf16)
        x = y
    }

    /// `y += proj(attn(window_partition(normed)))` cropped by `window_unpartition`.
    private func windowedAttention(_ normed: Tensor, into y: inout Tensor, bf16: Bool) {
        let (h, w, c) = (normed.shape[0], normed.shape[1], normed.shape[2])
        let ws = windowSize
        let ph = h + (ws - h % ws) % ws, pw = w + (ws - w % ws) % ws
        let cols = pw / ws
        let windows = (ph / ws) * cols
        let tokens = ws * ws
        // Parity: after query pooling the window halves and the output grid is the pooled one.
        let outWs = poolsQueries ? ws / 2 : ws
        let queries = outWs * outWs
        let (oh, ow) = (y.shape[0], y.shape[1])
        let d = dimOut, heads = attn.heads, hd = dimOut / attn.heads, fused = 3 * dimOut
        let (qkvLayer, projLayer) = (attn.qkv, attn.proj)
        let group = max(1, 384 / tokens)  // windows per GEMM: a few hundred rows
        let qkvBias = attn.qkv.bias ?? Tensor(shape: [fused])
        let (src, out, qkvB, projBias) = (normed.pointer, y.mutablePointer, qkvBias.pointer, attn.proj.bias?.pointer)
        let scratchCount = AcceleratedOps.attentionScratchCount(queryCount: queries, keyCount: tokens, headDim: hd)
        Parallel.forEachChunk(windows, minimumChunk: group) { range in
            // Per-worker buffers, small enough to stay in cache.
            let rowsBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * tokens * c)
            let qkvBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * tokens * fused)
            let qBuf = UnsafeMutablePointer<Float>.allocate(capacity: poolsQueries ? group * queries * d : 1)
            let attBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * queries * d)
            let outBuf = UnsafeMutablePointer<Float>.allocate(capacity: group * queries * d)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: scratchCount)
            defer {
                rowsBuf.deallocate(); qkvBuf.deallocate(); qBuf.deallocate()
                attBuf.deallocate(); outBuf.deallocate(); scratch.deallocate()
            }
            var valid = [Bool](repeating: false, count: group * tokens)
            var targets = [Int](repeating: 0, count: group * queries)
            var w0 = range.lowerBound
            while w0 < range.upperBound {
                let g = min(group, range.upperBound - w0)
                // 1. Gather the image tokens of the windows, compactly (no padding rows).
                var count = 0
                for wi in 0..<g {
                    let (wy, wx) = ((w0 + wi) / cols, (w0 + wi) % cols)
                    for ty in 0..<ws {
                        for tx in 0..<ws {
                            let (yy, xx) = (wy * ws + ty, wx * ws + tx)
                            let inside = yy < h && xx < w
                            valid[wi * tokens + ty * ws + tx] = inside
                            if inside {
                                (rowsBuf + count * c).update(from: src + (yy * w + xx) * c, count: c)
                                count += 1
                            }
                        }
                    }
                }
                // 2. qkv of the real tokens; padding tokens get the bias alone.
                let full = g * tokens
                if count == full {
                    qkvLayer.applySingleThreaded(rowsBuf, rows: count, xStride: c, bias: qkvB, into: qkvBuf, yStride: fused,
                                                 bfloat16: bf16)
                } else {
                    // Compute into the tail, then spread forward (sources never lag behind targets).
                    let offset = full - count
                    qkvLayer.applySingleThreaded(rowsBuf, rows: count, xStride: c, bias: qkvB,
                                                 into: qkvBuf + offset * fused, yStride: fused, bfloat16: bf16)
                    var next = offset
                    for t in 0..<full {
                        let dst = qkvBuf + t * fused
                        if valid[t] {
                            if next != t { dst.update(from: qkvBuf + next * fused, count: fused) }
                            next += 1
                        } else {
                            dst.update(from: qkvB, count: fused)
                        }
                    }
                }
                // 3. Queries: pooled 2×2 within each window when the block pools (q only).
                var q = UnsafePointer(qkvBuf), qStride = fused
                if poolsQueries {
                    for wi in 0..<g {
                        Pooling.maxPool2x2(qkvBuf + wi * tokens * fused, height: ws, width: ws, channels: d,
                                           tokenStride: fused, into: qBuf + wi * queries * d)
                    }
                    q = UnsafePointer(qBuf)
                    qStride = d
                }
                // 4. Attention per window and head.
                for wi in 0..<g {
                    for head in 0..<heads {
                        let o = head * hd
                        let kv = qkvBuf + wi * tokens * fused
                        AcceleratedOps.attentionHead(
                            q: q + wi * queries * qStride + o, qStride: qStride, k: kv + d + o, kStride: fused,
                            v: kv + 2 * d + o, vStride: fused, into: attBuf + wi * queries * d + o, outStride: d,
                            queryCount: queries, keyCount: tokens, headDim: hd, scratch: scratch)
                    }
                }
                // 5. Output projection of the queries that survive the crop, added into y.
                var kept = 0
                for wi in 0..<g {
                    let (wy, wx) = ((w0 + wi) / cols, (w0 + wi) % cols)
                    for ty in 0..<outWs {
                        for tx in 0..<outWs {
                            let (yy, xx) = (wy * outWs + ty, wx * outWs + tx)
                            guard yy < oh, xx < ow else { continue }
                            let row = wi * queries + ty * outWs + tx
                            if kept != row { (attBuf + kept * d).update(from: attBuf + row * d, count: d) }
                            targets[kept] = yy * ow + xx
                            kept += 1
                        }
                    }
                }
                projLayer.applySingleThreaded(attBuf, rows: kept, xStride: d, bias: projBias,
                                              into: outBuf, yStride: d, bfloat16: bf16)
                // Parity: shortcut + proj(attn), the projection's bias included first.
                for r in 0..<kept {
                    let (o, s) = (out + targets[r] * d, outBuf + r * d)
                    for ch in 0..<d { o[ch] += s[ch] }
                }
                w0 += g
            }
        }
    }

    /// Global attention over all tokens: `y += proj(attn(normed))`.
    private func globalAttention(_ normed: Tensor, into y: inout Tensor, bf16: Bool) {
        precondition(!poolsQueries, "no q-pool block uses global attention")
        let tokens = normed.count / dim
        let (d, fused) = (dimOut, 3 * dimOut)
        guard let projWeight = attn.proj.packed else { preconditionFailure("fast path without packed weights") }
        var qkv: Tensor
        if bf16, let w = attn.qkv.packedBF16 {
            qkv = Tensor(unsafeUninitializedShape: [tokens, fused])
            let bias = attn.qkv.bias ?? Tensor(shape: [fused])
            w.apply(normed.pointer, rows: tokens, xStride: dim, bias: bias.pointer, into: qkv.mutablePointer, yStride: fused)
        } else {
            qkv = attn.qkv(normed.reshaped([tokens, dim]))
        }
        // q, k and v are column blocks of the fused projection.
        let fusedRows = qkv.matrix
        var att = Tensor(unsafeUninitializedShape: [tokens, d])  // attention writes every element
        Attention.scaledDotProduct(q: fusedRows.columnBlock(0, size: d), k: fusedRows.columnBlock(1, size: d),
                                   v: fusedRows.columnBlock(2, size: d), into: att.mutableMatrix(), heads: attn.heads)
        if bf16, let w = attn.proj.packedBF16 {
            let bias = attn.proj.bias ?? Tensor(shape: [d])
            w.apply(att.pointer, rows: tokens, xStride: d, bias: bias.pointer, into: y.mutablePointer, yStride: d, accumulate: true)
        } else {
            projWeight.apply(att.matrix, bias: attn.proj.bias, into: y.mutableMatrix(), accumulate: true)
        }
    }

    /// `y += mlp(norm2(y))`, chunk by chunk of rows, with GELU fused into the first layer.
    private func mlpResidual(_ y: inout Tensor, bf16: Bool) {
        let d = dimOut
        let tokens = y.count / d
        let (fc1, fc2) = (mlp.layers[0], mlp.layers[1])
        let hidden = fc1.outFeatures
        guard let b1 = fc1.bias, let b2 = fc2.bias else { preconditionFailure("Hiera MLP layers have biases") }
        // A few hundred rows: the hidden chunk stays in cache; at least one 192-row GEMM block.
        let chunkRows = max(192, (262_144 / hidden) / 12 * 12)
        let chunks = (tokens + chunkRows - 1) / chunkRows
        let (base, b1p, b2p, gp, bp) = (y.mutablePointer, b1.pointer, b2.pointer, norm2.weight.pointer, norm2.bias.pointer)
        Parallel.forEachChunk(chunks, minimumChunk: 1) { range in
            let normedRows = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * d)
            let hiddenRows = UnsafeMutablePointer<Float>.allocate(capacity: chunkRows * hidden)
            defer { normedRows.deallocate(); hiddenRows.deallocate() }
            for chunk in range {
                let r0 = chunk * chunkRows, rows = min(chunkRows, tokens - r0)
                normedRows.update(from: base + r0 * d, count: rows * d)
                AcceleratedOps.layerNorm(normedRows, rows: rows, channels: d, weight: gp,
                                         bias: bp, eps: norm2.eps)
                fc1.applySingleThreaded(normedRows, rows: rows, xStride: d, bias: b1p,
                                        into: hiddenRows, yStride: hidden, gelu: true, bfloat16: bf16)
                fc2.applySingleThreaded(hiddenRows, rows: rows, xStride: hidden, bias: b2p,
                                        into: base + r0 * d, yStride: d, accumulate: true, bfloat16: bf16)
            }
        }
    }
}
