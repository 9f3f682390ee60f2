import CKernels
import Foundation
import XCTest
@testable import Kernels

/// The AVX2 elementwise kernels (the portable paths' GELU, exp, layer norm and softmax on CPUs
/// without AVX-512), called directly so that they are checked on every CPU with AVX2, AVX-512 ones
/// included: against double-precision references, at lengths with every tail of eight lanes; and
/// GELU and exp against the AVX-512 kernels bit for bit where those run.
final class AVX2KernelsTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(gs_has_avx2_fma() != 0, "no AVX2/FMA on this CPU")
    }

    func testExpIsAccurateAndMatchesTheAVX512Kernel() {
        var x = (0..<2003).map { Float($0) / 20 - 80 } + [-87.3, -87.2, 88.3, 88.7, 0, -0.0, -200, 200]
        let original = x
        x.withUnsafeMutableBufferPointer { gs_exp_avx2($0.baseAddress!, $0.count) }
        for (e, v) in zip(x, original) where v >= -87.3 && v <= 88.7 {
            let exact = Foundation.exp(Double(v))
            XCTAssertLessThanOrEqual(abs(Double(e) - exact) / exact, 3e-7, "exp(\(v))")
        }
        XCTAssertTrue(x.allSatisfy(\.isFinite), "the clamped range stays finite")
        if gs_has_avx512() != 0 {
            var wide = original
            wide.withUnsafeMutableBufferPointer { gs_exp($0.baseAddress!, $0.count) }
            XCTAssertEqual(x.map(\.bitPattern), wide.map(\.bitPattern), "exp: the AVX-512 kernel's bits")
        }
    }

    func testGELUIsAccurateKeepsNaNAndMatchesTheAVX512Kernel() {
        let root2 = Float(2).squareRoot()
        // 48 001 + 8 values: a tail of one lane.
        let original = (0..<48_001).map { Float($0) / 2000 - 12 } + [.nan, .infinity, 0, -0.0, 3.99 * root2, 4 * root2, 1e-30, -1e-30]
        for length in [original.count, 7, 8, 9, 1] {
            var x = Array(original.suffix(length))
            let input = x
            x.withUnsafeMutableBufferPointer { gs_gelu_avx2($0.baseAddress!, $0.count) }
            for (y, v) in zip(x, input) {
                if v.isNaN { XCTAssertTrue(y.isNaN, "gelu(nan)"); continue }
                if v == .infinity { XCTAssertEqual(y, v, "gelu(inf)"); continue }
                let exact = 0.5 * Double(v) * (1 + Foundation.erf(Double(v) / Double(2).squareRoot()))
                XCTAssertLessThanOrEqual(abs(Double(y) - exact), 1.5e-7 * max(1, abs(Double(v))), "gelu(\(v)), length \(length)")
            }
            if gs_has_avx512() != 0 {
                var wide = input
                wide.withUnsafeMutableBufferPointer { gs_gelu($0.baseAddress!, $0.count) }
                XCTAssertEqual(x.map(\.bitPattern), wide.map(\.bitPattern), "gelu: the AVX-512 kernel's bits, length \(length)")
            }
        }
    }

    /// Rows of 1…4096 columns in a wider buffer, some far from zero (so a row's maximum must not
    /// see the padding): the padding beyond each row is left alone.
    func testSoftmaxRowsMatchesDoublePrecisionAndStaysInItsRow() {
        for columns in [1, 5, 8, 9, 16, 45, 4096] {
            let (rows, ld) = (6, columns + 3)
            var source = randomTensor([rows, ld], seed: UInt64(columns), scale: 8).toArray()
            for c in 0..<ld { source[c] -= 100; source[ld + c] += 100 }  // rows 0 and 1: all below, all above 0
            var x = source
            x.withUnsafeMutableBufferPointer { gs_softmax_rows_avx2($0.baseAddress!, rows, columns, ld) }
            for r in 0..<rows {
                let row = source[(r * ld)..<(r * ld + columns)].map(Double.init)
                let m = row.max()!
                let e = row.map { Foundation.exp($0 - m) }
                let total = e.reduce(0, +)
                for c in 0..<columns {
                    XCTAssertEqual(Double(x[r * ld + c]), e[c] / total, accuracy: 1e-6, "softmax \(columns) columns")
                }
                for c in columns..<ld { XCTAssertEqual(x[r * ld + c], source[r * ld + c], "padding of row \(r) written") }
            }
        }
    }

    func testLayerNormMatchesReference() {
        for channels in [1, 4, 7, 16, 64, 96, 100, 768] {
            let x = randomTensor([33, channels], seed: UInt64(channels), scale: 4)
            let w = randomTensor([channels], seed: 50), b = randomTensor([channels], seed: 51)
            var y = x.toArray()
            let (wp, bp) = (w.pointer, b.pointer)
            y.withUnsafeMutableBufferPointer { gs_layer_norm_avx2($0.baseAddress!, 33, channels, wp, bp, 1e-6) }
            let ref = ReferenceKernels.layerNorm(x.toArray(), channels: channels, weight: w.toArray(), bias: b.toArray(), eps: 1e-6)
            assertClose(y, ref, tolerance: 2e-5, "layerNorm \(channels)")
        }
    }

    /// Global attention is one group: the portable path spreads its heads over the workers, and
    /// the result is the same whatever the number of workers.
    func testPortableAttentionOverHeadsMatchesReferenceOnAnyWorkers() throws {
        try XCTSkipIf(Accelerated.isAvailable, "the AVX-512 attention runs here (GEOSAM2_PORTABLE_KERNELS=avx2 tests this path)")
        let (nq, nk, heads, hd) = (70, 90, 4, 24)
        let width = heads * hd
        let q = randomTensor([nq, width], seed: 1), k = randomTensor([nk, width], seed: 2), v = randomTensor([nk, width], seed: 3)
        func run(workers: Int) -> [Float] {
            var out = [Float](repeating: 0, count: nq * width)
            let (qp, kp, vp) = (q.pointer, k.pointer, v.pointer)
            Parallel.withWorkers(workers) {
                out.withUnsafeMutableBufferPointer { op in
                    Attention.batched(q: qp, qStride: width, qBatchStride: 0, k: kp, kStride: width, kBatchStride: 0,
                                      v: vp, vStride: width, vBatchStride: 0, into: op.baseAddress!, outStride: width,
                                      outBatchStride: 0, batches: 1, queryCount: nq, keyCount: nk, heads: heads, headDim: hd)
                }
            }
            return out
        }
        let one = run(workers: 1), all = run(workers: 8)
        XCTAssertEqual(one.map(\.bitPattern), all.map(\.bitPattern), "attention depends on the workers")
        let expected = ReferenceKernels.attention(q: q.toArray(), k: k.toArray(), v: v.toArray(), queries: nq, keys: nk, heads: heads, headDim: hd)
        assertClose(one, expected, tolerance: 1e-5, "portable attention")
    }
}
