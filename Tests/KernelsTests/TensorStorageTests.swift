import XCTest
@testable import Kernels

/// The tensor storage rule (`Tensor`'s doc comment): aligned storage, copy on write, views that
/// keep their storage alive, and the view-based kernel calls against plain loops.
final class TensorStorageTests: XCTestCase {
    /// Under `MemoryPolicy.retainFreedMemory` (encode's setting) a freed large tensor's memory is
    /// reused and tensors still start zeroed where they promise to.
    func testRetainedMemoryIsReusedAndTensorsStillStartZeroed() throws {
        #if os(Linux)
        XCTAssertTrue(MemoryPolicy.retainFreedMemory(), "glibc refused the setting")
        #endif
        var big = Tensor(shape: [64, 1024, 1024])  // 256 MB: beyond glibc's largest mmap threshold
        big.mutablePointer.update(repeating: 7, count: big.count)
        big = Tensor(shape: [0])
        let again = Tensor(shape: [64, 1024, 1024])
        let p = again.pointer
        XCTAssertTrue((0..<again.count).allSatisfy { p[$0] == 0 }, "a new tensor must be zeroed even on reused memory")
    }

    func testStorageIsAlignedForAVX512() {
        for count in [0, 1, 3, 17, 4096, 100_003] {
            let t = Tensor(shape: [count], repeating: 1)
            XCTAssertEqual(Int(bitPattern: t.pointer) % 64, 0, "count \(count)")
        }
    }

    func testCopiesShareUntilMutatedThenDiverge() {
        let a = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        var b = a
        XCTAssertEqual(a.pointer, b.pointer, "a copy shares the storage")
        b[flat: 4] = 50
        XCTAssertNotEqual(a.pointer, b.pointer, "the first write to shared storage copies it")
        XCTAssertEqual(a.toArray(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(b.toArray(), [1, 2, 3, 4, 50, 6])
        // A unique tensor is written in place.
        let before = b.pointer
        b.scale(by: 2)
        XCTAssertEqual(b.pointer, before)
        XCTAssertEqual(b.toArray(), [2, 4, 6, 8, 100, 12])
    }

    func testReadViewIsASnapshotThatOutlivesItsTensor() {
        var t: Tensor? = Tensor(shape: [3, 2], scalars: [1, 2, 3, 4, 5, 6])
        let view = t!.matrix.rows(1..<3).transposed  // [[3, 5], [4, 6]]
        t![flat: 2] = -1  // the view holds the storage, so this write copies the tensor
        XCTAssertEqual(t![flat: 2], -1)
        t = nil
        XCTAssertEqual([view[0, 0], view[0, 1], view[1, 0], view[1, 1]], [3, 5, 4, 6])
    }

    func testMutableViewWritesIntoItsTensorAndBlocksAddressHeads() {
        var t = Tensor(shape: [4, 6])
        let m = t.mutableMatrix()
        // Head 1 of 3 (columns 2..<4), rows 1..<3.
        let block = m.columnBlock(1, size: 2).rows(1..<3)
        XCTAssertEqual(block.rowStride, 6)
        block[0, 0] = 7
        block[1, 1] = 8
        XCTAssertEqual(t[flat: 1 * 6 + 2], 7)
        XCTAssertEqual(t[flat: 2 * 6 + 3], 8)
        XCTAssertEqual(t.toArray().filter { $0 != 0 }.count, 2)
    }

    func testMutableViewOfSharedTensorLeavesTheCopyAlone() {
        let original = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        var t = original
        t.mutableMatrix()[0, 1] = 9
        XCTAssertEqual(original.toArray(), [1, 2, 3, 4])
        XCTAssertEqual(t.toArray(), [1, 9, 3, 4])
    }

    func testConcatenatingAndCopyingRows() {
        let a = Tensor(shape: [1, 2], scalars: [1, 2]), b = Tensor(shape: [2, 2], scalars: [3, 4, 5, 6])
        let c = Tensor(concatenatingRows: [a, b])
        XCTAssertEqual(c.shape, [3, 2])
        XCTAssertEqual(c.toArray(), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(c.copyingRows(1..<3), b)
        XCTAssertEqual(c.toArray(2..<5), [3, 4, 5])
        XCTAssertEqual(c.reshaped([6]).shape, [6])
    }

    func testEqualityComparesFloats() {
        XCTAssertEqual(Tensor(shape: [2], scalars: [0, 1]), Tensor(shape: [2], scalars: [-0.0, 1]))
        XCTAssertNotEqual(Tensor(shape: [2], scalars: [.nan, 1]), Tensor(shape: [2], scalars: [.nan, 1]))
        XCTAssertNotEqual(Tensor(shape: [2, 1], scalars: [0, 1]), Tensor(shape: [1, 2], scalars: [0, 1]))
    }

    /// Every combination of transposed operands, on blocks of wider matrices, against the plain product.
    func testMultiplyOnViewsMatchesThePlainProduct() {
        let (m, n, k) = (5, 7, 6)
        let wideA = randomTensor([2 * m, 3 * k], seed: 1), wideB = randomTensor([3 * k, 2 * n], seed: 2)
        let wideAt = randomTensor([3 * k, 2 * m], seed: 3), wideBt = randomTensor([2 * n, 3 * k], seed: 4)
        for transposeA in [false, true] {
            for transposeB in [false, true] {
                let a = transposeA ? wideAt.matrix.rowBlock(1, size: k).columnBlock(1, size: m).transposed
                                   : wideA.matrix.rowBlock(1, size: m).columnBlock(2, size: k)
                let b = transposeB ? wideBt.matrix.rowBlock(0, size: n).columnBlock(2, size: k).transposed
                                   : wideB.matrix.rowBlock(1, size: k).columnBlock(1, size: n)
                var c = Tensor(shape: [m, 2 * n], repeating: 1)
                GEMM.multiply(a, b, into: c.mutableMatrix().columnBlock(1, size: n), alpha: 2, beta: 1)
                for i in 0..<m {
                    for j in 0..<(2 * n) {
                        var expected: Float = 1
                        if j >= n {
                            var acc: Double = 0
                            for e in 0..<k { acc += Double(a[i, e]) * Double(b[e, j - n]) }
                            expected = Float(2 * acc + 1)
                        }
                        XCTAssertEqual(c[flat: i * 2 * n + j], expected, accuracy: 1e-4, "tA \(transposeA) tB \(transposeB) (\(i), \(j))")
                    }
                }
            }
        }
    }

    /// The packed product on views: transposed input, row-major and transposed output, accumulate.
    func testPackedApplyOnViews() throws {
        try XCTSkipUnless(Accelerated.hasPackedKernels, "packed kernels not available")
        let (rows, inFeatures, outFeatures) = (40, 24, 37)
        let w = randomTensor([outFeatures, inFeatures], seed: 5), bias = randomTensor([outFeatures], seed: 6)
        let xT = randomTensor([inFeatures, rows], seed: 7)
        let x = xT.matrix.transposed  // [rows, in], inner stride `rows`
        func expected(_ r: Int, _ o: Int) -> Float {
            var acc = Double(bias[flat: o])
            for i in 0..<inFeatures { acc += Double(x[r, i]) * Double(w[flat: o * inFeatures + i]) }
            return Float(acc)
        }
        let packed = PackedWeight(w)
        var y = Tensor(shape: [rows, outFeatures], repeating: 0.5)
        packed.apply(x, bias: bias, into: y.mutableMatrix(), accumulate: true)
        var yT = Tensor(shape: [outFeatures, rows])
        packed.apply(x, bias: bias, into: yT.mutableMatrix().transposed)
        for r in 0..<rows {
            for o in 0..<outFeatures {
                XCTAssertEqual(y[flat: r * outFeatures + o], expected(r, o) + 0.5, accuracy: 1e-4)
                XCTAssertEqual(yT[flat: o * rows + r], expected(r, o), accuracy: 1e-4)
            }
        }
        // Per-head packing of a column block equals packing a copy of that block.
        let wide = randomTensor([rows, 3 * inFeatures], seed: 8)
        let block = Tensor(shape: [rows, inFeatures], scalars: (0..<rows).flatMap { r in
            wide.toArray((r * 3 * inFeatures + inFeatures)..<(r * 3 * inFeatures + 2 * inFeatures)) })
        let probe = randomTensor([3, inFeatures], seed: 9)
        var fromView = Tensor(shape: [3, rows]), fromCopy = Tensor(shape: [3, rows])
        PackedWeight(weight: wide.matrix.columnBlock(1, size: inFeatures)).apply(probe.matrix, into: fromView.mutableMatrix())
        PackedWeight(block).apply(probe.matrix, into: fromCopy.mutableMatrix())
        XCTAssertEqual(fromView, fromCopy)
    }
}
