/// A dense, row-major (C-contiguous) `Float` tensor.
///
/// The storage is a copy-on-write Swift array, so a `Tensor` is a plain value: it can be passed
/// between tasks freely and never aliases another tensor's memory.
public struct Tensor: Sendable, Equatable {
    /// The extent of each dimension, outermost first.
    public private(set) var shape: [Int]
    /// The elements in row-major order; `scalars.count == shape.product`.
    public var scalars: [Float]

    /// Creates a tensor from its shape and row-major elements.
    /// - Precondition: `scalars.count` equals the product of `shape`.
    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(shape.reduce(1, *) == scalars.count, "shape \(shape) does not match \(scalars.count) elements")
        self.shape = shape
        self.scalars = scalars
    }

    /// A tensor of the given shape filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        self.init(shape: shape, scalars: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// A tensor whose elements are not initialised, for outputs that a kernel overwrites
    /// entirely (skips the zero-fill, which for large outputs costs as much as a light kernel).
    public init(unsafeUninitializedShape shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        let n = shape.reduce(1, *)
        self.shape = shape
        scalars = [Float](unsafeUninitializedCapacity: n) { _, initialized in initialized = n }
    }

    /// The number of elements.
    @inlinable public var count: Int { scalars.count }

    /// The number of dimensions.
    @inlinable public var rank: Int { shape.count }

    /// The same elements seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, scalars: scalars)
    }

    /// Reshapes in place.
    public mutating func reshape(_ newShape: [Int]) {
        precondition(newShape.reduce(1, *) == scalars.count, "cannot reshape \(shape) to \(newShape)")
        shape = newShape
    }

    /// The largest absolute difference between two tensors of the same shape.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "shape \(shape) differs from \(other.shape)")
        var worst: Float = 0
        for i in 0..<scalars.count {
            let d = abs(scalars[i] - other.scalars[i])
            if d > worst || d.isNaN { worst = d.isNaN ? .infinity : d }
        }
        return worst
    }

    /// The population standard deviation of the elements.
    public func standardDeviation() -> Float {
        guard !scalars.isEmpty else { return 0 }
        var mean = 0.0
        for v in scalars { mean += Double(v) }
        mean /= Double(scalars.count)
        var variance = 0.0
        for v in scalars { variance += (Double(v) - mean) * (Double(v) - mean) }
        return Float((variance / Double(scalars.count)).squareRoot())
    }
}

extension Tensor {
    /// Permutes a rank-3 `[A, B, C]` tensor to `[C, A, B]` (e.g. HWC → CHW).
    public func channelsFirst() -> Tensor {
        precondition(rank == 3, "channelsFirst expects rank 3, got \(shape)")
        let (h, w, c) = (shape[0], shape[1], shape[2])
        var out = Tensor(unsafeUninitializedShape: [c, h, w])
        Tensor.transpose(scalars, rows: h * w, columns: c, into: &out.scalars)
        return out
    }

    /// `dst[j·rows + i] = src[i·columns + j]`, in cache-sized blocks of rows (so the strided side
    /// of the copy stays in L1), split over the cores.
    static func transpose(_ src: [Float], rows: Int, columns: Int, into dst: inout [Float]) {
        let block = 64
        src.withUnsafeBufferPointer { sb in
            dst.withUnsafeMutableBufferPointer { db in
                guard let s = sb.baseAddress, let d = db.baseAddress else { return }
                Parallel.forEachChunk((rows + block - 1) / block, minimumChunk: 64) { blocks in
                    for b in blocks {
                        let r0 = b * block, r1 = min(rows, r0 + block)
                        for j in 0..<columns {
                            let line = d + j * rows
                            for i in r0..<r1 { line[i] = s[i * columns + j] }
                        }
                    }
                }
            }
        }
    }

    /// Permutes a rank-3 `[C, A, B]` tensor to `[A, B, C]` (e.g. CHW → HWC).
    public func channelsLast() -> Tensor {
        precondition(rank == 3, "channelsLast expects rank 3, got \(shape)")
        let (c, h, w) = (shape[0], shape[1], shape[2])
        var out = Tensor(unsafeUninitializedShape: [h, w, c])
        Tensor.transpose(scalars, rows: c, columns: h * w, into: &out.scalars)
        return out
    }
}
