/// The parameters of `SAM2AutomaticMaskGenerator` (sam2 1.1.0), with the official defaults and
/// the official meaning, for one image decoded from its features (`crop_n_layers = 0`: the whole
/// image is the only crop).
///
/// Thresholds are Python floats in the official code: kept here as `Double` and converted where
/// the official code converts them (each use says how).
public struct AutomaticMaskOptions: Sendable, Equatable, Codable {
    /// Points per side of the regular grid (`points_per_side`); nil when `pointGrid` is given.
    public var pointsPerSide: Int? = 32
    /// An explicit grid (`point_grids[0]`): normalized (x, y) in [0, 1]; used when `pointsPerSide` is nil.
    public var pointGrid: [[Double]]? = nil
    /// Points per decoder call (`points_per_batch`); with m2m also the refinement's chunk size.
    public var pointsPerBatch = 64
    /// Keeps masks with predicted IoU `> pred_iou_thresh` (0 turns the filter off).
    public var predictedIoUThreshold = 0.8
    /// Keeps masks with stability `>= stability_score_thresh` (0 turns the filter off).
    public var stabilityScoreThreshold = 0.95
    /// The ± offset around `maskThreshold` of the stability score (`stability_score_offset`).
    public var stabilityScoreOffset = 1.0
    /// Binarises the upsampled logits with `> mask_threshold` and centres the stability score.
    public var maskThreshold = 0.0
    /// The box IoU above which NMS suppresses a mask (`box_nms_thresh`).
    public var boxNMSThreshold = 0.7
    /// `min_mask_region_area`: in sam2 it only reaches the predictor as `max_hole_area` and
    /// `max_sprinkle_area`, which fill holes and remove islands of at most this many
    /// low-resolution pixels before upsampling (see ``LowResolutionCleanup``). 0: off.
    public var minMaskRegionArea = 0.0
    /// One refinement pass ("mask to mask") of every mask with its own logits as mask input.
    public var useM2M = false
    /// Three candidates per point (tokens 1–3); false: one (token 0 or the stability fallback).
    public var multimaskOutput = true

    public init() {}

    /// Rejects values the official code would fail on or that make no sense.
    public func validate() throws {
        // Parity: the official constructor asserts that exactly one of the two is given.
        switch (pointsPerSide, pointGrid) {
        case (let n?, nil):
            guard n >= 1 else { throw SAM2Error("points per side must be at least 1, got \(n)") }
            guard n <= 1024 else { throw SAM2Error("points per side must be at most 1024, got \(n)") }
        case (nil, let grid?):
            guard !grid.isEmpty else { throw SAM2Error("the point grid is empty") }
            for p in grid {
                guard p.count == 2, p.allSatisfy({ $0.isFinite && $0 >= 0 && $0 <= 1 }) else {
                    throw SAM2Error("point grid entries must be normalized (x, y) pairs in [0, 1], got \(p)")
                }
            }
        default:
            throw SAM2Error("give exactly one of points per side and a point grid")
        }
        guard pointsPerBatch >= 1 else { throw SAM2Error("points per batch must be at least 1, got \(pointsPerBatch)") }
        for (name, value) in [("predicted IoU threshold", predictedIoUThreshold), ("stability score threshold", stabilityScoreThreshold),
                              ("stability score offset", stabilityScoreOffset), ("mask threshold", maskThreshold),
                              ("box NMS threshold", boxNMSThreshold), ("minimum mask region area", minMaskRegionArea)] {
            guard value.isFinite else { throw SAM2Error("\(name) must be a finite number") }
        }
        guard minMaskRegionArea >= 0 else { throw SAM2Error("minimum mask region area must not be negative") }
        guard (0...1).contains(boxNMSThreshold) else { throw SAM2Error("box NMS threshold must lie in [0, 1], got \(boxNMSThreshold)") }
    }

    /// The grid's points, normalized (`build_point_grid` or the explicit grid).
    public var normalizedPoints: [(x: Double, y: Double)] {
        if let n = pointsPerSide { return PointGrid.regular(pointsPerSide: n) }
        return (pointGrid ?? []).map { ($0[0], $0[1]) }
    }
}

/// `build_point_grid` (sam2/utils/amg.py), in float64 as numpy computes it.
public enum PointGrid {
    /// n × n points, row-major with y outer and x inner: point k = (v[k mod n], v[k div n]), with
    /// v = `linspace(1/(2n), 1 − 1/(2n), n)`.
    public static func regular(pointsPerSide n: Int) -> [(x: Double, y: Double)] {
        let v = linspace(1 / (2 * Double(n)), 1 - 1 / (2 * Double(n)), count: n)
        return (0..<(n * n)).map { k in (v[k % n], v[k / n]) }
    }

    /// numpy's `linspace(start, stop, num)`: step = (stop − start)/(num − 1) once, value i =
    /// i·step + start, and the last value set to exactly `stop`.
    static func linspace(_ start: Double, _ stop: Double, count: Int) -> [Double] {
        guard count > 1 else { return count == 1 ? [start] : [] }
        let step = (stop - start) / Double(count - 1)
        var values = (0..<count).map { Double($0) * step + start }
        values[count - 1] = stop
        return values
    }
}
