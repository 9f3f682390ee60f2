/// SAM2's mask postprocessing without the full-size map: a low-resolution logit map upsampled
/// (`interpolate(mode="bilinear", align_corners=False)`, in one step) and read as it is produced —
/// thresholded into row runs, or counted for the automatic mask generator's stability score.
///
/// Each entry point uses the AVX-512 kernel, or its AVX2 version, when the CPU has it and the plain loop otherwise; the
/// `plain…` versions are the references the tests compare the kernels against.
public enum MaskUpsampling {
    /// Counts over an upsampled map, and the box of its mask.
    public struct Statistics: Sendable, Equatable {
        /// Values `> high`, `> low` and `> threshold`.
        public var aboveHigh: Int
        public var aboveLow: Int
        public var above: Int
        /// The inclusive box (x0, y0, x1, y1) of the values `> threshold`; nil when there are none.
        public var box: (Int, Int, Int, Int)?

        public init(aboveHigh: Int, aboveLow: Int, above: Int, box: (Int, Int, Int, Int)?) {
            (self.aboveHigh, self.aboveLow, self.above, self.box) = (aboveHigh, aboveLow, above, box)
        }

        public static func == (a: Statistics, b: Statistics) -> Bool {
            a.aboveHigh == b.aboveHigh && a.aboveLow == b.aboveLow && a.above == b.above
                && a.box.map { [$0.0, $0.1, $0.2, $0.3] } == b.box.map { [$0.0, $0.1, $0.2, $0.3] }
        }
    }

    /// Row runs of a mask: run r covers pixels `starts[r]..<ends[r]` of its row, and row y's runs
    /// are `rowOffsets[y]..<rowOffsets[y + 1]`.
    public typealias Runs = (starts: [Int32], ends: [Int32], rowOffsets: [Int])

    /// The runs of `upsampled > threshold` (strict) over the top-left `rows × columns` of the
    /// `outputHeight × outputWidth` map.
    public static func thresholdRuns(_ logits: UnsafePointer<Float>, height: Int, width: Int, outputHeight: Int, outputWidth: Int,
                                     rows: Int, columns: Int, threshold: Float = 0) -> Runs {
        if Accelerated.hasPackedKernels, let runs = AcceleratedOps.upsampleThresholdRuns(
            logits, height: height, width: width, outputHeight: outputHeight, outputWidth: outputWidth, rows: rows,
            columns: columns, threshold: threshold) {
            return runs
        }
        return plainThresholdRuns(logits, height: height, width: width, outputHeight: outputHeight, outputWidth: outputWidth,
                                  rows: rows, columns: columns, threshold: threshold)
    }

    /// Counts of the upsampled values above `high`, `low` and `threshold`, and the box of those
    /// above `threshold`, in one pass (`calculate_stability_score` and `batched_mask_to_box`).
    public static func statistics(_ logits: UnsafePointer<Float>, height: Int, width: Int, outputHeight: Int, outputWidth: Int,
                                  high: Float, low: Float, threshold: Float) -> Statistics {
        if Accelerated.hasPackedKernels, let s = AcceleratedOps.upsampleStatistics(
            logits, height: height, width: width, outputHeight: outputHeight, outputWidth: outputWidth, high: high, low: low,
            threshold: threshold) {
            return s
        }
        return plainStatistics(logits, height: height, width: width, outputHeight: outputHeight, outputWidth: outputWidth,
                               high: high, low: low, threshold: threshold)
    }

    /// Calls `body(row, values)` for each of the first `rows` output rows, with the first `columns` values.
    static func forEachRow(_ logits: UnsafePointer<Float>, height h: Int, width w: Int, outputHeight oh: Int, outputWidth ow: Int,
                           rows: Int, columns: Int, _ body: (Int, UnsafeBufferPointer<Float>) -> Void) {
        let ys = Resize.bilinearWeights(inputSize: h, outputSize: oh)
        let xs = Resize.bilinearWeights(inputSize: w, outputSize: ow)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(columns, 1)) { row in
            for i in 0..<rows {
                let y = ys[i]
                let (r0, r1) = (logits + y.i0 * w, logits + y.i1 * w)
                for j in 0..<columns {
                    let t = xs[j]
                    // The same expression as `Resize.bilinear`: rows first, then columns.
                    row[j] = y.l0 * (t.l0 * r0[t.i0] + t.l1 * r0[t.i1]) + y.l1 * (t.l0 * r1[t.i0] + t.l1 * r1[t.i1])
                }
                body(i, UnsafeBufferPointer(rebasing: row[0..<columns]))
            }
        }
    }

    /// The plain loop behind ``thresholdRuns(_:height:width:outputHeight:outputWidth:rows:columns:threshold:)``;
    /// it never holds the full-size map (8192² floats at pyramid level 3).
    public static func plainThresholdRuns(_ logits: UnsafePointer<Float>, height: Int, width: Int, outputHeight: Int, outputWidth: Int,
                                          rows: Int, columns: Int, threshold: Float = 0) -> Runs {
        var (starts, ends, offsets) = ([Int32](), [Int32](), [0])
        forEachRow(logits, height: height, width: width, outputHeight: outputHeight, outputWidth: outputWidth, rows: rows,
                   columns: columns) { _, values in
            var runStart = -1
            for (j, v) in values.enumerated() {
                if v > threshold {  // Parity: strict `>`
                    if runStart < 0 { runStart = j }
                } else if runStart >= 0 {
                    starts.append(Int32(runStart))
                    ends.append(Int32(j))
                    runStart = -1
                }
            }
            if runStart >= 0 {
                starts.append(Int32(runStart))
                ends.append(Int32(values.count))
            }
            offsets.append(starts.count)
        }
        return (starts, ends, offsets)
    }

    /// The plain loop behind ``statistics(_:height:width:outputHeight:outputWidth:high:low:threshold:)``.
    public static func plainStatistics(_ logits: UnsafePointer<Float>, height: Int, width: Int, outputHeight: Int, outputWidth: Int,
                                       high: Float, low: Float, threshold: Float) -> Statistics {
        var (aboveHigh, aboveLow, above) = (0, 0, 0)
        var (minX, minY, maxX, maxY) = (Int.max, -1, -1, -1)
        forEachRow(logits, height: height, width: width, outputHeight: outputHeight, outputWidth: outputWidth, rows: outputHeight,
                   columns: outputWidth) { y, values in
            var rowHas = false
            for (x, v) in values.enumerated() {
                if v > high { aboveHigh += 1 }
                if v > low { aboveLow += 1 }
                if v > threshold {
                    above += 1
                    minX = min(minX, x)
                    maxX = max(maxX, x)
                    rowHas = true
                }
            }
            if rowHas {
                if minY < 0 { minY = y }
                maxY = y
            }
        }
        return Statistics(aboveHigh: aboveHigh, aboveLow: aboveLow, above: above, box: above > 0 ? (minX, minY, maxX, maxY) : nil)
    }
}
