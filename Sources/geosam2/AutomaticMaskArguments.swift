import ArgumentParser
import SAM2

/// The official `SAM2AutomaticMaskGenerator` parameters as options, under their official names
/// and with their official defaults.
struct AutomaticMaskArguments: ParsableArguments {
    @Option(name: .customLong("points-per-side"), help: "Grid points per side of each tile (official points_per_side).")
    var pointsPerSide = 32

    @Option(name: .customLong("points-per-batch"), help: "Points decoded per batch (points_per_batch).")
    var pointsPerBatch = 64

    @Option(name: .customLong("pred-iou-thresh"), help: "Keep masks whose predicted IoU is above this; 0 turns the filter off (pred_iou_thresh).")
    var predictedIoUThreshold = 0.8

    @Option(name: .customLong("stability-score-thresh"), help: "Keep masks whose stability score is at least this; 0 turns the filter off (stability_score_thresh).")
    var stabilityScoreThreshold = 0.95

    @Option(name: .customLong("stability-score-offset"), help: "The logit offset of the stability score (stability_score_offset).")
    var stabilityScoreOffset = 1.0

    @Option(name: .customLong("mask-threshold"), help: "The logit threshold of a mask (mask_threshold).")
    var maskThreshold = 0.0

    @Option(name: .customLong("box-nms-thresh"), help: "Box IoU above which NMS drops the lower-scoring mask of a tile (box_nms_thresh).")
    var boxNMSThreshold = 0.7

    @Option(name: .customLong("min-mask-region-area"), help: "Fill holes and drop islands of at most this many low-resolution pixels (16 image pixels each on a 1024 tile) before upsampling, as sam2's predictor applies min_mask_region_area.")
    var minMaskRegionArea = 0.0

    @Flag(name: .customLong("use-m2m"), help: "Refine every mask once with its own logits as the mask input (use_m2m).")
    var useM2M = false

    @Flag(name: .customLong("single-mask"), help: "One mask per point instead of three (multimask_output=False).")
    var singleMask = false

    var options: AutomaticMaskOptions {
        get throws {
            var o = AutomaticMaskOptions()
            o.pointsPerSide = pointsPerSide
            o.pointsPerBatch = pointsPerBatch
            o.predictedIoUThreshold = predictedIoUThreshold
            o.stabilityScoreThreshold = stabilityScoreThreshold
            o.stabilityScoreOffset = stabilityScoreOffset
            o.maskThreshold = maskThreshold
            o.boxNMSThreshold = boxNMSThreshold
            o.minMaskRegionArea = minMaskRegionArea
            o.useM2M = useM2M
            o.multimaskOutput = !singleMask
            do { try o.validate() } catch { throw CLIError("\(error)") }
            return o
        }
    }
}
