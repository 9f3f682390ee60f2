/// Convolutions expressed as matrix products, producing channels-last output.
public enum Convolution {
    /// Where the elements of a 3-D input live: element `(c, y, x)` is at `c·channelStride + y·rowStride + x·columnStride`.
    public struct Layout: Sendable {
        public var channels: Int, height: Int, width: Int
        public var channelStride: Int, rowStride: Int, columnStride: Int

        /// `[C, H, W]` storage.
        public static func channelsFirst(channels: Int, height: Int, width: Int) -> Layout {
            Layout(channels: channels, height: height, width: width,
                   channelStride: height * width, rowStride: width, columnStride: 1)
        }

        /// `[H, W, C]` storage.
        public static func channelsLast(channels: Int, height: Int, width: Int) -> Layout {
            Layout(channels: channels, height: height, width: width,
                   channelStride: 1, rowStride: width * channels, columnStride: channels)
        }
    }

    /// A 2-D convolution (`nn.Conv2d`, square kernel, zero padding) through im2col and one GEMM.
    /// - Parameters:
    ///   - weight: `[out, in, k, k]`, PyTorch's layout.
    /// - Returns: `[outHeight, outWidth, out]`, channels-last.
    /// - Parameter packed: `weight` as `[out, in·k·k]`, packed for the AVX-512 GEMM (optional).
    public static func conv2d(
        _ input: Tensor, layout: Layout, weight: Tensor, bias: Tensor?, stride: Int, padding: Int,
        packed: PackedWeight? = nil
    ) -> Tensor {
        let outChannels = weight.shape[0], kernel = weight.shape[2]
        precondition(weight.shape[1] == layout.channels, "conv2d: weight \(weight.shape) vs \(layout.channels) input channels")
        let outHeight = (layout.height + 2 * padding - kernel) / stride + 1
        let outWidth = (layout.width + 2 * padding - kernel) / stride + 1
        let patch = layout.channels * kernel * kernel
        let positions = outHeight * outWidth
        // Zero-filled: padding taps stay 0.
        var matrix = Tensor(shape: [positions, patch])
        let (src, col) = (input.pointer, matrix.mutablePointer)
        Parallel.forEachChunk(outHeight, minimumChunk: 4) { rows in
            for oy in rows {
                for ox in 0..<outWidth {
                    var idx = (oy * outWidth + ox) * patch
                    for c in 0..<layout.channels {
                        for ky in 0..<kernel {
                            let y = oy * stride - padding + ky
                            for kx in 0..<kernel {
                                let x = ox * stride - padding + kx
                                if y >= 0, y < layout.height, x >= 0, x < layout.width {
                                    col[idx] = src[c * layout.channelStride + y * layout.rowStride + x * layout.columnStride]
                                }
                                idx += 1
                            }
                        }
                    }
                }
            }
        }
        let flatWeight = weight.reshaped([outChannels, patch])
        return GEMM.linear(matrix, weight: flatWeight, bias: bias, packed: packed).reshaped([outHeight, outWidth, outChannels])
    }

    /// A transposed convolution with kernel 2 and stride 2 (`nn.ConvTranspose2d(k=2, s=2)`) on
    /// channels-last input: `out[2y+dy, 2x+dx, o] = b[o] + Σ_i in[y, x, i]·W[i, o, dy, dx]`.
    /// - Parameter weight: `[in, out, 2, 2]`, PyTorch's ConvTranspose layout (in and out swapped
    ///   relative to Conv2d).
    public static func transposedConv2x2(_ input: Tensor, weight: Tensor, bias: Tensor) -> Tensor {
        precondition(input.rank == 3 && weight.shape[2] == 2 && weight.shape[3] == 2, "transposedConv2x2: bad shapes")
        let inChannels = input.shape[2]
        precondition(weight.shape[0] == inChannels, "transposedConv2x2: weight \(weight.shape) vs \(inChannels) input channels")
        return transposedConv2x2(input, matrix: transposedConv2x2Matrix(weight), packed: nil, bias: bias, adding: nil)
    }

    /// The ConvTranspose weight `[in, out, 2, 2]` rearranged to a linear weight `[(dy, dx, o), in]`,
    /// so one GEMM gives all four sub-pixel outputs.
    public static func transposedConv2x2Matrix(_ weight: Tensor) -> Tensor {
        let (inChannels, outChannels) = (weight.shape[0], weight.shape[1])
        var packed = [Float](repeating: 0, count: 4 * outChannels * inChannels)
        for i in 0..<inChannels {
            for o in 0..<outChannels {
                for d in 0..<4 {
                    packed[(d * outChannels + o) * inChannels + i] = weight[flat: (i * outChannels + o) * 4 + d]
                }
            }
        }
        return Tensor(shape: [4 * outChannels, inChannels], scalars: packed)
    }

    /// `transposedConv2x2` with the weight already rearranged (`transposedConv2x2Matrix`, and
    /// optionally packed), plus an optional channels-last `[2H, 2W, out]` tensor added to the output.
    public static func transposedConv2x2(_ input: Tensor, matrix: Tensor, packed: PackedWeight?, bias: Tensor,
                                         adding addend: Tensor?) -> Tensor {
        let (h, w, inChannels) = (input.shape[0], input.shape[1], input.shape[2])
        let outChannels = matrix.shape[0] / 4
        precondition(matrix.shape[1] == inChannels, "transposedConv2x2: weight \(matrix.shape) vs \(inChannels) input channels")
        let products = GEMM.linear(input.reshaped([h * w, inChannels]), weight: matrix, bias: nil, packed: packed)
        if let addend { precondition(addend.shape == [2 * h, 2 * w, outChannels], "transposedConv2x2: addend \(addend.shape)") }
        var out = Tensor(unsafeUninitializedShape: [2 * h, 2 * w, outChannels])
        let zero = Tensor(shape: [addend == nil ? 4 * h * w * outChannels : 0])
        let (sp, bp, ap, dp) = (products.pointer, bias.pointer, (addend ?? zero).pointer, out.mutablePointer)
        Parallel.forEachChunk(h, minimumChunk: 16) { rows in
            for y in rows {
                for x in 0..<w {
                    let s = sp + (y * w + x) * 4 * outChannels
                    for d in 0..<4 {
                        let (dy, dx) = (d / 2, d % 2)
                        let offset = ((2 * y + dy) * 2 * w + 2 * x + dx) * outChannels
                        let (o, a, sd) = (dp + offset, ap + offset, s + d * outChannels)
                        // Parity: conv bias first, then the high-res map (`dc(x) + feat`).
                        for c in 0..<outChannels { o[c] = (sd[c] + bp[c]) + a[c] }
                    }
                }
            }
        }
        withExtendedLifetime((products, zero)) {}
        return out
    }
}

/// Max pooling.
public enum Pooling {
    /// `MaxPool2d(2, stride 2)` (floor mode) over a channels-last grid of `height × width` tokens,
    /// reading token `(y, x)` at `input + (y·width + x)·tokenStride` and writing densely packed
    /// `[height/2, width/2, channels]` to `output`.
    public static func maxPool2x2(
        _ input: UnsafePointer<Float>, height: Int, width: Int, channels: Int, tokenStride: Int,
        into output: UnsafeMutablePointer<Float>
    ) {
        let (oh, ow) = (height / 2, width / 2)
        for y in 0..<oh {
            for x in 0..<ow {
                let a = input + ((2 * y) * width + 2 * x) * tokenStride
                let b = a + tokenStride
                let c = a + width * tokenStride
                let d = c + tokenStride
                let o = output + (y * ow + x) * channels
                for ch in 0..<channels { o[ch] = max(max(a[ch], b[ch]), max(c[ch], d[ch])) }
            }
        }
    }

    /// `MaxPool2d(2, stride 2)` on a channels-last `[H, W, C]` tensor.
    public static func maxPool2x2(_ x: Tensor) -> Tensor {
        let (h, w, c) = (x.shape[0], x.shape[1], x.shape[2])
        var out = Tensor(shape: [h / 2, w / 2, c])
        maxPool2x2(x.pointer, height: h, width: w, channels: c, tokenStride: c, into: out.mutablePointer)
        return out
    }
}
