import Kernels

// The Hiera trunk (`sam2/modeling/backbones/hieradet.py`, `backbones/utils.py`).
// Activations are channels-last: a `[H, W, C]` grid of tokens.

/// `MultiScaleAttention`: fused qkv projection, optional 2×2 max-pooling of the queries only,
/// attention, output projection. Works on a batch of windows `[windows, size, size, dim]`.
struct MultiScaleAttention: Sendable {
    let dimOut: Int
    let heads: Int
    let poolsQueries: Bool
    let qkv: Linear
    let proj: Linear

    init(_ weights: WeightReader, dim: Int, dimOut: Int, heads: Int, poolsQueries: Bool) throws {
        self.dimOut = dimOut
        self.heads = heads
        self.poolsQueries = poolsQueries
        qkv = try Linear(weights, "qkv", inFeatures: dim, outFeatures: 3 * dimOut, reduced: true)
        proj = try Linear(weights, "proj", inFeatures: dimOut, outFeatures: dimOut, reduced: true)
    }

    /// - Parameter x: `[windows, side, side, dim]`.
    /// - Returns: `[windows, side', side', dimOut]`, with `side' = side/2` when queries are pooled.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (windows, side) = (x.shape[0], x.shape[1])
        let tokens = side * side
        let outSide = poolsQueries ? side / 2 : side
        let queries = outSide * outSide
        let fused = qkv(x)  // [windows·tokens, 3·dimOut]; channel s·dimOut + h·headDim + d, s ∈ {q, k, v}
        let stride = 3 * dimOut
        let headDim = dimOut / heads
        var out = Tensor(unsafeUninitializedShape: [windows * queries, dimOut])  // attention writes every element
        let (base, result) = (fused.pointer, out.mutablePointer)
        // Queries: the q columns of the fused projection, or (q-pool) only q pooled into its own
        // buffer; k and v keep every token.
        var pooled = Tensor(shape: [poolsQueries ? windows * queries : 0, dimOut])
        var (q, qStride, qBatchStride) = (base, stride, tokens * stride)
        if poolsQueries {
            let pb = pooled.mutablePointer
            Parallel.forEachChunk(windows, minimumChunk: 8) { range in
                for w in range {
                    Pooling.maxPool2x2(base + w * tokens * stride, height: side, width: side, channels: dimOut,
                                       tokenStride: stride, into: pb + w * queries * dimOut)
                }
            }
            (q, qStride, qBatchStride) = (UnsafePointer(pb), dimOut, queries * dimOut)
        }
        Attention.batched(
            q: q, qStride: qStride, qBatchStride: qBatchStride,
            k: base + dimOut, kStride: stride, kBatchStride: tokens * stride,
            v: base + 2 * dimOut, vStride: stride, vBatchStride: tokens * stride,
            into: result, outStride: dimOut, outBatchStride: queries * dimOut,
            batches: windows, queryCount: queries, keyCount: tokens, heads: heads, headDim: headDim)
        withExtendedLifetime(pooled) {}
        return proj(out).reshaped([windows, outSide, outSide, dimOut])
    }
}

/// `MultiScaleBlock`: pre-norm windowed (or global) attention and an MLP, with channel growth and
/// query pooling in the first block of a stage.
struct MultiScaleBlock: Sendable {
    let dim: Int
    let dimOut: Int
    let windowSize: Int
    let poolsQueries: Bool
    let norm1: LayerNorm
    let attn: MultiScaleAttention
    let norm2: LayerNorm
    let mlp: MLP
    let proj: Linear?

    init(_ weights: WeightReader, dim: Int, dimOut: Int, heads: Int, windowSize: Int, poolsQueries: Bool) throws {
        self.dim = dim
        self.dimOut = dimOut
        self.windowSize = windowSize
        self.poolsQueries = poolsQueries
        norm1 = try LayerNorm(weights, "norm1", channels: dim, eps: 1e-6)
        attn = try MultiScaleAttention(weights.scoped("attn"), dim: dim, dimOut: dimOut, heads: heads, poolsQueries: poolsQueries)
        norm2 = try LayerNorm(weights, "norm2", channels: dimOut, eps: 1e-6)
        mlp = try MLP(weights, "mlp", dimensions: [dimOut, 4 * dimOut, dimOut], activation: .gelu, reduced: true)
        proj = dim != dimOut ? try Linear(weights, "proj", inFeatures: dim, outFeatures: dimOut, reduced: true) : nil
    }

    /// - Parameter x: `[H, W, dim]`. - Returns: `[H', W', dimOut]`.
    func callAsFunction(_ x: Tensor) -> Tensor {
        let (height, width) = (x.shape[0], x.shape[1])
        let normed = norm1(x)
        var shortcut = x
        if let proj {
            // Parity: the residual of a stage-change block is the pooled projection of the
            // *normalised* input, not of x.
            shortcut = proj(normed)
            if poolsQueries { shortcut = Pooling.maxPool2x2(shortcut) }
        }
        var y: Tensor
        if windowSize > 0 {
            let (windows, paddedHeight, paddedWidth) = WindowPartition.partition(normed, windowSize: windowSize)
            y = attn(windows)
            var size = windowSize
            var (h, w, ph, pw) = (height, width, paddedHeight, paddedWidth)
            if poolsQueries {
                // Parity: after pooling, the window halves and the padding is recomputed for the
                // pooled grid (64² with window 14 → 32² with window 7, padded to 35²).
                size = windowSize / 2
                (h, w) = (shortcut.shape[0], shortcut.shape[1])
                ph = h + (size - h % size) % size
                pw = w + (size - w % size) % size
            }
            y = WindowPartition.unpartition(y, windowSize: size, paddedHeight: ph, paddedWidth: pw, height: h, width: w)
        } else {
            y = attn(normed.reshaped([1, height, width, dim]))
            y.reshape(Array(y.shape.dropFirst()))
        }
        y += shortcut
        y += mlp(norm2(y))
        return y
    }
}

/// `window_partition` / `window_unpartition`.
enum WindowPartition {
    /// Splits `[H, W, C]` into row-major windows `[n, size, size, C]`, padding the bottom and right
    /// with zeros to a multiple of `size`.
    static func partition(_ x: Tensor, windowSize size: Int) -> (windows: Tensor, paddedHeight: Int, paddedWidth: Int) {
        let (h, w, c) = (x.shape[0], x.shape[1], x.shape[2])
        let ph = h + (size - h % size) % size, pw = w + (size - w % size) % size
        let (rows, cols) = (ph / size, pw / size)
        var out = Tensor(shape: [rows * cols, size, size, c])
        let src = x.pointer
        let dst = out.mutablePointer
        for wy in 0..<rows {
            for wx in 0..<cols {
                for ty in 0..<size {
                    let y = wy * size + ty
                    guard y < h else { continue }  // padding rows stay zero
                    for tx in 0..<size {
                        let xx = wx * size + tx
                        guard xx < w else { continue }
                        let d = (((wy * cols + wx) * size + ty) * size + tx) * c
                        (dst + d).update(from: src + (y * w + xx) * c, count: c)
                    }
                }
            }
        }
        return (out, ph, pw)
    }

    /// Inverts `partition` and crops the padding: `[n, size, size, C]` → `[height, width, C]`.
    static func unpartition(_ windows: Tensor, windowSize size: Int, paddedHeight: Int, paddedWidth: Int,
                            height: Int, width: Int) -> Tensor {
        let c = windows.shape[3]
        let cols = paddedWidth / size
        var out = Tensor(shape: [height, width, c])
        let src = windows.pointer
        let dst = out.mutablePointer
        for y in 0..<height {
            for x in 0..<width {
                let (wy, ty, wx, tx) = (y / size, y % size, x / size, x % size)
                let s = (((wy * cols + wx) * size + ty) * size + tx) * c
                (dst + (y * width + x) * c).update(from: src + s, count: c)
            }
        }
        return out
    }
}

/// `Hiera`: patch embedding, position embedding, and the stages of multi-scale blocks.
struct Hiera: Sendable {
    let configuration: SAM2Configuration
    let patchEmbedWeight: Tensor
    let patchEmbedBias: Tensor
    /// The patch-embedding weight as `[C, 3·7·7]`, packed for the fast GEMM (nil without its kernels).
    let patchEmbedPacked: PackedWeight?
    /// The input-independent position embedding for the 256×256 patch grid, `[256, 256, C]`.
    let positionEmbedding: Tensor
    let blocks: [MultiScaleBlock]

    /// Side of the patch grid for a 1024 input (`PatchEmbed` has stride 4).
    static let gridSize = SAM2Configuration.imageSize / 4

    init(_ weights: WeightReader, configuration c: SAM2Configuration) throws {
        configuration = c
        let dim = c.embedDim
        patchEmbedWeight = try weights.load("patch_embed.proj.weight", [dim, 3, 7, 7])
        patchEmbedBias = try weights.load("patch_embed.proj.bias", [dim])
        patchEmbedPacked = Accelerated.hasPackedKernels ? PackedWeight(patchEmbedWeight.reshaped([dim, 3 * 7 * 7])) : nil
        let background = try weights.load("pos_embed", [1, dim] + c.windowPositionEmbeddingBackgroundSize)
        let window = try weights.load("pos_embed_window", [1, dim, c.windowSpec[0], c.windowSpec[0]])
        positionEmbedding = Hiera.positionEmbedding(background: background, window: window, gridSize: Hiera.gridSize)

        // The block schedule of Hiera.__init__.
        let stageEnds = c.stageEnds
        let qPoolBlocks = Set(stageEnds.dropLast().map { $0 + 1 }.prefix(3))
        var blocks: [MultiScaleBlock] = []
        var (embed, heads, stage) = (dim, c.numHeads, 1)
        for i in 0..<c.blockCount {
            var dimOut = embed
            // Parity: the window size is read *before* the stage counter advances, so the first
            // block of a stage uses the previous stage's window.
            var windowSize = c.windowSpec[stage - 1]
            if i > 0, stageEnds.contains(i - 1) {
                dimOut = 2 * embed
                heads *= 2  // the stage-change block already uses the new head count
                stage += 1
            }
            if c.globalAttentionBlocks.contains(i) { windowSize = 0 }
            blocks.append(try MultiScaleBlock(
                weights.scoped("blocks.\(i)"), dim: embed, dimOut: dimOut, heads: heads,
                windowSize: windowSize, poolsQueries: qPoolBlocks.contains(i)))
            embed = dimOut
        }
        self.blocks = blocks
    }

    /// `_get_pos_embed`: bicubic-resized background embedding plus the window embedding tiled.
    static func positionEmbedding(background: Tensor, window: Tensor, gridSize: Int) -> Tensor {
        let channels = background.shape[1]
        var pe = Resize.bicubic(background.reshaped(Array(background.shape.dropFirst())), height: gridSize, width: gridSize)
        let w = window.shape[2]
        for c in 0..<channels {
            for y in 0..<gridSize {
                for x in 0..<gridSize {
                    pe[flat: (c * gridSize + y) * gridSize + x] += window[flat: (c * w + y % w) * w + x % w]
                }
            }
        }
        return pe.channelsLast()
    }

    /// Runs the trunk on a normalised `[3, 1024, 1024]` image.
    /// - Parameter plan: the reduced-precision products per block (nil: fp32; the fast path only).
    /// - Returns: the output of every stage, channels-last, highest resolution first.
    func callAsFunction(_ image: Tensor, plan: ReducedPrecisionPlan? = nil) -> [Tensor] {
        let layout = Convolution.Layout.channelsFirst(channels: 3, height: image.shape[1], width: image.shape[2])
        var x = Convolution.conv2d(image, layout: layout, weight: patchEmbedWeight, bias: patchEmbedBias, stride: 4, padding: 3,
                                   packed: patchEmbedPacked)
        x += positionEmbedding
        var outputs: [Tensor] = []
        let ends = Set(configuration.stageEnds)
        // 1-based stage of each stage's first block.
        let starts = Dictionary(uniqueKeysWithValues: ([-1] + configuration.stageEnds.dropLast()).enumerated().map { ($1 + 1, $0 + 1) })
        let fast = Accelerated.hasPackedKernels
        for (i, block) in blocks.enumerated() {
            if fast {
                block.fast(&x, reduced: plan?.operations(block: i, windowSize: block.windowSize, startsStage: starts[i]) ?? [],
                           in: plan?.precision)
            } else {
                x = block(x)
            }
            if ends.contains(i) { outputs.append(x) }
        }
        return outputs
    }
}
