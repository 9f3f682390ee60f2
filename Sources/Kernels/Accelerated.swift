import CKernels

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Whether the hand-written AVX-512 kernels (`CKernels`) are used.
///
/// They are used when the CPU has AVX-512 F/DQ/BW/VL, unless the environment variable
/// `GEOSAM2_PORTABLE_KERNELS=1` asks for the portable paths (OpenBLAS and plain Swift), which the
/// tests use to check both.
public enum Accelerated {
    public static let isAvailable: Bool = {
        if let v = getenv("GEOSAM2_PORTABLE_KERNELS"), String(cString: v) == "1" { return false }
        return gs_has_avx512() != 0
    }()
}

/// An `nn.Linear` weight `[out, in]` repacked once into the k-major 32-column panels the AVX-512
/// GEMM streams through (`gs_pack_weight`).
public struct PackedWeight: Sendable {
    public let outFeatures: Int
    public let inFeatures: Int
    let panels: [Float]

    /// Packs `weight` (`[out, in]`, row-major).
    public init(_ weight: Tensor) {
        precondition(weight.rank == 2, "PackedWeight expects [out, in], got \(weight.shape)")
        let (n, k) = (weight.shape[0], weight.shape[1])
        outFeatures = n
        inFeatures = k
        var panels = [Float](repeating: 0, count: gs_packed_count(n, k))
        weight.scalars.withUnsafeBufferPointer { w in
            panels.withUnsafeMutableBufferPointer { p in
                if let wb = w.baseAddress, let pb = p.baseAddress { gs_pack_weight(wb, k, n, k, pb) }
            }
        }
        self.panels = panels
    }

    var panelCount: Int { (outFeatures + Int(GS_PANEL) - 1) / Int(GS_PANEL) }

    /// `y = x·Wᵀ (+ b) (+ y when accumulating)` on `rows` rows, split over the cores by rows when
    /// there are many, else by panels of output features.
    public func apply(
        _ x: UnsafePointer<Float>, rows: Int, xStride: Int, bias: UnsafePointer<Float>?,
        into y: UnsafeMutablePointer<Float>, yStride: Int, accumulate: Bool = false
    ) {
        guard rows > 0 else { return }
        let (n, k) = (outFeatures, inFeatures)
        panels.withUnsafeBufferPointer { p in
            guard let pb = p.baseAddress else { return }
            let work = rows * n * max(k, 1)
            if work < 1_000_000 {
                gs_linear_packed(x, xStride, pb, bias, y, yStride, rows, n, k, 0, panelCount, accumulate ? 1 : 0)
            } else if rows >= 96 {
                // Row blocks: each worker packs its own rows and streams all panels.
                Parallel.forEachChunk(rows, minimumChunk: 48) { r in
                    gs_linear_packed(x + r.lowerBound * xStride, xStride, pb, bias, y + r.lowerBound * yStride, yStride,
                                     r.count, n, k, 0, panelCount, accumulate ? 1 : 0)
                }
            } else {
                Parallel.forEachChunk(panelCount, minimumChunk: 1) { panels in
                    gs_linear_packed(x, xStride, pb, bias, y, yStride, rows, n, k, panels.lowerBound, panels.upperBound,
                                     accumulate ? 1 : 0)
                }
            }
        }
    }
}
