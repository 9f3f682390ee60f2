import CKernels
import Foundation
import XCTest
@testable import Kernels

/// The accelerated kernels against the plain reference oracles, at shapes that hit every tail:
/// row counts that are not multiples of the 12-row (AVX-512) or 6-row (AVX2) micro-kernel, output
/// widths that are not multiples of the 32-wide panels, k beyond one 256 block, key counts beyond
/// one 384-key online-softmax block, head dims that are not multiples of 8. The packed GEMM, the
/// flash attention, the softmaxes, the transposed-convolution epilogue and the mask upsampling run
/// on AVX-512 or AVX2 (`GEOSAM2_PORTABLE_KERNELS=avx2` tests the latter on any CPU); the rest need
/// AVX-512.
final class AcceleratedKernelsTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(Accelerated.hasPackedKernels, "no AVX-512 or AVX2 on this CPU (or GEOSAM2_PORTABLE_KERNELS=1)")
    }

    func requireAVX512() throws {
        try XCTSkipUnless(Accelerated.isAvailable, "an AVX-512 kernel: no AVX-512 on this CPU (or GEOSAM2_PORTABLE_KERNELS is set)")
    }

    func referenceLinear(_ x: Tensor, _ w: Tensor, _ b: Tensor?) -> [Float] {
        let (rows, k, n) = (x.shape[0], x.shape[1], w.shape[0])
        var wt = [Float](repeating: 0, count: k * n)
        for o in 0..<n { for i in 0..<k { wt[i * n + o] = w[flat: o * k + i] } }
        var y = ReferenceKernels.matrixProduct(x.toArray(), wt, m: rows, n: n, k: k)
        if let b { for r in 0..<rows { for o in 0..<n { y[r * n + o] += b[flat: o] } } }
        return y
    }

    func testPackedLinearMatchesReference() {
        for (rows, k, n) in [(1, 5, 3), (13, 19, 33), (37, 96, 288), (250, 300, 70), (7, 600, 64), (200, 16, 17)] {
            let x = randomTensor([rows, k], seed: UInt64(rows * 7 + k))
            let w = randomTensor([n, k], seed: UInt64(n * 3 + k))
            let b = randomTensor([n], seed: UInt64(n))
            let packed = PackedWeight(w)
            let y = GEMM.linear(x, weight: w, bias: b, packed: packed)
            assertClose(y.toArray(), referenceLinear(x, w, b), tolerance: 2e-5 * Float(k).squareRoot(), "linear \(rows)×\(k)→\(n)")
            let unbiased = GEMM.linear(x, weight: w, bias: nil, packed: packed)
            assertClose(unbiased.toArray(), referenceLinear(x, w, nil), tolerance: 2e-5 * Float(k).squareRoot(), "no bias \(rows)×\(k)→\(n)")
        }
    }

    func testPackedLinearAccumulatesWithStrides() {
        let (rows, k, n) = (29, 40, 45)
        let x = randomTensor([rows, k + 3], seed: 31)  // operand: columns 0..<k of a wider matrix
        let w = randomTensor([n, k], seed: 32)
        let packed = PackedWeight(w)
        var y = [Float](repeating: 1, count: rows * (n + 5))
        let xp = x.pointer
        y.withUnsafeMutableBufferPointer { yp in
            packed.apply(xp, rows: rows, xStride: k + 3, bias: nil, into: yp.baseAddress!, yStride: n + 5,
                         accumulate: true)
        }
        let dense = Tensor(shape: [rows, k], scalars: (0..<rows).flatMap { r in x.toArray((r * (k + 3))..<(r * (k + 3) + k)) })
        let expected = referenceLinear(dense, w, nil)
        for r in 0..<rows {
            for o in 0..<n { XCTAssertEqual(y[r * (n + 5) + o], expected[r * n + o] + 1, accuracy: 1e-4) }
            for o in n..<(n + 5) { XCTAssertEqual(y[r * (n + 5) + o], 1, "padding column written") }
        }
    }

    /// The decoder's per-head products: one head's columns of a `[T, inner]` matrix packed as a
    /// weight (q·M_hᵀ) or as a right operand (P·M_h), applied to fewer rows than one micro-tile.
    func testThinProductsOnOneHeadsColumns() {
        let (t, inner, hd, h, rows) = (300, 48, 16, 1, 5)
        let m = randomTensor([t, inner], seed: 41)
        let q = randomTensor([rows, hd], seed: 42), p = randomTensor([rows, t], seed: 43)
        var head = [Float](repeating: 0, count: t * hd), transposedHead = [Float](repeating: 0, count: hd * t)
        for r in 0..<t {
            for e in 0..<hd {
                head[r * hd + e] = m[flat: r * inner + h * hd + e]
                transposedHead[e * t + r] = head[r * hd + e]
            }
        }
        var scores = [Float](repeating: 0, count: rows * t), out = [Float](repeating: 0, count: rows * hd)
        let mp = m.pointer
        let asWeight = PackedWeight(rows: mp + h * hd, ldw: inner, outFeatures: t, inFeatures: hd)
        let asRight = PackedWeight(kn: mp + h * hd, ldb: inner, k: t, n: hd)
        let qp = q.pointer
        scores.withUnsafeMutableBufferPointer { asWeight.applySingleThreaded(qp, rows: rows, xStride: hd, bias: nil, into: $0.baseAddress!, yStride: t) }
        let pp = p.pointer
        out.withUnsafeMutableBufferPointer { asRight.applySingleThreaded(pp, rows: rows, xStride: t, bias: nil, into: $0.baseAddress!, yStride: hd) }
        assertClose(scores, ReferenceKernels.matrixProduct(q.toArray(), transposedHead, m: rows, n: t, k: hd), tolerance: 1e-4, "q·M_hᵀ")
        assertClose(out, ReferenceKernels.matrixProduct(p.toArray(), head, m: rows, n: hd, k: t), tolerance: 1e-3, "P·M_h")
    }

    /// A product written straight in packed right-operand layout works as `init(kn:)` of the
    /// plain product would, with `finish` seeing each panel's real columns.
    func testProductPackedAsTheNextRightOperand() {
        for (rows, k, n) in [(130, 20, 48), (97, 33, 64), (12, 5, 7)] {
            let x = randomTensor([rows, k], seed: UInt64(rows + k)), w = randomTensor([n, k], seed: UInt64(n))
            let plain = GEMM.linear(x, weight: w, bias: nil, packed: PackedWeight(w))
            var seen: [Int] = []
            let packed = PackedWeight(w).applyPacked(x.matrix) { block, columns in
                seen.append(columns)
                for i in 0..<rows { for j in 0..<columns { block[i * PackedWeight.panelWidth + j] *= 2 } }
            }
            XCTAssertEqual(seen, stride(from: 0, to: n, by: 32).map { min(32, n - $0) })
            // Use both as the right operand of v·B for a few rows v.
            let v = randomTensor([5, rows], seed: 77)
            let doubled = plain.toArray().map { $0 * 2 }
            let reference = doubled.withUnsafeBufferPointer { PackedWeight(kn: $0.baseAddress!, ldb: n, k: rows, n: n) }
            var a = [Float](repeating: 0, count: 5 * n), b = a
            let vp = v.pointer
            a.withUnsafeMutableBufferPointer { packed.apply(vp, rows: 5, xStride: rows, bias: nil, into: $0.baseAddress!, yStride: n) }
            b.withUnsafeMutableBufferPointer { reference.apply(vp, rows: 5, xStride: rows, bias: nil, into: $0.baseAddress!, yStride: n) }
            XCTAssertEqual(a, b, "\(rows)×\(k)→\(n)")
        }
    }

    /// Feature codes, channel-major, to floats channels-last: bit for bit the plain loop, for signed
    /// codes at an odd byte offset and for byte planes, with channel and pixel counts that are not
    /// multiples of 16.
    func testDequantizeTransposeIsThePlainLoop() throws {
        try XCTSkipUnless(AcceleratedOps.hasDequantizeTranspose, "no AVX-512 or AVX2 on this CPU (or GEOSAM2_PORTABLE_KERNELS=1)")
        var generator = SystemRandomNumberGenerator()
        let codes = FeatureCodesFixture(channels: 37, plane: 301, using: &generator)
        for split in [false, true] {
            let out = codes.dequantize(split: split, runs: [0..<100, 100..<117, 117..<codes.plane]) { signed, high, low, pixels, out in
                AcceleratedOps.dequantizeTranspose(signed: signed, high: high, low: low, channels: codes.channels, plane: codes.plane,
                                                   pixels: pixels, scale: codes.scale, offset: codes.offset, into: out)
            }
            XCTAssertEqual(out, codes.expected, split ? "byte planes" : "signed codes")
        }
    }

    func testFlashAttentionMatchesReference() {
        for (nq, nk, heads, hd) in [(9, 31, 2, 8), (49, 196, 1, 96), (16, 64, 2, 56), (40, 900, 2, 72), (5, 7, 1, 3), (100, 8, 8, 16)] {
            let width = heads * hd
            let q = randomTensor([nq, width], seed: UInt64(nq), scale: 2), k = randomTensor([nk, width], seed: UInt64(nk + 1), scale: 2)
            let v = randomTensor([nk, width], seed: UInt64(nk + 2))
            var out = [Float](repeating: 0, count: nq * width)
            let qp = q.pointer
            let kp = k.pointer
            let vp = v.pointer
            out.withUnsafeMutableBufferPointer { op in
                Attention.batched(
                    q: qp, qStride: width, qBatchStride: 0, k: kp, kStride: width, kBatchStride: 0,
                    v: vp, vStride: width, vBatchStride: 0, into: op.baseAddress!, outStride: width,
                    outBatchStride: 0, batches: 1, queryCount: nq, keyCount: nk, heads: heads, headDim: hd)
            }
            let expected = ReferenceKernels.attention(q: q.toArray(), k: k.toArray(), v: v.toArray(), queries: nq, keys: nk, heads: heads, headDim: hd)
            assertClose(out, expected, tolerance: 2e-6 * Float(hd).squareRoot() + 1e-6, "attention nq \(nq) nk \(nk) hd \(hd)")
        }
    }

    func testVectorisedExpIsAccurate() throws {
        try requireAVX512()
        var x = (0..<2000).map { Float($0) / 20 - 80 }
        let original = x
        x.withUnsafeMutableBufferPointer { gs_exp($0.baseAddress!, $0.count) }
        for (e, v) in zip(x, original) {
            let exact = Foundation.exp(Double(v))
            XCTAssertLessThanOrEqual(abs(Double(e) - exact) / exact, 3e-7, "exp(\(v))")
        }
    }

    /// The table-driven erf inside the vectorised GELU, on a dense grid against double-precision
    /// erf: within about an ulp of the result, NaN kept, the tails saturated.
    func testVectorisedGELUIsAccurate() {
        var x = (0..<48_001).map { Float($0) / 2000 - 12 }
        let root2 = Float(2).squareRoot()
        x += [.nan, .infinity, 0, -0.0, 3.99 * root2, 4 * root2, 1e-30, -1e-30]
        let original = x
        x.withUnsafeMutableBufferPointer { Activations.gelu($0.baseAddress!, count: $0.count) }
        for (y, v) in zip(x, original) {
            if v.isNaN { XCTAssertTrue(y.isNaN, "gelu(nan)"); continue }
            if v.isInfinite { XCTAssertEqual(y, v, "gelu(inf)"); continue }
            let exact = 0.5 * Double(v) * (1 + Foundation.erf(Double(v) / Double(2).squareRoot()))
            XCTAssertLessThanOrEqual(abs(Double(y) - exact), 1.5e-7 * max(1, abs(Double(v))), "gelu(\(v))")
        }
    }

    func testSoftmaxAndLayerNormAndGELU() {
        var s = randomTensor([7, 45], seed: 40, scale: 8)
        var expected = s.toArray()
        for r in 0..<7 {
            let row = expected[(r * 45)..<((r + 1) * 45)].map(Double.init)
            let m = row.max()!
            let e = row.map { Foundation.exp($0 - m) }
            let total = e.reduce(0, +)
            for c in 0..<45 { expected[r * 45 + c] = Float(e[c] / total) }
        }
        Attention.softmaxRows(s.mutablePointer, rows: 7, columns: 45)
        assertClose(s.toArray(), expected, tolerance: 1e-6, "softmax")

        for channels in [4, 16, 64, 96, 100, 768] {
            var x = randomTensor([33, channels], seed: UInt64(channels), scale: 4)
            let original = x
            let w = randomTensor([channels], seed: 50), b = randomTensor([channels], seed: 51)
            Normalization.layerNorm(&x, weight: w, bias: b, eps: 1e-6)
            let ref = ReferenceKernels.layerNorm(original.toArray(), channels: channels, weight: w.toArray(), bias: b.toArray(), eps: 1e-6)
            assertClose(x.toArray(), ref, tolerance: 2e-5, "layerNorm \(channels)")
        }

        var g = randomTensor([100_003], seed: 60, scale: 9)
        let original = g
        Activations.gelu(&g)
        assertClose(g.toArray(), original.toArray().map(ReferenceKernels.gelu), tolerance: 2e-6, "gelu")
    }

    func testTransposedConvEpilogueMatchesUnfusedOps() {
        // Three masks over 40 channels (partial vectors), and SAM2's shape: four masks, 32 channels.
        checkTransposedConvEpilogue(h: 5, w: 6, cin: 24, cout: 40, masks: 3)
        checkTransposedConvEpilogue(h: 4, w: 7, cin: 64, cout: 32, masks: 4)
    }

    func checkTransposedConvEpilogue(h: Int, w: Int, cin: Int, cout: Int, masks: Int) {
        let x = randomTensor([h, w, cin], seed: 70)
        let weight = randomTensor([cin, cout, 2, 2], seed: 71, scale: 0.3)
        let bias = randomTensor([cout], seed: 72)
        let addend = randomTensor([2 * h, 2 * w, cout], seed: 73)
        let lnw = randomTensor([cout], seed: 74), lnb = randomTensor([cout], seed: 75)
        let hyper = randomTensor([masks, cout], seed: 76)
        // Unfused reference: convT, + map, LayerNorm2d, GELU, then the hypernetwork products.
        var expected = ReferenceKernels.transposedConv2x2(x.channelsFirst(), weight: weight, bias: bias).channelsLast()
        expected += addend
        Normalization.layerNorm(&expected, weight: lnw, bias: lnb, eps: 1e-6)
        Activations.gelu(&expected)
        var expectedLogits = [Float](repeating: 0, count: masks * 4 * h * w)
        for k in 0..<masks {
            for p in 0..<(4 * h * w) {
                var acc: Float = 0
                for c in 0..<cout { acc += hyper[flat: k * cout + c] * expected[flat: p * cout + c] }
                expectedLogits[k * 4 * h * w + p] = acc
            }
        }
        let matrix = Convolution.transposedConv2x2Matrix(weight)
        let products = GEMM.linear(x.reshaped([h * w, cin]), weight: matrix, bias: nil, packed: PackedWeight(matrix))
        var out = [Float](repeating: 0, count: 4 * h * w * cout)
        var logits = [Float](repeating: 0, count: masks * 4 * h * w)
        let p = products.pointer
        let b = bias.pointer
        let a = addend.pointer
        let lw = lnw.pointer
        let lb = lnb.pointer
        let hp = hyper.pointer
        out.withUnsafeMutableBufferPointer { o in
            logits.withUnsafeMutableBufferPointer { l in
                AcceleratedOps.transposedConvEpilogue(
                    products: p, height: h, width: w, channels: cout, bias: b,
                    adding: a, norm: (lw, lb, 1e-6), gelu: true,
                    into: o.baseAddress!, hyper: hp, masks: masks, logits: l.baseAddress!)
            }
        }
        assertClose(out, expected.toArray(), tolerance: 2e-5, "convT epilogue")
        assertClose(logits, expectedLogits, tolerance: 1e-4, "hypernetwork products")
    }

    func testUpsampleThresholdRunsAreTheMasksRuns() throws {
        // Logits near 0 everywhere make many short runs, including runs across 16-lane chunks.
        let logits = randomTensor([16, 16], seed: 81, scale: 0.3)
        for (oh, ow, rows, columns) in [(64, 64, 64, 64), (37, 50, 20, 33), (64, 100, 64, 17), (40, 40, 1, 40), (32, 32, 0, 32)] {
            var mask = [UInt8](repeating: 0, count: oh * ow)
            let l = logits.pointer
            mask.withUnsafeMutableBufferPointer { m in
                XCTAssertTrue(AcceleratedOps.upsampleThreshold(l, height: 16, width: 16, into: m.baseAddress!, height: oh, width: ow))
            }
            // The runs of the mask's top-left rows × columns, read off byte by byte.
            var expected: [(Int, Int32, Int32)] = []
            for y in 0..<rows {
                var x = 0
                while x < columns {
                    if mask[y * ow + x] == 0 { x += 1; continue }
                    let first = x
                    while x < columns, mask[y * ow + x] != 0 { x += 1 }
                    expected.append((y, Int32(first), Int32(x)))
                }
            }
            let runs = AcceleratedOps.upsampleThresholdRuns(logits.pointer, height: 16, width: 16, outputHeight: oh, outputWidth: ow,
                                                            rows: rows, columns: columns)
            guard let runs else { return XCTFail("no scratch memory") }
            XCTAssertEqual(runs.rowOffsets.count, rows + 1)
            var got: [(Int, Int32, Int32)] = []
            for y in 0..<rows {
                for r in runs.rowOffsets[y]..<runs.rowOffsets[y + 1] { got.append((y, runs.starts[r], runs.ends[r])) }
            }
            XCTAssertEqual(got.map { "\($0.0):\($0.1)-\($0.2)" }, expected.map { "\($0.0):\($0.1)-\($0.2)" }, "\(oh)×\(ow) crop \(rows)×\(columns)")
            if rows > 1, columns >= 32 { XCTAssertGreaterThan(expected.count, rows, "\(oh)×\(ow): the test wants several runs per row") }
        }
    }

    /// The automatic mask generator's one-pass statistics and thresholded runs at any threshold
    /// equal the plain loops and the full upsampled map.
    func testUpsampleStatisticsAndRunsAtAThresholdMatchThePlainLoops() throws {
        let logits = randomTensor([24, 24], seed: 81, scale: 3)
        for (oh, ow, high, low, t) in [(100, 100, Float(1), Float(-1), Float(0)), (77, 130, 0.7, -0.3, 0.2), (64, 48, 9, 8, 8.5)] {
            let kernel = try XCTUnwrap(AcceleratedOps.upsampleStatistics(logits.pointer, height: 24, width: 24, outputHeight: oh,
                                                                        outputWidth: ow, high: high, low: low, threshold: t))
            let plain = MaskUpsampling.plainStatistics(logits.pointer, height: 24, width: 24, outputHeight: oh, outputWidth: ow,
                                                       high: high, low: low, threshold: t)
            XCTAssertEqual(kernel, plain, "\(oh)×\(ow)")
            // Against the full map.
            let full = Resize.bilinear(logits.reshaped([1, 24, 24]), height: oh, width: ow).toArray()
            XCTAssertEqual(plain.aboveHigh, full.filter { $0 > high }.count)
            XCTAssertEqual(plain.aboveLow, full.filter { $0 > low }.count)
            XCTAssertEqual(plain.above, full.filter { $0 > t }.count)
            let set = full.indices.filter { full[$0] > t }
            if let b = plain.box {
                XCTAssertEqual([b.0, b.1, b.2, b.3], [set.map { $0 % ow }.min()!, set.map { $0 / ow }.min()!,
                                                      set.map { $0 % ow }.max()!, set.map { $0 / ow }.max()!])
            } else {
                XCTAssertTrue(set.isEmpty)
            }
            let runs = MaskUpsampling.thresholdRuns(logits.pointer, height: 24, width: 24, outputHeight: oh, outputWidth: ow,
                                                    rows: oh, columns: ow, threshold: t)
            let plainRuns = MaskUpsampling.plainThresholdRuns(logits.pointer, height: 24, width: 24, outputHeight: oh, outputWidth: ow,
                                                              rows: oh, columns: ow, threshold: t)
            XCTAssertEqual(runs.starts, plainRuns.starts)
            XCTAssertEqual(runs.ends, plainRuns.ends)
            XCTAssertEqual(runs.rowOffsets, plainRuns.rowOffsets)
            XCTAssertEqual(zip(runs.starts, runs.ends).reduce(0) { $0 + Int($1.1 - $1.0) }, plain.above)
        }
        XCTAssertGreaterThan(MaskUpsampling.plainStatistics(logits.pointer, height: 24, width: 24, outputHeight: 50, outputWidth: 50,
                                                            high: 1, low: -1, threshold: 0).above, 0, "the test wants a non-empty mask")
    }

    func testUpsampleThresholdMatchesBilinear() throws {
        let logits = randomTensor([2, 16, 16], seed: 80, scale: 3)
        for (oh, ow) in [(37, 50), (64, 64), (9, 100)] {
            let reference = Resize.bilinear(logits, height: oh, width: ow)
            var mask = [UInt8](repeating: 7, count: 2 * oh * ow)
            let l = logits.pointer
            mask.withUnsafeMutableBufferPointer { m in
                for c in 0..<2 {
                    XCTAssertTrue(AcceleratedOps.upsampleThreshold(l + c * 256, height: 16, width: 16,
                                                                   into: m.baseAddress! + c * oh * ow, height: oh, width: ow))
                }
            }
            // Identical except where the interpolated logit is within rounding of 0.
            for i in 0..<mask.count where abs(reference[flat: i]) > 1e-5 {
                XCTAssertEqual(mask[i], reference[flat: i] > 0 ? 1 : 0, "pixel \(i) of \(oh)×\(ow)")
            }
        }
    }

    func testBFloat16LinearIsCloseToFloat32() throws {
        try XCTSkipUnless(Accelerated.hasBFloat16, "no AVX512_BF16 on this CPU")
        for (rows, k, n) in [(1, 5, 3), (13, 19, 33), (37, 96, 288), (250, 600, 70), (200, 17, 17)] {
            let x = randomTensor([rows, k], seed: UInt64(rows * 11 + k))
            let w = randomTensor([n, k], seed: UInt64(n * 5 + k))
            let b = randomTensor([n], seed: UInt64(n + 1))
            let expected = referenceLinear(x, w, b)
            var y = [Float](repeating: 0, count: rows * n)
            let packed = PackedWeightBF16(w)
            let xp = x.pointer
            let bp = b.pointer
            y.withUnsafeMutableBufferPointer { yp in
                packed.applySingleThreaded(xp, rows: rows, xStride: k, bias: bp,
                                           into: yp.baseAddress!, yStride: n)
            }
            // bf16 keeps 8 significant bits: each product is off by up to ~2⁻⁸ relative, errors add
            // like a random walk over k.
            assertClose(y, expected, tolerance: 0.01 * Float(k).squareRoot() + 1e-3, "bf16 linear \(rows)×\(k)→\(n)")
        }
    }

    /// The bf16 flash attention against a double-precision emulation of its rounding: q·scale, k,
    /// v and the softmax weights rounded to bf16 (nearest even), everything else exact. With one
    /// key block (≤ 384 keys) the weights are rounded exactly as the kernel does, so only fp32
    /// accumulation and the exp polynomial differ; longer runs rescale partial sums, so they are
    /// held to the bf16 error instead. Odd key counts and head dims exercise the zero padding of
    /// the pairs.
    func testBFloat16FlashAttentionMatchesItsEmulation() throws {
        try XCTSkipUnless(Accelerated.hasBFloat16, "no AVX512_BF16 on this CPU")
        func bf16(_ x: Float) -> Double {
            let bits = x.bitPattern
            return Double(Float(bitPattern: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) & 0xFFFF_0000))
        }
        for (nq, nk, heads, hd) in [(9, 31, 2, 8), (49, 196, 1, 96), (64, 64, 1, 96), (16, 64, 2, 56), (5, 7, 1, 3), (33, 37, 1, 7),
                                    (40, 900, 2, 72)] {
            let width = heads * hd
            let q = randomTensor([nq, width], seed: UInt64(nq), scale: 2), k = randomTensor([nk, width], seed: UInt64(nk + 1), scale: 2)
            let v = randomTensor([nk, width], seed: UInt64(nk + 2))
            let (qp, kp, vp) = (q.pointer, k.pointer, v.pointer)
            func attention(bfloat16: Bool) -> [Float] {
                var result = [Float](repeating: 0, count: nq * width)
                result.withUnsafeMutableBufferPointer { op in
                    Attention.batched(
                        q: qp, qStride: width, qBatchStride: 0, k: kp, kStride: width, kBatchStride: 0,
                        v: vp, vStride: width, vBatchStride: 0, into: op.baseAddress!, outStride: width,
                        outBatchStride: 0, batches: 1, queryCount: nq, keyCount: nk, heads: heads, headDim: hd, reduced: bfloat16 ? .bfloat16 : nil)
                }
                return result
            }
            let (out, exact) = (attention(bfloat16: true), attention(bfloat16: false))
            let scale = 1 / Float(hd).squareRoot()
            var emulated = [Float](repeating: 0, count: nq * width)
            for h in 0..<heads {
                for i in 0..<nq {
                    var scores = (0..<nk).map { j in
                        (0..<hd).reduce(0.0) { $0 + bf16(q[flat: i * width + h * hd + $1] * scale) * bf16(k[flat: j * width + h * hd + $1]) }
                    }
                    let m = scores.max() ?? 0
                    scores = scores.map { Foundation.exp($0 - m) }
                    let sum = scores.reduce(0, +)
                    for d in 0..<hd {
                        let o = (0..<nk).reduce(0.0) { $0 + bf16(Float(scores[$1])) * bf16(v[flat: $1 * width + h * hd + d]) }
                        emulated[i * width + h * hd + d] = Float(o / sum)
                    }
                }
            }
            let oneBlock = nk <= 384
            assertClose(out, emulated, tolerance: oneBlock ? 2e-5 : 1e-2, "bf16 attention nq \(nq) nk \(nk) hd \(hd)")
            // And it is the reduced-precision kernel: about bf16's error away from fp32.
            let differences = zip(out, exact).map { abs($0 - $1) }
            XCTAssertGreaterThan(differences.max() ?? 0, 1e-5, "nq \(nq) nk \(nk): identical to fp32")
            XCTAssertLessThan(differences.max() ?? 0, 2e-2, "nq \(nq) nk \(nk): too far from fp32")
        }
    }
}
