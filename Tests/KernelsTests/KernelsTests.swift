import Foundation
import XCTest
@testable import Kernels

func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = SplitMix64(state: seed)
    let n = shape.reduce(1, *)
    return Tensor(shape: shape, scalars: (0..<n).map { _ in Float.random(in: -scale...scale, using: &rng) })
}

func assertClose(_ a: [Float], _ b: [Float], tolerance: Float, _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "count " + message, file: file, line: line)
    var worst: Float = 0
    var at = 0
    for i in 0..<min(a.count, b.count) {
        let d = abs(a[i] - b[i])
        if !(d <= worst) { worst = d; at = i }
    }
    XCTAssertLessThanOrEqual(worst, tolerance, "\(message): worst difference \(worst) at \(at)", file: file, line: line)
}

final class GEMMTests: XCTestCase {
    func testLinearMatchesReference() {
        let x = randomTensor([37, 19], seed: 1)
        let w = randomTensor([23, 19], seed: 2)
        let b = randomTensor([23], seed: 3)
        let y = GEMM.linear(x, weight: w, bias: b)
        XCTAssertEqual(y.shape, [37, 23])
        var wt = [Float](repeating: 0, count: 19 * 23)
        for o in 0..<23 { for i in 0..<19 { wt[i * 23 + o] = w[flat: o * 19 + i] } }
        var expected = ReferenceKernels.matrixProduct(x.toArray(), wt, m: 37, n: 23, k: 19)
        for r in 0..<37 { for o in 0..<23 { expected[r * 23 + o] += b[flat: o] } }
        assertClose(y.toArray(), expected, tolerance: 1e-5, "linear")
    }

    func testStridedProductReadsColumnSlices() {
        // A 4×6 matrix whose columns 2..<5 form the operand: leading dimension 6.
        let a = randomTensor([4, 6], seed: 4)
        let b = randomTensor([3, 5], seed: 5)
        var c = [Float](repeating: 0, count: 20)
        let ap = a.pointer
        let bp = b.pointer
        c.withUnsafeMutableBufferPointer { cp in
            GEMM.multiply(ap + 2, lda: 6, bp, ldb: 5, into: cp.baseAddress!, ldc: 5, m: 4, n: 5, k: 3)
        }
        let slice = (0..<4).flatMap { r in (2..<5).map { a[flat: r * 6 + $0] } }
        assertClose(c, ReferenceKernels.matrixProduct(slice, b.toArray(), m: 4, n: 5, k: 3), tolerance: 1e-5, "strided")
    }
}

final class ConvolutionTests: XCTestCase {
    func testConv2dChannelsFirstInputMatchesReference() {
        let x = randomTensor([3, 21, 18], seed: 6)
        let w = randomTensor([5, 3, 7, 7], seed: 7, scale: 0.3)
        let b = randomTensor([5], seed: 8)
        let y = Convolution.conv2d(x, layout: .channelsFirst(channels: 3, height: 21, width: 18), weight: w, bias: b, stride: 4, padding: 3)
        let expected = ReferenceKernels.conv2d(x, weight: w, bias: b, stride: 4, padding: 3)
        XCTAssertEqual(y.shape, [6, 5, 5])
        assertClose(y.channelsFirst().toArray(), expected.toArray(), tolerance: 1e-5, "conv2d CHW")
    }

    func testConv2dChannelsLastInputMatchesReference() {
        let x = randomTensor([4, 10, 12], seed: 9)
        let w = randomTensor([6, 4, 2, 2], seed: 10)
        let b = randomTensor([6], seed: 11)
        let y = Convolution.conv2d(x.channelsLast(), layout: .channelsLast(channels: 4, height: 10, width: 12), weight: w, bias: b, stride: 2, padding: 0)
        let expected = ReferenceKernels.conv2d(x, weight: w, bias: b, stride: 2, padding: 0)
        assertClose(y.channelsFirst().toArray(), expected.toArray(), tolerance: 1e-5, "conv2d HWC")
    }

    func testTransposedConvolutionMatchesReference() {
        let x = randomTensor([8, 5, 7], seed: 12)
        let w = randomTensor([8, 3, 2, 2], seed: 13)
        let b = randomTensor([3], seed: 14)
        let y = Convolution.transposedConv2x2(x.channelsLast(), weight: w, bias: b)
        XCTAssertEqual(y.shape, [10, 14, 3])
        assertClose(y.channelsFirst().toArray(), ReferenceKernels.transposedConv2x2(x, weight: w, bias: b).toArray(), tolerance: 1e-5, "convT")
    }

    func testMaxPoolTakesTheLargestOfEachQuad() {
        let x = Tensor(shape: [2, 4, 1], scalars: [1, 5, 2, 0, 3, -1, 7, 8])
        XCTAssertEqual(Pooling.maxPool2x2(x).toArray(), [5, 8])
    }
}

final class NormalizationAndActivationTests: XCTestCase {
    func testLayerNormMatchesDoubleReference() {
        var x = randomTensor([300, 96], seed: 15, scale: 4)
        let original = x
        let w = randomTensor([96], seed: 16), b = randomTensor([96], seed: 17)
        Normalization.layerNorm(&x, weight: w, bias: b, eps: 1e-6)
        let expected = ReferenceKernels.layerNorm(original.toArray(), channels: 96, weight: w.toArray(), bias: b.toArray(), eps: 1e-6)
        assertClose(x.toArray(), expected, tolerance: 2e-5, "layerNorm")
    }

    func testExactGELU() {
        var x = randomTensor([40000], seed: 18, scale: 6)
        let original = x
        Activations.gelu(&x)
        assertClose(x.toArray(), original.toArray().map(ReferenceKernels.gelu), tolerance: 2e-6, "gelu")
        // The tanh approximation differs from the exact form by ~1e-4 around |x| ≈ 2: make sure it isn't used.
        var probe = Tensor(shape: [1], scalars: [2])
        Activations.gelu(&probe)
        XCTAssertEqual(probe[flat: 0], 1.9544997, accuracy: 1e-6)
    }
}

final class AttentionTests: XCTestCase {
    func testMultiHeadAttentionMatchesReference() {
        let (nq, nk, heads, hd) = (9, 31, 4, 8)
        let q = randomTensor([nq, heads * hd], seed: 19), k = randomTensor([nk, heads * hd], seed: 20)
        let v = randomTensor([nk, heads * hd], seed: 21)
        var out = [Float](repeating: 0, count: nq * heads * hd)
        var scores = [Float](repeating: 0, count: nq * nk)
        let qp = q.pointer
        let kp = k.pointer
        let vp = v.pointer
        out.withUnsafeMutableBufferPointer { op in
            scores.withUnsafeMutableBufferPointer { sp in
                Attention.scaledDotProduct(
                    q: qp, qStride: heads * hd, k: kp, kStride: heads * hd,
                    v: vp, vStride: heads * hd, into: op.baseAddress!, outStride: heads * hd,
                    queryCount: nq, keyCount: nk, heads: heads, headDim: hd, scores: sp.baseAddress!)
            }
        }
        assertClose(out, ReferenceKernels.attention(q: q.toArray(), k: k.toArray(), v: v.toArray(), queries: nq, keys: nk, heads: heads, headDim: hd),
                    tolerance: 1e-5, "attention")
    }
}

/// Resampling against outputs of PyTorch's own kernels (`tools/parity/make_kernel_fixtures.py`).
final class ResizeTests: XCTestCase {
    struct Case: Decodable {
        let name: String
        let inputShape: [Int], input: [Float], outputShape: [Int], output: [Float]
    }

    func loadCases() throws -> [Case] {
        struct File: Decodable { let cases: [Case] }
        let url = try XCTUnwrap(Bundle.module.url(forResource: "resize", withExtension: "json", subdirectory: "Fixtures"))
        return try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases
    }

    func testAgainstPyTorch() throws {
        let cases = try loadCases()
        XCTAssertEqual(cases.count, 6)
        for c in cases {
            let x = Tensor(shape: c.inputShape, scalars: c.input)
            let (h, w) = (c.outputShape[1], c.outputShape[2])
            let y: Tensor
            switch c.name {
            case let n where n.hasPrefix("antialiased"): y = Resize.antialiasedBilinear(x, height: h, width: w)
            case let n where n.hasPrefix("bicubic"): y = Resize.bicubic(x, height: h, width: w)
            default: y = Resize.bilinear(x, height: h, width: w)
            }
            XCTAssertEqual(y.shape, c.outputShape, c.name)
            assertClose(y.toArray(), c.output, tolerance: 2e-6, c.name)
        }
    }

    func testNearestTimesTwoRepeatsEachPixel() {
        let x = Tensor(shape: [1, 2, 1], scalars: [3, 4])
        XCTAssertEqual(Resize.nearestTimesTwo(x).toArray(), [3, 3, 4, 4, 3, 3, 4, 4])
    }

    func testAntialiasedResizeOfSameSizeIsIdentity() {
        let x = randomTensor([2, 6, 5], seed: 22)
        XCTAssertEqual(Resize.antialiasedBilinear(x, height: 6, width: 5), x)
    }
}
