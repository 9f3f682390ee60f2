#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Plain, obviously-correct versions of the optimised kernels, kept in the tree as test oracles.
/// They accumulate in Double so that they also bound the rounding error of the fast paths.
public enum ReferenceKernels {
    /// CRC-32C one bit at a time, straight from the definition (reflected polynomial 0x82F63B78,
    /// initial and final inversion).
    public static func crc32c(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
        var state = ~crc
        for byte in bytes {
            state ^= UInt32(byte)
            for _ in 0..<8 { state = state & 1 == 1 ? (state >> 1) ^ 0x82F6_3B78 : state >> 1 }
        }
        return ~state
    }

    /// `C[m, n] = Σ_k A[m, k]·B[k, n]`, all row-major and dense.
    public static func matrixProduct(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var acc = 0.0
                for t in 0..<k { acc += Double(a[i * k + t]) * Double(b[t * n + j]) }
                c[i * n + j] = Float(acc)
            }
        }
        return c
    }

    /// `nn.Conv2d` on `[Cin, H, W]` with weight `[Cout, Cin, k, k]`, zero padding; returns `[Cout, Ho, Wo]`.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        let (cin, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let (cout, k) = (weight.shape[0], weight.shape[2])
        let ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1
        var out = Tensor(shape: [cout, ho, wo])
        for o in 0..<cout {
            for y in 0..<ho {
                for xx in 0..<wo {
                    var acc = Double(bias?[flat: o] ?? 0)
                    for i in 0..<cin {
                        for ky in 0..<k {
                            for kx in 0..<k {
                                let sy = y * stride - padding + ky, sx = xx * stride - padding + kx
                                guard sy >= 0, sy < h, sx >= 0, sx < w else { continue }
                                let input: Int = (i * h + sy) * w + sx
                                let tap: Int = ((o * cin + i) * k + ky) * k + kx
                                acc += Double(x[flat: input]) * Double(weight[flat: tap])
                            }
                        }
                    }
                    out[flat: (o * ho + y) * wo + xx] = Float(acc)
                }
            }
        }
        return out
    }

    /// `nn.ConvTranspose2d(k=2, s=2)` on `[Cin, H, W]` with weight `[Cin, Cout, 2, 2]`; returns `[Cout, 2H, 2W]`.
    public static func transposedConv2x2(_ x: Tensor, weight: Tensor, bias: Tensor) -> Tensor {
        let (cin, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let cout = weight.shape[1]
        var out = Tensor(shape: [cout, 2 * h, 2 * w])
        for o in 0..<cout {
            for y in 0..<(2 * h) {
                for xx in 0..<(2 * w) {
                    var acc = Double(bias[flat: o])
                    for i in 0..<cin {
                        let input: Int = (i * h + y / 2) * w + xx / 2
                        let tap: Int = ((i * cout + o) * 2 + y % 2) * 2 + xx % 2
                        acc += Double(x[flat: input]) * Double(weight[flat: tap])
                    }
                    out[flat: (o * 2 * h + y) * 2 * w + xx] = Float(acc)
                }
            }
        }
        return out
    }

    /// Multi-head attention on dense `[N, heads·d]` matrices.
    public static func attention(q: [Float], k: [Float], v: [Float], queries: Int, keys: Int, heads: Int, headDim: Int) -> [Float] {
        let width = heads * headDim
        var out = [Float](repeating: 0, count: queries * width)
        let scale = 1 / Double(headDim).squareRoot()
        for h in 0..<heads {
            for i in 0..<queries {
                var logits = [Double](repeating: 0, count: keys)
                for j in 0..<keys {
                    var dot = 0.0
                    for d in 0..<headDim { dot += Double(q[i * width + h * headDim + d]) * Double(k[j * width + h * headDim + d]) }
                    logits[j] = dot * scale
                }
                let m = logits.max() ?? 0
                let e = logits.map { exp($0 - m) }
                let s = e.reduce(0, +)
                for d in 0..<headDim {
                    var acc = 0.0
                    for j in 0..<keys { acc += e[j] / s * Double(v[j * width + h * headDim + d]) }
                    out[i * width + h * headDim + d] = Float(acc)
                }
            }
        }
        return out
    }

    /// Layer normalisation of each row, in Double.
    public static func layerNorm(_ x: [Float], channels: Int, weight: [Float], bias: [Float], eps: Double) -> [Float] {
        var out = x
        for r in 0..<(x.count / channels) {
            let row = x[(r * channels)..<((r + 1) * channels)].map(Double.init)
            let mean = row.reduce(0, +) / Double(channels)
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(channels)
            for c in 0..<channels {
                out[r * channels + c] = Float((row[c] - mean) / (variance + eps).squareRoot() * Double(weight[c]) + Double(bias[c]))
            }
        }
        return out
    }

    /// Rounds `values` to `limit` steps of their largest magnitude, as the fixed-point GEMM
    /// (`gs_gemm_i16_avx2`) does with each row of x (limit 4095) and each output feature's
    /// weights (2047): the step, and the integers (nearest, ties to even).
    public static func fixedPoint(_ values: ArraySlice<Float>, limit: Float) -> (step: Float, integers: [Int]) {
        let largest = values.reduce(Float(0)) { max($0, abs($1)) }
        let inverse = largest > 0 ? limit / largest : 0
        return (largest / limit, values.map { Int(min(max(($0 * inverse).rounded(.toNearestOrEven), -limit), limit)) })
    }

    /// The fixed-point `y = x·Wᵀ (+ bias) (+ initial)` of `gs_gemm_i16_avx2` (x `[m, k]`, w
    /// `[n, k]`), step by step as the kernel does it: integer sums over each block of `kBlock`
    /// products, each converted to Float and scaled by the row's step times the column's, then
    /// added up block by block, the bias on the first block; so it gives the kernel's bits.
    public static func fixedPointLinear(_ x: [Float], _ w: [Float], m: Int, n: Int, k: Int, bias: [Float]?, initial: [Float]?,
                                        kBlock: Int = 256) -> [Float] {
        let rows = (0..<m).map { fixedPoint(x[($0 * k)..<($0 * k + k)], limit: 4095) }
        let columns = (0..<n).map { fixedPoint(w[($0 * k)..<($0 * k + k)], limit: 2047) }
        var y = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var value: Float = 0
                for k0 in stride(from: 0, to: max(k, 1), by: kBlock) {
                    var sum = 0
                    for t in k0..<min(k, k0 + kBlock) { sum += rows[i].integers[t] * columns[j].integers[t] }
                    var v = Float(sum) * (rows[i].step * columns[j].step)
                    v = v + (k0 == 0 ? (bias?[j] ?? 0) : 0)
                    if k0 > 0 { v = v + value } else if let initial { v = v + initial[i * n + j] }
                    value = v
                }
                y[i * n + j] = value
            }
        }
        return y
    }

    /// Exact GELU in Double.
    public static func gelu(_ x: Float) -> Float { Float(0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))) }
}
