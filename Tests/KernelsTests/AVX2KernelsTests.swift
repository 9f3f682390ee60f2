import CKernels
import Foundation
import XCTest
@testable import Kernels

/// The AVX2 kernels (what CPUs without AVX-512 run: the packed GEMM, the flash attention, GELU, exp,
/// layer norm, the softmaxes, the transposed-convolution epilogue, the feature tiles'
/// dequantisation), called directly so that they
/// are checked on every CPU with AVX2, AVX-512 ones included: against double-precision references,
/// at shapes with every tail of the 6-row and 8-lane tiles; and against the AVX-512 kernels bit for
/// bit where those run, which makes the features and masks of the two paths the same.
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
            if gs_has_avx512() != 0 {
                var wide = source
                wide.withUnsafeMutableBufferPointer { gs_softmax_rows($0.baseAddress!, rows, columns, ld) }
                XCTAssertEqual(x.map(\.bitPattern), wide.map(\.bitPattern), "softmax rows \(columns): the AVX-512 kernel's bits")
            }
        }
    }

    /// Column softmax (and its row groups) over 1…4096 rows of columns that end inside an 8-lane
    /// vector, in a wider buffer whose padding must stay.
    func testSoftmaxColumnsMatchesDoublePrecisionAndTheAVX512Kernel() {
        for (rows, columns) in [(1, 3), (7, 8), (33, 13), (4096, 20), (5, 45)] {
            let ld = columns + 5
            var source = randomTensor([rows, ld], seed: UInt64(rows + columns), scale: 8).toArray()
            for c in 0..<ld { source[c] += 100 }  // row 0 far above the rest: the maximum must be per column
            var x = source
            x.withUnsafeMutableBufferPointer { gs_softmax_columns_avx2($0.baseAddress!, rows, columns, ld) }
            for c in 0..<columns {
                let column = (0..<rows).map { Double(source[$0 * ld + c]) }
                let m = column.max()!
                let total = column.map { Foundation.exp($0 - m) }.reduce(0, +)
                for r in 0..<rows {
                    XCTAssertEqual(Double(x[r * ld + c]), Foundation.exp(column[r] - m) / total, accuracy: 1e-6, "softmax columns \(rows)×\(columns)")
                }
            }
            for r in 0..<rows { for c in columns..<ld { XCTAssertEqual(x[r * ld + c], source[r * ld + c], "padding written") } }
            // Row groups: each group of rows is a column softmax of its own.
            let groups = rows >= 33 ? 3 : 1, group = rows / groups
            var grouped = source, separate = source
            grouped.withUnsafeMutableBufferPointer { gs_softmax_row_groups_avx2($0.baseAddress!, groups, group, columns, ld) }
            for g in 0..<groups {
                separate.withUnsafeMutableBufferPointer { gs_softmax_columns_avx2($0.baseAddress! + g * group * ld, group, columns, ld) }
            }
            XCTAssertEqual(grouped.map(\.bitPattern), separate.map(\.bitPattern), "row groups \(groups)×\(group)")
            if gs_has_avx512() != 0 {
                var wide = source
                wide.withUnsafeMutableBufferPointer { gs_softmax_columns($0.baseAddress!, rows, columns, ld) }
                XCTAssertEqual(x.map(\.bitPattern), wide.map(\.bitPattern), "softmax columns: the AVX-512 kernel's bits")
            }
        }
    }

    /// The transposed convolution's epilogue (bias, the high-res map, LayerNorm2d, GELU, the
    /// hypernetwork products) for SAM2's shapes (32 and 64 channels, four masks) and partial
    /// vectors with other mask counts: against the unfused operations in Double, and the AVX-512
    /// kernel's bits where it runs.
    func testTransposedConvEpilogueMatchesReferenceAndTheAVX512Kernel() {
        for (h, w, oc, masks, norm) in [(3, 5, 32, 4, true), (2, 3, 64, 4, false), (3, 2, 40, 3, true), (2, 2, 8, 1, true)] {
            let products = randomTensor([h * w, 4 * oc], seed: UInt64(oc + masks)), bias = randomTensor([oc], seed: 2)
            let addend = randomTensor([2 * h, 2 * w, oc], seed: 3), lnw = randomTensor([oc], seed: 4), lnb = randomTensor([oc], seed: 5)
            let hyper = randomTensor([masks, oc], seed: 6)
            let (pp, bp, ap, wp, lp, hp) = (products.pointer, bias.pointer, addend.pointer, lnw.pointer, lnb.pointer, hyper.pointer)
            let plane = 4 * h * w
            typealias Epilogue = @convention(c) (UnsafePointer<Float>?, Int, Int, Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                                 UnsafePointer<Float>?, UnsafePointer<Float>?, Float, Int32, UnsafeMutablePointer<Float>?,
                                                 UnsafePointer<Float>?, Int, UnsafeMutablePointer<Float>?, Int) -> Void
            func run(_ kernel: Epilogue) -> (out: [Float], logits: [Float]) {
                var out = [Float](repeating: 0, count: plane * oc), logits = [Float](repeating: 0, count: masks * plane)
                out.withUnsafeMutableBufferPointer { o in
                    logits.withUnsafeMutableBufferPointer { l in
                        kernel(pp, h, w, oc, bp, ap, norm ? wp : nil, norm ? lp : nil, 1e-6, 1, o.baseAddress!, hp, masks, l.baseAddress!, plane)
                    }
                }
                return (out, logits)
            }
            let (out, logits) = run(gs_convt2x2_epilogue_avx2)
            for y in 0..<(2 * h) {
                for x in 0..<(2 * w) {
                    let pixel = y * 2 * w + x
                    let (d, source) = ((y % 2) * 2 + x % 2, (y / 2) * w + x / 2)
                    var v = (0..<oc).map { Double(products[flat: source * 4 * oc + d * oc + $0]) + Double(bias[flat: $0]) + Double(addend[flat: pixel * oc + $0]) }
                    if norm {
                        let mean = v.reduce(0, +) / Double(oc)
                        let variance = v.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(oc)
                        v = v.indices.map { ($0 < oc ? (v[$0] - mean) / (variance + 1e-6).squareRoot() : 0) * Double(lnw[flat: $0]) + Double(lnb[flat: $0]) }
                    }
                    v = v.map { 0.5 * $0 * (1 + Foundation.erf($0 / 2.0.squareRoot())) }
                    for c in 0..<oc { XCTAssertEqual(Double(out[pixel * oc + c]), v[c], accuracy: 3e-5, "epilogue \(oc) channels") }
                    for k in 0..<masks {
                        let dot = (0..<oc).map { v[$0] * Double(hyper[flat: k * oc + $0]) }.reduce(0, +)
                        XCTAssertEqual(Double(logits[k * plane + pixel]), dot, accuracy: 2e-4, "hypernetwork product \(k), \(oc) channels")
                    }
                }
            }
            if gs_has_avx512() != 0 {
                let wide = run(gs_convt2x2_epilogue)
                XCTAssertEqual(out.map(\.bitPattern), wide.out.map(\.bitPattern), "epilogue: the AVX-512 kernel's bits, \(oc) channels")
                XCTAssertEqual(logits.map(\.bitPattern), wide.logits.map(\.bitPattern), "logits: the AVX-512 kernel's bits, \(masks) masks")
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
            var withStats = x.toArray(), means = [Float](repeating: 0, count: 33), inverses = means
            withStats.withUnsafeMutableBufferPointer { xs in
                means.withUnsafeMutableBufferPointer { m in
                    inverses.withUnsafeMutableBufferPointer { gs_layer_norm_stats_avx2(xs.baseAddress!, 33, channels, wp, bp, 1e-6, m.baseAddress!, $0.baseAddress!) }
                }
            }
            XCTAssertEqual(withStats.map(\.bitPattern), y.map(\.bitPattern), "layerNorm with statistics \(channels)")
            for r in 0..<33 {
                let row = (0..<channels).map { Double(x[flat: r * channels + $0]) }
                let mean = row.reduce(0, +) / Double(channels)
                let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(channels)
                XCTAssertEqual(Double(means[r]), mean, accuracy: 1e-5, "mean of row \(r)")
                XCTAssertEqual(Double(inverses[r]), 1 / (variance + 1e-6).squareRoot(), accuracy: 1e-4 / (variance + 1e-6).squareRoot(), "1/σ of row \(r)")
            }
            if gs_has_avx512() != 0 {
                var wide = x.toArray(), wideMeans = means, wideInverses = inverses
                wide.withUnsafeMutableBufferPointer { xs in
                    wideMeans.withUnsafeMutableBufferPointer { m in
                        wideInverses.withUnsafeMutableBufferPointer { gs_layer_norm_stats(xs.baseAddress!, 33, channels, wp, bp, 1e-6, m.baseAddress!, $0.baseAddress!) }
                    }
                }
                XCTAssertEqual(y.map(\.bitPattern), wide.map(\.bitPattern), "layerNorm \(channels): the AVX-512 kernel's bits")
                XCTAssertEqual(means.map(\.bitPattern) + inverses.map(\.bitPattern), wideMeans.map(\.bitPattern) + wideInverses.map(\.bitPattern),
                               "layerNorm statistics: the AVX-512 kernel's bits")
            }
        }
    }

    /// The mask kernels (upsampled mask, its runs, the generator's statistics) at sizes that end
    /// inside an 8-lane vector: runs equal to the bytes' runs, statistics equal to the bytes'
    /// counts and box, and all of it the AVX-512 kernels' results where they run.
    func testUpsampledMasksRunsAndStatisticsAgreeAndMatchTheAVX512Kernels() {
        let logits = randomTensor([16, 16], seed: 82, scale: 0.4)
        let lp = logits.pointer
        for (oh, ow) in [(64, 64), (37, 50), (70, 13)] {
            var mask = [UInt8](repeating: 7, count: oh * ow)
            XCTAssertEqual(mask.withUnsafeMutableBufferPointer { gs_upsample_threshold_avx2(lp, 16, 16, $0.baseAddress!, oh, ow) }, 0)
            XCTAssertTrue(mask.allSatisfy { $0 <= 1 }, "every byte written")
            var starts = [Int32](repeating: 0, count: oh * ow), ends = starts, offsets = [Int](repeating: 0, count: oh + 1)
            let count = starts.withUnsafeMutableBufferPointer { sp in
                ends.withUnsafeMutableBufferPointer { ep in
                    offsets.withUnsafeMutableBufferPointer { gs_upsample_threshold_runs_avx2(lp, 16, 16, oh, ow, oh, ow, 0, sp.baseAddress!, ep.baseAddress!, oh * ow, $0.baseAddress!) }
                }
            }
            var expected: [(Int32, Int32)] = []
            for y in 0..<oh {
                var x = 0
                while x < ow {
                    if mask[y * ow + x] == 1 {
                        let s = x
                        while x < ow && mask[y * ow + x] == 1 { x += 1 }
                        expected.append((Int32(s), Int32(x)))
                    } else { x += 1 }
                }
            }
            XCTAssertEqual(count, expected.count, "runs \(oh)×\(ow)")
            XCTAssertEqual(Array(starts.prefix(count)), expected.map(\.0))
            XCTAssertEqual(Array(ends.prefix(count)), expected.map(\.1))
            var counts = [Int](repeating: 0, count: 3), box = [Int](repeating: 0, count: 4)
            _ = counts.withUnsafeMutableBufferPointer { c in box.withUnsafeMutableBufferPointer { gs_upsample_statistics_avx2(lp, 16, 16, oh, ow, 0.2, -0.2, 0, c.baseAddress!, $0.baseAddress!) } }
            XCTAssertEqual(counts[2], mask.filter { $0 == 1 }.count, "pixels above the threshold")
            let xs = (0..<(oh * ow)).filter { mask[$0] == 1 }.map { $0 % ow }, ys = (0..<(oh * ow)).filter { mask[$0] == 1 }.map { $0 / ow }
            if let x0 = xs.min(), let x1 = xs.max(), let y0 = ys.min(), let y1 = ys.max() { XCTAssertEqual(box, [x0, y0, x1, y1], "box") }
            XCTAssertGreaterThanOrEqual(counts[1], counts[2])
            XCTAssertLessThanOrEqual(counts[0], counts[2])
            if gs_has_avx512() != 0 {
                var wide = [UInt8](repeating: 7, count: oh * ow)
                _ = wide.withUnsafeMutableBufferPointer { gs_upsample_threshold(lp, 16, 16, $0.baseAddress!, oh, ow) }
                XCTAssertEqual(mask, wide, "the AVX-512 kernel's mask")
                var wideCounts = [Int](repeating: 0, count: 3), wideBox = [Int](repeating: 0, count: 4)
                _ = wideCounts.withUnsafeMutableBufferPointer { c in wideBox.withUnsafeMutableBufferPointer { gs_upsample_statistics(lp, 16, 16, oh, ow, 0.2, -0.2, 0, c.baseAddress!, $0.baseAddress!) } }
                XCTAssertEqual(counts + box, wideCounts + wideBox, "the AVX-512 kernel's statistics")
            }
        }
    }

    /// Feature codes to floats channels-last, both code layouts: the plain loop's values, at every
    /// tail of the 8×8 block (pixel runs of 1…9 and a channel count of 8k + 5), the codes one byte
    /// off alignment and the byte planes ending exactly at the run's end; and the AVX-512 kernel's.
    func testDequantizeTransposeIsThePlainLoopAndTheAVX512Kernel() {
        var generator = SplitMix64(state: 7)
        let codes = FeatureCodesFixture(channels: 45, plane: 203, using: &generator)
        // Runs of every length 1…9, then the rest: each run's tail is a different block tail.
        var runs: [Range<Int>] = []
        var start = 0
        for length in 1...9 { runs.append(start..<(start + length)); start += length }
        runs.append(start..<codes.plane)
        typealias Kernel = @convention(c) (UnsafePointer<Int16>?, UnsafePointer<UInt8>?, UnsafePointer<UInt8>?, Int, Int, Int, Int,
                                           UnsafePointer<Float>?, UnsafePointer<Float>?, UnsafeMutablePointer<Float>?) -> Void
        func dequantize(_ kernel: Kernel, split: Bool) -> [Float] {
            codes.dequantize(split: split, runs: runs) { signed, high, low, pixels, out in
                kernel(signed.map { UnsafePointer<Int16>(OpaquePointer($0)) }, high, low, codes.channels, codes.plane,
                       pixels.lowerBound, pixels.upperBound, codes.scale, codes.offset, out)
            }
        }
        for split in [false, true] {
            let out = dequantize(gs_dequantize_transpose_avx2, split: split)
            XCTAssertEqual(out.map(\.bitPattern), codes.expected.map(\.bitPattern), split ? "byte planes" : "signed codes")
            if gs_has_avx512() != 0 {
                XCTAssertEqual(out.map(\.bitPattern), dequantize(gs_dequantize_transpose, split: split).map(\.bitPattern),
                               "the AVX-512 kernel's bits")
            }
        }
    }

    /// `gs_gemm_packed_avx2` on the packed weights: rows that are not multiples of 6 (and fewer
    /// than 6), widths that end inside either half of a panel, k beyond one 256 block, a transposed
    /// operand (packed eight floats a load from 8 rows on), narrow products that read x in place
    /// (n ≤ 64), bias or none, accumulation and GELU; against the double-precision product and,
    /// where AVX-512 runs, against `gs_gemm_packed` bit for bit.
    func testPackedGEMMMatchesReferenceAndTheAVX512Kernel() {
        let shapes = [(1, 5, 3), (13, 19, 33), (37, 96, 288), (250, 300, 70), (7, 600, 64), (200, 16, 17), (5, 513, 41), (6, 1, 8)]
        for (rows, k, n) in shapes {
            let x = randomTensor([rows, k], seed: UInt64(rows * 7 + k), scale: 2)
            let w = randomTensor([n, k], seed: UInt64(n * 3 + k)), bias = randomTensor([n], seed: UInt64(n))
            var packed = [Float](repeating: .nan, count: gs_packed_count(n, k))
            let (wp, bp) = (w.pointer, bias.pointer)
            packed.withUnsafeMutableBufferPointer { gs_pack_weight(wp, k, n, k, $0.baseAddress!) }
            var wt = [Float](repeating: 0, count: k * n)
            for o in 0..<n { for i in 0..<k { wt[i * n + o] = w[flat: o * k + i] } }
            let product = ReferenceKernels.matrixProduct(x.toArray(), wt, m: rows, n: n, k: k)
            let initial = randomTensor([rows, n + 3], seed: 9).toArray()  // y has 3 padding columns per row
            for (flags, withBias, transposed) in [(0, true, false), (0, false, false), (Int32(GS_ACC), true, false),
                                                  (Int32(GS_GELU), true, false), (Int32(GS_ACC | GS_GELU), false, true)] {
                // The transposed operand: x stored [k, rows], element (r, t) at r + t·rows.
                let xt = transposed ? (0..<(k * rows)).map { x[flat: ($0 % rows) * k + $0 / rows] } : x.toArray()
                let (xs, xk) = transposed ? (1, rows) : (k, 1)
                func run(_ kernel: GEMMKernel) -> [Float] {
                    var y = initial
                    packed.withUnsafeBufferPointer { pw in
                        xt.withUnsafeBufferPointer { xb in
                            y.withUnsafeMutableBufferPointer {
                                kernel(xb.baseAddress!, xs, xk, pw.baseAddress!, withBias ? bp : nil, $0.baseAddress!, n + 3, rows, n, k,
                                       0, (n + 31) / 32, flags)
                            }
                        }
                    }
                    return y
                }
                let y = run(gs_gemm_packed_avx2)
                let label = "\(rows)×\(k)→\(n) flags \(flags) bias \(withBias) transposed \(transposed)"
                for r in 0..<rows {
                    for o in 0..<n {
                        var e = product[r * n + o] + (withBias ? bias[flat: o] : 0) + (flags & Int32(GS_ACC) != 0 ? initial[r * (n + 3) + o] : 0)
                        if flags & Int32(GS_GELU) != 0 { e = ReferenceKernels.gelu(e) }
                        XCTAssertEqual(y[r * (n + 3) + o], e, accuracy: 3e-5 * Float(k).squareRoot() * max(1, abs(e)), label)
                    }
                    for o in n..<(n + 3) { XCTAssertEqual(y[r * (n + 3) + o], initial[r * (n + 3) + o], "padding written: \(label)") }
                }
                if gs_has_avx512() != 0 {
                    XCTAssertEqual(y.map(\.bitPattern), run(gs_gemm_packed).map(\.bitPattern), "the AVX-512 kernel's bits: \(label)")
                }
            }
        }
    }

    /// The fixed-point GEMM (`--precision int16`) is its plain version bit for bit (then GELU),
    /// at shapes with every tail of the 6-row slices, the
    /// 16-column halves and the k pairs and blocks; a row of zeros and a row with one outlier; and
    /// it stays close to the fp32 product: each operand is off by at most half a step.
    func testFixedPointGEMMIsItsPlainVersionAndCloseToFloat32() {
        let shapes = [(1, 5, 3), (13, 19, 33), (37, 96, 288), (250, 300, 70), (7, 600, 64), (200, 16, 17), (5, 513, 41), (6, 1, 8)]
        for (rows, k, n) in shapes {
            var x = randomTensor([rows, k], seed: UInt64(rows * 5 + k), scale: 2).toArray()
            if rows > 2 {
                for t in 0..<k { x[t] = 0 }  // a row of zeros: step 0
                x[k + k / 2] = 300            // an outlier sets its row's step
            }
            let w = randomTensor([n, k], seed: UInt64(n * 7 + k)).toArray(), bias = randomTensor([n], seed: UInt64(n + 2)).toArray()
            let packed = PackedWeightFixed16(Tensor(shape: [n, k], scalars: w))
            let initial = randomTensor([rows, n], seed: 5).toArray()
            var wt = [Float](repeating: 0, count: k * n)
            for o in 0..<n { for i in 0..<k { wt[i * n + o] = w[o * k + i] } }
            let exact = ReferenceKernels.matrixProduct(x, wt, m: rows, n: n, k: k)
            for (accumulate, gelu, withBias) in [(false, false, true), (true, false, false), (false, true, true), (true, true, true)] {
                var y = accumulate ? initial : [Float](repeating: .nan, count: rows * n)
                // Row 3 holds a NaN in the kernel's copy: its outputs are NaN, as fp32's.
                var xk = x
                if rows > 3 { xk[3 * k] = .nan }
                xk.withUnsafeBufferPointer { xp in
                    bias.withUnsafeBufferPointer { bp in
                        y.withUnsafeMutableBufferPointer {
                            packed.applySingleThreaded(xp.baseAddress!, rows: rows, xStride: k, bias: withBias ? bp.baseAddress! : nil,
                                                       into: $0.baseAddress!, yStride: n, accumulate: accumulate, gelu: gelu)
                        }
                    }
                }
                let label = "\(rows)×\(k)→\(n) accumulate \(accumulate) gelu \(gelu) bias \(withBias)"
                let plain = ReferenceKernels.fixedPointLinear(x, w, m: rows, n: n, k: k, bias: withBias ? bias : nil,
                                                              initial: accumulate ? initial : nil)
                // GELU in the store is the AVX2 kernel's (tested on its own above).
                var activated = plain
                activated.withUnsafeMutableBufferPointer { gs_gelu_avx2($0.baseAddress!, $0.count) }
                for r in 0..<rows {
                    // Half a step of each operand, summed over k: the fixed-point error's bound.
                    let rowLargest = x[(r * k)..<(r * k + k)].reduce(Float(0)) { max($0, abs($1)) }
                    for o in 0..<n {
                        let i = r * n + o
                        if r == 3 {
                            XCTAssertTrue(y[i].isNaN, "\(label): the NaN row's output \(o) is \(y[i])")
                            continue
                        }
                        let expected = gelu ? activated[i] : plain[i]
                        XCTAssertEqual(y[i].bitPattern, expected.bitPattern, "\(label): \(y[i]) vs \(expected)")
                        let columnLargest = w[(o * k)..<(o * k + k)].reduce(Float(0)) { max($0, abs($1)) }
                        var bound: Float = 0
                        for t in 0..<k {
                            bound += rowLargest / 8190 * abs(w[o * k + t]) + columnLargest / 4094 * (abs(x[r * k + t]) + rowLargest / 8190)
                        }
                        let fp32 = exact[i] + (withBias ? bias[o] : 0) + (accumulate ? initial[i] : 0)
                        XCTAssertEqual(plain[i], fp32, accuracy: bound * 1.01 + 1e-4 * max(1, abs(fp32)), "\(label): the fixed-point error")
                    }
                }
            }
        }
    }

    /// The fixed-point flash attention (`--precision int16`'s global blocks): against its plain
    /// emulation in Double where one key block holds every key (queries, keys, the values of each
    /// head dimension and the softmax weights rounded as the kernel rounds them; only the exp
    /// polynomial and fp32 sums differ), and against exact attention within the rounding's error
    /// at every shape, several key blocks and odd counts included; past 256 head dimensions
    /// `attentionHead` falls back to the exact kernel.
    func testFixedPointFlashAttentionMatchesItsEmulationAndExactAttention() {
        for (nq, nk, hd) in [(5, 7, 3), (33, 37, 7), (64, 64, 96), (49, 49, 96), (40, 383, 56), (100, 900, 72), (70, 1200, 33),
                             (9, 50, 255), (9, 50, 256)] {
            let ld = hd + 3
            let q = randomTensor([nq, ld], seed: UInt64(nq), scale: 2).toArray(), k = randomTensor([nk, ld], seed: UInt64(nk + 1), scale: 2).toArray()
            let v = randomTensor([nk, ld], seed: UInt64(nk + 2)).toArray()
            let scale = 1 / Float(hd).squareRoot()
            var out = [Float](repeating: .nan, count: nq * hd)
            var scratch = [Float](repeating: .nan, count: gs_attention_i16_avx2_scratch_count(nq, nk, hd))
            let status = q.withUnsafeBufferPointer { qp in
                k.withUnsafeBufferPointer { kp in
                    v.withUnsafeBufferPointer { vp in
                        out.withUnsafeMutableBufferPointer { op in
                            scratch.withUnsafeMutableBufferPointer {
                                gs_attention_head_i16_avx2(qp.baseAddress!, ld, kp.baseAddress!, ld, vp.baseAddress!, ld, op.baseAddress!, hd,
                                                           nq, nk, hd, scale, $0.baseAddress!)
                            }
                        }
                    }
                }
            }
            XCTAssertEqual(status, 0)
            let label = "\(nq)×\(nk)×\(hd)"
            let rows = { (m: [Float], i: Int) in m[(i * ld)..<(i * ld + hd)] }
            let (qi, ki) = ((0..<nq).map { ReferenceKernels.fixedPoint(rows(q, $0), limit: 4095) },
                            (0..<nk).map { ReferenceKernels.fixedPoint(rows(k, $0), limit: 2047) })
            let vi = (0..<hd).map { d in ReferenceKernels.fixedPoint((0..<nk).map { v[$0 * ld + d] }[...], limit: 2047) }
            var exactSquares = 0.0, errorSquares = 0.0, largestError = 0.0, largestEmulationError = 0.0
            for i in 0..<nq {
                var scores = [Double](repeating: 0, count: nk), exactScores = scores
                for j in 0..<nk {
                    var sum = 0, exact = 0.0
                    for d in 0..<hd {
                        sum += qi[i].integers[d] * ki[j].integers[d]
                        exact += Double(q[i * ld + d]) * Double(k[j * ld + d])
                    }
                    scores[j] = Double(Float(sum) * (qi[i].step * scale) * ki[j].step)
                    exactScores[j] = exact * Double(scale)
                }
                let (m, exactMax) = (scores.max()!, exactScores.max()!)
                let weights = scores.map { (exp($0 - m) * 32767).rounded(.toNearestOrEven) }
                let exactWeights = exactScores.map { exp($0 - exactMax) }
                let (total, exactTotal) = (weights.reduce(0, +), exactWeights.reduce(0, +))
                for d in 0..<hd {
                    var emulated = 0.0, exact = 0.0
                    for j in 0..<nk {
                        emulated += weights[j] * Double(vi[d].integers[j]) * Double(vi[d].step)
                        exact += exactWeights[j] * Double(v[j * ld + d])
                    }
                    let (got, e) = (Double(out[i * hd + d]), exact / exactTotal)
                    if nk <= 384 { largestEmulationError = max(largestEmulationError, abs(got - emulated / total)) }
                    exactSquares += e * e
                    errorSquares += (got - e) * (got - e)
                    largestError = max(largestError, abs(got - e))
                }
            }
            // The rounding's error: 2-5e-4 of the output's rms here (1e-7 for the fp32 kernel); the
            // kernel is within 3.3e-6 of its emulation.
            let relative = (errorSquares / exactSquares).squareRoot()
            XCTAssertLessThan(relative, 4e-3, "\(label): rms error / rms \(relative)")
            XCTAssertGreaterThan(relative, 1e-5, "\(label): no rounding at all: not the fixed-point kernel")
            XCTAssertLessThan(largestError, 2.5e-2, label)
            XCTAssertLessThan(largestEmulationError, 2e-5, "\(label): against the emulation")
        }
        // Head dimensions past 256: the kernel declines, attentionHead computes it exactly.
        let (nq, nk, hd) = (9, 20, 300)
        let q = randomTensor([nq, hd], seed: 1), k = randomTensor([nk, hd], seed: 2), v = randomTensor([nk, hd], seed: 3)
        var scratch = [Float](repeating: 0, count: AcceleratedOps.attentionScratchCount(queryCount: nq, keyCount: nk, headDim: hd, reduced: .fixed16))
        var (reduced, exact) = ([Float](repeating: 0, count: nq * hd), [Float](repeating: 1, count: nq * hd))
        let (qp, kp, vp) = (q.pointer, k.pointer, v.pointer)
        XCTAssertEqual(gs_attention_head_i16_avx2(qp, hd, kp, hd, vp, hd, &reduced, hd, nq, nk, hd, 0.1, &scratch), -1)
        for (flag, result) in [(true, 0), (false, 1)] {
            var o = [Float](repeating: .nan, count: nq * hd)
            scratch.withUnsafeMutableBufferPointer { sp in
                o.withUnsafeMutableBufferPointer {
                    AcceleratedOps.attentionHead(q: qp, qStride: hd, k: kp, kStride: hd, v: vp, vStride: hd, into: $0.baseAddress!, outStride: hd,
                                                 queryCount: nq, keyCount: nk, headDim: hd, scratch: sp.baseAddress!, reduced: flag ? .fixed16 : nil)
                }
            }
            if result == 0 { reduced = o } else { exact = o }
        }
        XCTAssertEqual(reduced.map(\.bitPattern), exact.map(\.bitPattern), "hd 300 falls back to the exact kernel")
    }

    typealias GEMMKernel = @convention(c) (UnsafePointer<Float>?, Int, Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                           UnsafeMutablePointer<Float>?, Int, Int, Int, Int, Int, Int, Int32) -> Void

    /// `gs_gemm_packed_transposed_avx2`: output feature j of row r at `y[j·ldy + r]`, on a panel
    /// range that starts past the first panel; the AVX-512 kernel's bits where it runs.
    func testTransposedPackedGEMMMatchesReference() {
        for (rows, k, n) in [(13, 300, 70), (5, 19, 33), (24, 96, 64)] {
            let x = randomTensor([rows, k], seed: UInt64(rows + k)), w = randomTensor([n, k], seed: UInt64(n + 5))
            let bias = randomTensor([n], seed: 3)
            var packed = [Float](repeating: 0, count: gs_packed_count(n, k))
            let (xp, wp, bp) = (x.pointer, w.pointer, bias.pointer)
            packed.withUnsafeMutableBufferPointer { gs_pack_weight(wp, k, n, k, $0.baseAddress!) }
            func run(_ kernel: @convention(c) (UnsafePointer<Float>?, Int, Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                               UnsafeMutablePointer<Float>?, Int, Int, Int, Int, Int, Int) -> Void) -> [Float] {
                var y = [Float](repeating: -7, count: n * (rows + 2))
                packed.withUnsafeBufferPointer { pw in
                    y.withUnsafeMutableBufferPointer { kernel(xp, k, 1, pw.baseAddress!, bp, $0.baseAddress!, rows + 2, rows, n, k, 1, (n + 31) / 32) }
                }
                return y
            }
            let y = run(gs_gemm_packed_transposed_avx2)
            for j in 0..<n {
                for r in 0..<(rows + 2) {
                    let value = y[j * (rows + 2) + r]
                    if j < 32 || r >= rows { XCTAssertEqual(value, -7, "outside the panels or rows asked for: (\(j), \(r))"); continue }
                    var e = Double(bias[flat: j])
                    for t in 0..<k { e += Double(x[flat: r * k + t]) * Double(w[flat: j * k + t]) }
                    XCTAssertEqual(Double(value), e, accuracy: 3e-5 * Double(k).squareRoot(), "transposed \(rows)×\(k)→\(n)")
                }
            }
            if gs_has_avx512() != 0 {
                XCTAssertEqual(y.map(\.bitPattern), run(gs_gemm_packed_transposed).map(\.bitPattern), "the AVX-512 kernel's bits")
            }
        }
    }

    /// `gs_attention_head_avx2` for query blocks of every width (1…4 vectors of 8), keys beyond one
    /// 384-key block and head dims that are no multiple of the tiles; the AVX-512 kernel's bits
    /// where it runs.
    func testFlashAttentionMatchesReferenceAndTheAVX512Kernel() {
        for (nq, nk, hd) in [(9, 31, 8), (49, 196, 96), (16, 64, 56), (40, 900, 72), (5, 7, 3), (100, 8, 16), (23, 400, 13), (64, 385, 96)] {
            let q = randomTensor([nq, hd], seed: UInt64(nq), scale: 2), k = randomTensor([nk, hd], seed: UInt64(nk + 1), scale: 2)
            let v = randomTensor([nk, hd], seed: UInt64(nk + 2))
            let (qp, kp, vp) = (q.pointer, k.pointer, v.pointer)
            let scale = 1 / Float(hd).squareRoot()
            func run(_ kernel: @convention(c) (UnsafePointer<Float>?, Int, UnsafePointer<Float>?, Int, UnsafePointer<Float>?, Int,
                                               UnsafeMutablePointer<Float>?, Int, Int, Int, Int, Float, UnsafeMutablePointer<Float>?) -> Void)
                -> [Float] {
                var out = [Float](repeating: 0, count: nq * hd)
                var scratch = [Float](repeating: .nan, count: gs_attention_avx2_scratch_count(nq, nk, hd))
                out.withUnsafeMutableBufferPointer { op in
                    scratch.withUnsafeMutableBufferPointer { kernel(qp, hd, kp, hd, vp, hd, op.baseAddress!, hd, nq, nk, hd, scale, $0.baseAddress!) }
                }
                return out
            }
            let out = run(gs_attention_head_avx2)
            let expected = ReferenceKernels.attention(q: q.toArray(), k: k.toArray(), v: v.toArray(), queries: nq, keys: nk, heads: 1, headDim: hd)
            assertClose(out, expected, tolerance: 2e-6 * Float(hd).squareRoot() + 1e-6, "attention nq \(nq) nk \(nk) hd \(hd)")
            if gs_has_avx512() != 0 {
                XCTAssertEqual(out.map(\.bitPattern), run(gs_attention_head).map(\.bitPattern), "the AVX-512 kernel's bits: nq \(nq) nk \(nk) hd \(hd)")
            }
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
