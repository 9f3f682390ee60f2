import Kernels

/// One mask of the automatic mask generator, in the order and with the values of the official
/// `generate()` output (`crop_n_layers = 0`).
public struct AutomaticMask: Sendable {
    /// The binary mask (`logit > mask_threshold`) over the image, as row runs.
    public var runs: MaskUpsampling.Runs
    public var width: Int
    public var height: Int
    /// `batched_mask_to_box`: inclusive pixel box (x0, y0, x1, y1); all 0 for an empty mask.
    public var box: MaskBox
    /// Pixels in the mask (`area`).
    public var area: Int
    /// `predicted_iou` (after the sigmoid).
    public var predictedIoU: Float
    /// `stability_score`: |logit > t + offset| / |logit > t − offset| on the upsampled logits.
    public var stabilityScore: Float
    /// The grid point that prompted it (`point_coords`), in image pixels as float32.
    public var point: (x: Float, y: Float)

    /// The uncompressed COCO RLE (`mask_to_rle_pytorch`): run lengths over the column-major
    /// (Fortran) flattening, starting with a run of zeros.
    public var columnMajorRLE: [Int] {
        // Per column, the rows where the value changes, from the row runs.
        var changes = [[Int32]](repeating: [], count: width)
        for y in 0..<height {
            for r in runs.rowOffsets[y]..<runs.rowOffsets[y + 1] {
                for x in Int(runs.starts[r])..<Int(runs.ends[r]) { changes[x].append(Int32(y)) }
            }
        }
        var counts: [Int] = []
        var (value, length) = (false, 0)
        for x in 0..<width {
            var next = 0  // index into this column's set rows
            let set = changes[x]
            for y in 0..<height {
                let v = next < set.count && set[next] == Int32(y)
                if v { next += 1 }
                if v == value {
                    length += 1
                } else {
                    counts.append(length)
                    (value, length) = (v, 1)
                }
            }
        }
        counts.append(length)
        return counts
    }
}

/// An inclusive pixel box, as `batched_mask_to_box` gives it.
public struct MaskBox: Sendable, Equatable, Codable {
    public var x0: Int, y0: Int, x1: Int, y1: Int

    public init(x0: Int, y0: Int, x1: Int, y1: Int) {
        (self.x0, self.y0, self.x1, self.y1) = (x0, y0, x1, y1)
    }
}

/// `SAM2AutomaticMaskGenerator.generate` for one image from its decoder-ready features, with
/// `crop_n_layers = 0` (the whole image is the one crop): the point grid in batches, the
/// decoder (three candidates per point by default), the IoU and stability filters, boxes and
/// box NMS, and optionally the m2m refinement.
///
/// Deterministic tie-break (documented divergence): NMS orders by score descending and breaks
/// exact ties by the mask's position before NMS (batch order, then point, then candidate), a
/// stable sort. PyTorch's CPU sort is unstable above 16 elements, so under exact score ties the
/// official CPU order (and which duplicate survives) may differ.
///
/// Memory stays bounded: each mask's logits are upsampled and read on the fly (statistics, then
/// runs for the masks kept), never held at full size.
public struct AutomaticMaskGenerator: Sendable {
    public let model: SAM2Model
    public let options: AutomaticMaskOptions

    public init(model: SAM2Model, options: AutomaticMaskOptions = AutomaticMaskOptions()) throws {
        try options.validate()
        self.model = model
        self.options = options
    }

    /// The masks of one image, in the official output order.
    public func generate(_ prepared: PreparedFeatures) throws -> [AutomaticMask] {
        let kept = try candidates(prepared)
        return BoxNMS.keep(boxes: kept.map(\.box), scores: kept.map(\.predictedIoU), threshold: options.boxNMSThreshold).map { kept[$0] }
    }

    /// The masks that pass the filters, before NMS, in batch order (what `_process_crop`
    /// concatenates); `generate` is NMS over them.
    public func candidates(_ prepared: PreparedFeatures) throws -> [AutomaticMask] {
        let (w, h) = (prepared.originalWidth, prepared.originalHeight)
        // Parity: grid × [w, h] in float64, then cast to float32 (`torch.as_tensor(..., float32)`).
        let points = options.normalizedPoints.map { (x: Float($0.x * Double(w)), y: Float($0.y * Double(h))) }
        var kept: [AutomaticMask] = []
        for start in stride(from: 0, to: points.count, by: options.pointsPerBatch) {
            let batch = Array(points[start..<min(start + options.pointsPerBatch, points.count)])
            kept += try processBatch(batch, prepared: prepared)
        }
        return kept
    }

    /// A candidate mask before the filters: its low-resolution logits and score.
    struct Candidate {
        var logits: Tensor     // [256, 256]
        var score: Float
        var point: (x: Float, y: Float)
    }

    /// `_process_batch`: decode, (refine), filter, box, RLE.
    func processBatch(_ points: [(x: Float, y: Float)], prepared: PreparedFeatures) throws -> [AutomaticMask] {
        let prompts = points.map { Prompt(points: [PointPrompt(x: $0.x, y: $0.y, label: 1)]) }
        let decoded = try model.decodeLogits(prepared, prompts: prompts, multimask: options.multimaskOutput)
        // Parity: flattened as mask 3k + c for point k and candidate c (`flatten(0, 1)`).
        var candidates: [Candidate] = []
        for (k, d) in decoded.enumerated() {
            let plane = d.logits.count / d.scores.count
            for c in 0..<d.scores.count {
                let side = SAM2Configuration.lowResolutionMaskSize
                let logits = Tensor(shape: [side, side], scalars: d.logits.toArray((c * plane)..<((c + 1) * plane)))
                candidates.append(Candidate(logits: logits, score: d.scores[c], point: points[k]))
            }
        }
        if options.useM2M { candidates = try refined(candidates, prepared: prepared) }
        return filtered(candidates, width: prepared.originalWidth, height: prepared.originalHeight)
    }

    /// `refine_with_m2m`: every mask decoded again from its own point and its clamped
    /// low-resolution logits as the mask input, one mask out (token 0 or the stability fallback),
    /// in chunks of `points_per_batch`. No filter runs before it.
    func refined(_ candidates: [Candidate], prepared: PreparedFeatures) throws -> [Candidate] {
        var out: [Candidate] = []
        out.reserveCapacity(candidates.count)
        for start in stride(from: 0, to: candidates.count, by: options.pointsPerBatch) {
            let chunk = candidates[start..<min(start + options.pointsPerBatch, candidates.count)]
            let prompts = chunk.map { c in
                // Parity: the mask input is the predictor's returned `low_res_masks`, clamped to ±32.
                Prompt(points: [PointPrompt(x: c.point.x, y: c.point.y, label: 1)], maskInput: SAM2Model.clampedLowResolution(c.logits))
            }
            let decoded = try model.decodeLogits(prepared, prompts: prompts, multimask: false)
            for (c, d) in zip(chunk, decoded) {
                let side = SAM2Configuration.lowResolutionMaskSize
                out.append(Candidate(logits: d.logits.reshaped([side, side]), score: d.scores[0], point: c.point))
            }
        }
        return out
    }

    /// The IoU filter, the stability score and filter, the box and the runs, mask by mask over
    /// the cores; the batch's order is kept.
    func filtered(_ candidates: [Candidate], width w: Int, height h: Int) -> [AutomaticMask] {
        // Parity: a float32 tensor compared with a Python float is compared in float32, and
        // mask_threshold ± offset is summed in double before the cast.
        let iouThreshold = Float(options.predictedIoUThreshold)
        let stabilityThreshold = Float(options.stabilityScoreThreshold)
        let high = Float(options.maskThreshold + options.stabilityScoreOffset)
        let low = Float(options.maskThreshold - options.stabilityScoreOffset)
        let threshold = Float(options.maskThreshold)
        let area = options.minMaskRegionArea
        var masks = [AutomaticMask?](repeating: nil, count: candidates.count)
        masks.withUnsafeMutableBufferPointer { out in
            let slots = out.baseAddress.unsafelyUnwrapped  // each worker writes its own indices
            Parallel.forEachItem(candidates.count) { i in
                let c = candidates[i]
                // Parity: strict `>`, and only when the threshold is positive.
                if options.predictedIoUThreshold > 0, !(c.score > iouThreshold) { return }
                var logits = c.logits
                let side = logits.shape[0]
                LowResolutionCleanup.apply(logits.mutablePointer, side: side, maxHoleArea: area, maxSprinkleArea: area)
                let stats = MaskUpsampling.statistics(logits.pointer, height: side, width: side, outputHeight: h, outputWidth: w,
                                                      high: high, low: low, threshold: threshold)
                // Parity: both counts become float32 before the division; 0/0 is NaN and fails `>=`.
                let stability = Float(stats.aboveHigh) / Float(stats.aboveLow)
                if options.stabilityScoreThreshold > 0, !(stability >= stabilityThreshold) { return }
                let runs = MaskUpsampling.thresholdRuns(logits.pointer, height: side, width: side, outputHeight: h, outputWidth: w,
                                                        rows: h, columns: w, threshold: threshold)
                let box = stats.box.map { MaskBox(x0: $0.0, y0: $0.1, x1: $0.2, y1: $0.3) } ?? MaskBox(x0: 0, y0: 0, x1: 0, y1: 0)
                slots[i] = AutomaticMask(runs: runs, width: w, height: h, box: box, area: stats.above, predictedIoU: c.score,
                                         stabilityScore: stability, point: c.point)
            }
        }
        return masks.compactMap { $0 }
    }
}

/// `torchvision.ops.batched_nms` with one category, as the generator calls it.
public enum BoxNMS {
    /// The indices kept, in processing order (score descending; exact ties by ascending index).
    ///
    /// Parity: boxes are the inclusive integer boxes cast to float32, areas have no +1, IoU is
    /// inter / (areaA + areaB − inter) in float32 (0/0 gives NaN, never suppressing), and a box
    /// is suppressed when its IoU with a kept box is `> threshold`, compared in double (the
    /// kernel's threshold argument).
    public static func keep(boxes: [MaskBox], scores: [Float], threshold: Double) -> [Int] {
        precondition(boxes.count == scores.count)
        let order = scores.indices.sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
        var suppressed = [Bool](repeating: false, count: boxes.count)
        var kept: [Int] = []
        for (position, i) in order.enumerated() where !suppressed[i] {
            kept.append(i)
            for j in order[(position + 1)...] where !suppressed[j] {
                if Double(iou(boxes[i], boxes[j])) > threshold { suppressed[j] = true }
            }
        }
        return kept
    }

    /// torchvision's box IoU of two inclusive boxes, in float32: areas without +1, and
    /// inter / ((areaA + areaB) − inter), so 0/0 (two degenerate boxes) is NaN.
    public static func iou(_ a: MaskBox, _ b: MaskBox) -> Float {
        let (a0, a1, a2, a3) = (Float(a.x0), Float(a.y0), Float(a.x1), Float(a.y1))
        let (b0, b1, b2, b3) = (Float(b.x0), Float(b.y0), Float(b.x1), Float(b.y1))
        let w = max(0, min(a2, b2) - max(a0, b0)), h = max(0, min(a3, b3) - max(a1, b1))
        let inter = w * h
        return inter / ((a2 - a0) * (a3 - a1) + (b2 - b0) * (b3 - b1) - inter)
    }
}
