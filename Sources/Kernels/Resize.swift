/// Image resampling on channels-first `[C, H, W]` tensors, reproducing PyTorch's CPU kernels
/// (`F.interpolate`) to the last rounding where it matters for parity.
public enum Resize {
    // MARK: Antialiased bilinear (torchvision Resize, antialias=True)

    /// One axis of PyTorch's antialiased bilinear filter (`_compute_indices_min_size_weights_aa`):
    /// for each output index, the first input index and the normalised weights.
    static func antialiasedWeights(inputSize: Int, outputSize: Int) -> [(start: Int, weights: [Float])] {
        // Parity: every quantity is Float (the kernel's scalar_t), computed in the same order.
        let scale = Float(inputSize) / Float(outputSize)
        let support: Float = scale >= 1 ? scale : 1
        let inverseScale: Float = scale >= 1 ? 1 / scale : 1
        var table: [(Int, [Float])] = []
        table.reserveCapacity(outputSize)
        for i in 0..<outputSize {
            let center = scale * (Float(i) + 0.5)
            let xmin = max(Int(center - support + 0.5), 0)
            let xmax = min(Int(center + support + 0.5), inputSize)
            var weights = [Float](repeating: 0, count: max(xmax - xmin, 0))
            var total: Float = 0
            for j in 0..<weights.count {
                let t = (Float(j + xmin) - center + 0.5) * inverseScale
                let w = max(0, 1 - abs(t))
                weights[j] = w
                total += w
            }
            if total != 0 { for j in 0..<weights.count { weights[j] /= total } }
            table.append((xmin, weights))
        }
        return table
    }

    /// Antialiased bilinear resize (`interpolate(mode="bilinear", antialias=True, align_corners=False)`).
    /// The width pass runs first, then the height pass; an axis whose size is unchanged is skipped.
    public static func antialiasedBilinear(_ x: Tensor, height: Int, width: Int) -> Tensor {
        precondition(x.rank == 3, "antialiasedBilinear expects [C,H,W], got \(x.shape)")
        var current = x
        let (channels, inHeight, inWidth) = (x.shape[0], x.shape[1], x.shape[2])
        if inWidth != width {
            let table = antialiasedWeights(inputSize: inWidth, outputSize: width)
            var out = Tensor(shape: [channels, inHeight, width])
            let src = current.pointer
            let dst = out.mutablePointer
            Parallel.forEachChunk(channels * inHeight, minimumChunk: 16) { rows in
                for row in rows {
                    let s = src + row * inWidth
                    let d = dst + row * width
                    for (i, entry) in table.enumerated() {
                        var acc = s[entry.start] * entry.weights[0]
                        for j in 1..<entry.weights.count { acc += s[entry.start + j] * entry.weights[j] }
                        d[i] = acc
                    }
                }
            }
            current = out
        }
        if inHeight != height {
            let table = antialiasedWeights(inputSize: inHeight, outputSize: height)
            var out = Tensor(shape: [channels, height, width])
            let src = current.pointer
            let dst = out.mutablePointer
            Parallel.forEachChunk(channels * height, minimumChunk: 16) { rows in
                for row in rows {
                    let (c, i) = (row / height, row % height)
                    let entry = table[i]
                    let plane = src + c * inHeight * width
                    let d = dst + row * width
                    let w0 = entry.weights[0]
                    let first = plane + entry.start * width
                    for xx in 0..<width { d[xx] = first[xx] * w0 }
                    for j in 1..<entry.weights.count {
                        let w = entry.weights[j]
                        let line = plane + (entry.start + j) * width
                        for xx in 0..<width { d[xx] += line[xx] * w }
                    }
                }
            }
            current = out
        }
        return current
    }

    // MARK: Bilinear (align_corners=False, no antialias)

    /// Source indices and weights of one axis of `upsample_bilinear2d`.
    public static func bilinearWeights(inputSize: Int, outputSize: Int) -> [(i0: Int, i1: Int, l0: Float, l1: Float)] {
        let scale = Float(inputSize) / Float(outputSize)
        return (0..<outputSize).map { i in
            // Parity: area_pixel_compute_source_index clamps the source index at 0 (non-cubic).
            let real = max(0, scale * (Float(i) + 0.5) - 0.5)
            let i0 = min(Int(real), inputSize - 1)
            let i1 = i0 + (i0 < inputSize - 1 ? 1 : 0)
            let l1 = min(max(real - Float(i0), 0), 1)
            return (i0, i1, 1 - l1, l1)
        }
    }

    /// Bilinear resize (`interpolate(mode="bilinear", align_corners=False)`), as SAM2's mask
    /// postprocessing uses it: `out = Σ_y wy·(Σ_x wx·in)`.
    public static func bilinear(_ x: Tensor, height: Int, width: Int) -> Tensor {
        precondition(x.rank == 3, "bilinear expects [C,H,W], got \(x.shape)")
        let (channels, inHeight, inWidth) = (x.shape[0], x.shape[1], x.shape[2])
        let ys = bilinearWeights(inputSize: inHeight, outputSize: height)
        let xs = bilinearWeights(inputSize: inWidth, outputSize: width)
        var out = Tensor(shape: [channels, height, width])
        let src = x.pointer
        let dst = out.mutablePointer
        Parallel.forEachChunk(channels * height, minimumChunk: 16) { rows in
            for row in rows {
                let (c, i) = (row / height, row % height)
                let y = ys[i]
                let r0 = src + c * inHeight * inWidth + y.i0 * inWidth
                let r1 = src + c * inHeight * inWidth + y.i1 * inWidth
                let d = dst + row * width
                for j in 0..<width {
                    let t = xs[j]
                    d[j] = y.l0 * (t.l0 * r0[t.i0] + t.l1 * r0[t.i1]) + y.l1 * (t.l0 * r1[t.i0] + t.l1 * r1[t.i1])
                }
            }
        }
        return out
    }

    // MARK: Bicubic (align_corners=False)

    /// The four cubic-convolution weights for fraction `t`, with PyTorch's `A = −0.75`.
    static func cubicWeights(_ t: Float) -> (Float, Float, Float, Float) {
        let a: Float = -0.75
        func near(_ x: Float) -> Float { ((a + 2) * x - (a + 3)) * x * x + 1 }
        func far(_ x: Float) -> Float { ((a * x - 5 * a) * x + 8 * a) * x - 4 * a }
        return (far(t + 1), near(t), near(1 - t), far(2 - t))
    }

    /// Bicubic resize (`interpolate(mode="bicubic", align_corners=False)`): the source index is not
    /// clamped, the four taps are clamped to the border.
    public static func bicubic(_ x: Tensor, height: Int, width: Int) -> Tensor {
        precondition(x.rank == 3, "bicubic expects [C,H,W], got \(x.shape)")
        let (channels, inHeight, inWidth) = (x.shape[0], x.shape[1], x.shape[2])
        func axis(_ inputSize: Int, _ outputSize: Int) -> [([Int], [Float])] {
            let scale = Float(inputSize) / Float(outputSize)
            return (0..<outputSize).map { i in
                let real = scale * (Float(i) + 0.5) - 0.5
                let i0 = Int(real.rounded(.down))
                let w = cubicWeights(real - Float(i0))
                let taps = (-1...2).map { min(max(i0 + $0, 0), inputSize - 1) }
                return (taps, [w.0, w.1, w.2, w.3])
            }
        }
        let ys = axis(inHeight, height), xs = axis(inWidth, width)
        var out = Tensor(shape: [channels, height, width])
        for c in 0..<channels {
            for i in 0..<height {
                for j in 0..<width {
                    var acc: Float = 0
                    for a in 0..<4 {
                        let row = c * inHeight * inWidth + ys[i].0[a] * inWidth
                        var inner: Float = 0
                        for b in 0..<4 { inner += x[flat: row + xs[j].0[b]] * xs[j].1[b] }
                        acc += inner * ys[i].1[a]
                    }
                    out[flat: (c * height + i) * width + j] = acc
                }
            }
        }
        return out
    }

    // MARK: Nearest ×2 on channels-last data

    /// Nearest-neighbour upsampling by 2 of a channels-last `[H, W, C]` tensor:
    /// `out[y, x] = in[⌊y/2⌋, ⌊x/2⌋]`.
    public static func nearestTimesTwo(_ x: Tensor) -> Tensor {
        precondition(x.rank == 3, "nearestTimesTwo expects [H,W,C], got \(x.shape)")
        let (h, w, c) = (x.shape[0], x.shape[1], x.shape[2])
        var out = Tensor(shape: [2 * h, 2 * w, c])
        let src = x.pointer
        let dst = out.mutablePointer
        for y in 0..<(2 * h) {
            for xx in 0..<(2 * w) {
                (dst + (y * 2 * w + xx) * c).update(
                    from: src + ((y / 2) * w + xx / 2) * c, count: c)
            }
        }
        return out
    }
}
