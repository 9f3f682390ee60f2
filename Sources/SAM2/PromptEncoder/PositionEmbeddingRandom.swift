#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Kernels

/// `PositionEmbeddingRandom` (`sam2/modeling/position_encoding.py`): random Fourier features of
/// normalised (x, y) coordinates.
struct PositionEmbeddingRandom: Sendable {
    /// `positional_encoding_gaussian_matrix`, `[2, D/2]`.
    let gaussian: Tensor

    init(_ weights: WeightReader, dimension: Int) throws {
        gaussian = try weights.load("positional_encoding_gaussian_matrix", [2, dimension / 2])
    }

    /// Encodes coordinates in `[0, 1]²`: `[sin(2π·(2c−1)·G) | cos(…)]`, sin block first.
    func encode(x: Float, y: Float, into out: UnsafeMutablePointer<Float>) {
        let half = gaussian.shape[1]
        let cx = 2 * x - 1, cy = 2 * y - 1
        // Parity: `2 * np.pi` is a Python double applied to a float32 tensor → Float(2π).
        let twoPi = Float(2 * Double.pi)
        let g = gaussian.pointer
        for k in 0..<half {
            let u = twoPi * (cx * g[k] + cy * g[half + k])
            out[k] = sinf(u)
            out[half + k] = cosf(u)
        }
    }

    /// `get_dense_pe` over a `size × size` grid at cell centres, channels-last `[size·size, D]`.
    func dense(size: Int) -> Tensor {
        let d = 2 * gaussian.shape[1]
        var out = Tensor(shape: [size * size, d])
        let o = out.mutablePointer
        for i in 0..<size {
            for j in 0..<size {
                encode(x: (Float(j) + 0.5) / Float(size), y: (Float(i) + 0.5) / Float(size),
                       into: o + (i * size + j) * d)
            }
        }
        return out
    }
}
