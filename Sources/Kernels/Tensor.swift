/// A dense, row-major (C-contiguous) `Float` tensor with value semantics.
///
/// ## Storage, ownership and aliasing
///
/// The elements live in one 64-byte-aligned allocation owned by a `TensorStorage` (a final class,
/// freed in its `deinit`). Copying a tensor shares that storage; the first mutation of a shared
/// storage copies it (copy on write), so a `Tensor` behaves as a plain value and can be passed
/// between tasks freely. The one rule for kernel code:
///
/// - **Read** through `pointer` or a `MatrixView` (`matrix`, `rows`, `columns`, `transposed`).
///   A view holds the storage, so it stays valid on its own and sees the elements as they were:
///   mutating the tensor while a view of it is alive copies the tensor first.
/// - **Write** through `mutablePointer` or a `MutableMatrixView` (`mutableMatrix()`). These make
///   the storage unique first and then *borrow* it: they are valid while the tensor variable they
///   came from is in scope and not mutated or reassigned by other means. Never store or return
///   them. Workers writing through one mutable view in parallel must touch disjoint elements.
///
/// So a kernel call reads like the maths, `GEMM.multiply(a.matrix, w.matrix.transposed, into:
/// y.mutableMatrix())`, with no closure per buffer.
public struct Tensor: Sendable {
    /// The extent of each dimension, outermost first.
    public private(set) var shape: [Int]
    @usableFromInline var storage: TensorStorage

    /// Creates a tensor from its shape and row-major elements (copied).
    /// - Precondition: `scalars.count` equals the product of `shape`.
    public init(shape: [Int], scalars: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        precondition(shape.reduce(1, *) == scalars.count, "shape \(shape) does not match \(scalars.count) elements")
        self.shape = shape
        storage = TensorStorage(count: scalars.count)
        scalars.withUnsafeBufferPointer { source in
            if let s = source.baseAddress { storage.base.update(from: s, count: source.count) }
        }
    }

    /// A tensor of the given shape filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        self.init(unsafeUninitializedShape: shape)
        storage.base.update(repeating: value, count: count)
    }

    /// A tensor whose elements are not initialised, for outputs that a kernel overwrites
    /// entirely (skips the zero-fill, which for large outputs costs as much as a light kernel).
    public init(unsafeUninitializedShape shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in \(shape)")
        self.shape = shape
        storage = TensorStorage(count: shape.reduce(1, *))
    }

    /// The rows of `parts` (each `[rows, C]` with the same C, or `[C]` for one row) one after the other.
    public init(concatenatingRows parts: [Tensor]) {
        let columns = parts.first?.shape.last ?? 0
        precondition(parts.allSatisfy { $0.shape.last == columns }, "concatenatingRows: widths differ")
        let rows = parts.reduce(0) { $0 + $1.count } / max(columns, 1)
        self.init(unsafeUninitializedShape: [rows, columns])
        var offset = 0
        for part in parts {
            storage.base.advanced(by: offset).update(from: part.pointer, count: part.count)
            offset += part.count
        }
    }

    /// The number of elements.
    @inlinable public var count: Int { storage.count }

    /// The number of dimensions.
    @inlinable public var rank: Int { shape.count }

    /// The first element, for kernels that only read (see the type's rule).
    @inlinable public var pointer: UnsafePointer<Float> { UnsafePointer(storage.base) }

    /// The first element, for kernels that write: makes the storage unique first (see the type's rule).
    @inlinable public var mutablePointer: UnsafeMutablePointer<Float> {
        mutating get {
            if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
            return storage.base
        }
    }

    /// Element `index` in row-major order. For setup code and tests; kernels use pointers.
    public subscript(flat index: Int) -> Float {
        get {
            precondition(index >= 0 && index < count, "index \(index) out of range for \(shape)")
            return storage.base[index]
        }
        set {
            precondition(index >= 0 && index < count, "index \(index) out of range for \(shape)")
            mutablePointer[index] = newValue
        }
    }

    /// Calls `body` with the elements in row-major order (no copy), for sequence operations.
    public func withElements<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try withExtendedLifetime(storage) { try body(UnsafeBufferPointer(start: storage.base, count: count)) }
    }

    /// A copy of the elements in row-major order.
    public func toArray() -> [Float] {
        Array(UnsafeBufferPointer(start: pointer, count: count))
    }

    /// Elements `range` (row-major) as an array.
    public func toArray(_ range: Range<Int>) -> [Float] {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "range \(range) out of bounds for \(shape)")
        return Array(UnsafeBufferPointer(start: pointer + range.lowerBound, count: range.count))
    }

    /// Rows `range` of a tensor seen as `[rows, shape.last]`, as a new tensor `[range.count, shape.last]`.
    public func copyingRows(_ range: Range<Int>) -> Tensor {
        let columns = shape.last ?? 1
        return Tensor(shape: [range.count, columns], scalars: toArray((range.lowerBound * columns)..<(range.upperBound * columns)))
    }

    /// The same elements seen with another shape of equal element count (shares the storage).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var t = self
        t.reshape(newShape)
        return t
    }

    /// Reshapes in place.
    public mutating func reshape(_ newShape: [Int]) {
        precondition(newShape.allSatisfy { $0 >= 0 } && newShape.reduce(1, *) == count, "cannot reshape \(shape) to \(newShape)")
        shape = newShape
    }

    /// The largest absolute difference between two tensors of the same shape.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "shape \(shape) differs from \(other.shape)")
        let (a, b) = (pointer, other.pointer)
        var worst: Float = 0
        for i in 0..<count {
            let d = abs(a[i] - b[i])
            if d > worst || d.isNaN { worst = d.isNaN ? .infinity : d }
        }
        return worst
    }

    /// The population standard deviation of the elements.
    public func standardDeviation() -> Float {
        guard count > 0 else { return 0 }
        let a = pointer
        var mean = 0.0
        for i in 0..<count { mean += Double(a[i]) }
        mean /= Double(count)
        var variance = 0.0
        for i in 0..<count { variance += (Double(a[i]) - mean) * (Double(a[i]) - mean) }
        return Float((variance / Double(count)).squareRoot())
    }
}

extension Tensor: Equatable {
    /// Equal shapes and elements compared as `Float`s (so NaN differs from itself, as in `[Float]`).
    public static func == (lhs: Tensor, rhs: Tensor) -> Bool {
        guard lhs.shape == rhs.shape else { return false }
        let (a, b) = (lhs.pointer, rhs.pointer)
        for i in 0..<lhs.count where a[i] != b[i] { return false }
        return true
    }
}

/// The allocation behind one or more `Tensor`s: written only while a single tensor holds it
/// (copy on write), read-only once shared — which is what makes `Tensor` `Sendable`.
@usableFromInline final class TensorStorage: @unchecked Sendable {
    /// Alignment of every allocation: one AVX-512 register, one cache line.
    static let alignment = 64

    @usableFromInline let base: UnsafeMutablePointer<Float>
    @usableFromInline let count: Int
    /// The block `base` lies in.
    private let allocation: UnsafeMutableRawPointer

    /// Uninitialised storage for `count` floats (Float is trivial, so no initialisation is owed).
    init(count: Int) {
        self.count = count
        // Over-allocate and align by hand rather than ask the allocator for 64-byte alignment:
        // glibc serves large aligned requests with fresh mappings, so every big temporary paid
        // its page faults again (about 3 % of a click), where plain blocks are reused.
        let bytes = max(count, 1) * MemoryLayout<Float>.stride + Self.alignment
        allocation = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: MemoryLayout<Float>.alignment)
        let aligned = (Int(bitPattern: allocation) + Self.alignment - 1) & ~(Self.alignment - 1)
        base = (allocation + (aligned - Int(bitPattern: allocation))).bindMemory(to: Float.self, capacity: max(count, 1))
    }

    @usableFromInline func copy() -> TensorStorage {
        let other = TensorStorage(count: count)
        other.base.update(from: base, count: count)
        return other
    }

    deinit { allocation.deallocate() }
}

// MARK: - Views

/// A read-only window of a tensor as a matrix: `rows × columns` elements, element (i, j) at
/// `base[i·rowStride + j·columnStride]`. Holds the tensor's storage (see `Tensor`'s rule), so it
/// stays valid by itself; row bands, column blocks (one head of a fused projection) and
/// transposes are views of the same elements, with no copy.
public struct MatrixView: @unchecked Sendable {
    public let base: UnsafePointer<Float>
    public let rows: Int
    public let columns: Int
    public let rowStride: Int
    public let columnStride: Int
    /// Keeps the elements alive; nil for views of memory the caller owns.
    let owner: AnyObject?

    /// A view of memory the caller keeps alive for as long as the view is used.
    public init(unowned base: UnsafePointer<Float>, rows: Int, columns: Int, rowStride: Int, columnStride: Int = 1) {
        self.init(base: base, rows: rows, columns: columns, rowStride: rowStride, columnStride: columnStride, owner: nil)
    }

    init(base: UnsafePointer<Float>, rows: Int, columns: Int, rowStride: Int, columnStride: Int, owner: AnyObject?) {
        (self.base, self.rows, self.columns, self.rowStride, self.columnStride, self.owner) =
            (base, rows, columns, rowStride, columnStride, owner)
    }

    /// Rows `range`.
    public func rows(_ range: Range<Int>) -> MatrixView {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of \(rows)")
        return MatrixView(base: base + range.lowerBound * rowStride, rows: range.count, columns: columns,
                          rowStride: rowStride, columnStride: columnStride, owner: owner)
    }

    /// Columns `range`.
    public func columns(_ range: Range<Int>) -> MatrixView {
        precondition(range.lowerBound >= 0 && range.upperBound <= columns, "columns \(range) of \(columns)")
        return MatrixView(base: base + range.lowerBound * columnStride, rows: rows, columns: range.count,
                          rowStride: rowStride, columnStride: columnStride, owner: owner)
    }

    /// Block `index` of `size` rows: one head's rows of a per-head stacked matrix.
    public func rowBlock(_ index: Int, size: Int) -> MatrixView { rows((index * size)..<((index + 1) * size)) }

    /// Block `index` of `size` columns: one head's channels of an interleaved projection.
    public func columnBlock(_ index: Int, size: Int) -> MatrixView { columns((index * size)..<((index + 1) * size)) }

    /// The transpose, as a view.
    public var transposed: MatrixView {
        MatrixView(base: base, rows: columns, columns: rows, rowStride: columnStride, columnStride: rowStride, owner: owner)
    }

    public subscript(row: Int, column: Int) -> Float { base[row * rowStride + column * columnStride] }
}

/// A writable window of a tensor as a matrix (element (i, j) at `base[i·rowStride + j·columnStride]`).
/// Borrowed: valid while the tensor it came from is in scope and not otherwise mutated (see
/// `Tensor`'s rule); never store it.
public struct MutableMatrixView: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Float>
    public let rows: Int
    public let columns: Int
    public let rowStride: Int
    public let columnStride: Int

    /// A view of memory the caller owns (scratch buffers).
    public init(base: UnsafeMutablePointer<Float>, rows: Int, columns: Int, rowStride: Int, columnStride: Int = 1) {
        (self.base, self.rows, self.columns, self.rowStride, self.columnStride) = (base, rows, columns, rowStride, columnStride)
    }

    /// Rows `range`.
    public func rows(_ range: Range<Int>) -> MutableMatrixView {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) of \(rows)")
        return MutableMatrixView(base: base + range.lowerBound * rowStride, rows: range.count, columns: columns,
                                 rowStride: rowStride, columnStride: columnStride)
    }

    /// Columns `range`.
    public func columns(_ range: Range<Int>) -> MutableMatrixView {
        precondition(range.lowerBound >= 0 && range.upperBound <= columns, "columns \(range) of \(columns)")
        return MutableMatrixView(base: base + range.lowerBound * columnStride, rows: rows, columns: range.count,
                                 rowStride: rowStride, columnStride: columnStride)
    }

    /// Block `index` of `size` rows.
    public func rowBlock(_ index: Int, size: Int) -> MutableMatrixView { rows((index * size)..<((index + 1) * size)) }

    /// Block `index` of `size` columns.
    public func columnBlock(_ index: Int, size: Int) -> MutableMatrixView { columns((index * size)..<((index + 1) * size)) }

    /// The transpose, as a view.
    public var transposed: MutableMatrixView {
        MutableMatrixView(base: base, rows: columns, columns: rows, rowStride: columnStride, columnStride: rowStride)
    }

    /// The same window, read-only. It borrows like this view does.
    public var readOnly: MatrixView {
        MatrixView(unowned: base, rows: rows, columns: columns, rowStride: rowStride, columnStride: columnStride)
    }

    public subscript(row: Int, column: Int) -> Float {
        get { base[row * rowStride + column * columnStride] }
        nonmutating set { base[row * rowStride + column * columnStride] = newValue }
    }
}

extension Tensor {
    /// The tensor as a matrix `[count / shape.last, shape.last]` (a rank-1 tensor is one row).
    public var matrix: MatrixView {
        let columns = shape.last ?? 1
        return MatrixView(base: pointer, rows: columns == 0 ? 0 : count / columns, columns: columns, rowStride: columns,
                          columnStride: 1, owner: storage)
    }

    /// The tensor as a writable matrix `[count / shape.last, shape.last]` (see the type's rule).
    public mutating func mutableMatrix() -> MutableMatrixView {
        let columns = shape.last ?? 1
        return MutableMatrixView(base: mutablePointer, rows: columns == 0 ? 0 : count / columns, columns: columns,
                                 rowStride: columns)
    }
}

// MARK: - Layout changes

extension Tensor {
    /// Permutes a rank-3 `[A, B, C]` tensor to `[C, A, B]` (e.g. HWC → CHW).
    public func channelsFirst() -> Tensor {
        precondition(rank == 3, "channelsFirst expects rank 3, got \(shape)")
        let (h, w, c) = (shape[0], shape[1], shape[2])
        var out = Tensor(unsafeUninitializedShape: [c, h, w])
        Tensor.transpose(pointer, rows: h * w, columns: c, into: out.mutablePointer)
        return out
    }

    /// Permutes a rank-3 `[C, A, B]` tensor to `[A, B, C]` (e.g. CHW → HWC).
    public func channelsLast() -> Tensor {
        precondition(rank == 3, "channelsLast expects rank 3, got \(shape)")
        let (c, h, w) = (shape[0], shape[1], shape[2])
        var out = Tensor(unsafeUninitializedShape: [h, w, c])
        Tensor.transpose(pointer, rows: c, columns: h * w, into: out.mutablePointer)
        return out
    }

    /// `dst[j·rows + i] = src[i·columns + j]`, in cache-sized blocks of rows (so the strided side
    /// of the copy stays in L1), split over the cores.
    static func transpose(_ s: UnsafePointer<Float>, rows: Int, columns: Int, into d: UnsafeMutablePointer<Float>) {
        let block = 64
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
