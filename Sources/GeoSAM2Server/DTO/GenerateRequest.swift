import Foundation
import GeoSegment
import SAM2

/// The body of `POST /api/generate`: segment everything in a box.
///
/// ```json
/// {"bbox": [minx, miny, maxx, maxy], "crs": "EPSG:4326" | null,
///  "points_per_side": 32, "pred_iou_thresh": 0.8, "stability_score_thresh": 0.95,
///  "stability_score_offset": 1.0, "box_nms_thresh": 0.7, "crop_nms_thresh": 0.7,
///  "min_mask_region_area": 0, "use_m2m": false, "multimask_output": true,
///  "min_area": 0, "largest_only": false, "simplify": 0, "fill_holes": false, "regularize": false}
/// ```
/// Every generator key takes the official default when absent.
public struct GenerateRequest: Sendable, Equatable {
    public var view: ViewRequest
    public var options: GenerateOptions
    public var polygons: PolygonOptions

    static let generatorKeys: Set<String> = ["points_per_side", "pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                                             "box_nms_thresh", "crop_nms_thresh", "min_mask_region_area", "use_m2m", "multimask_output"]
    static let polygonKeys: Set<String> = ["min_area", "largest_only", "simplify", "fill_holes", "regularize"]

    /// Parses and validates a request body.
    /// - Throws: ``GeoSAM2ServerError`` (400) naming what is wrong.
    public static func parse(_ data: Data) throws -> GenerateRequest {
        let body = try JSONBody.object(data, keys: Set(["bbox", "crs"]).union(generatorKeys).union(polygonKeys))
        let view = try ViewRequest.parse(members: body)
        guard view.box.maxX > view.box.minX, view.box.maxY > view.box.minY else {
            throw GeoSAM2ServerError.badRequest("bbox must have an area (minx < maxx and miny < maxy)")
        }
        var options = GenerateOptions()
        func number(_ key: String) throws -> Double? {
            switch body[key] {
            case nil, .null?: return nil
            case let value?:
                guard let v = JSONBody.number(value) else { throw GeoSAM2ServerError.badRequest("\(key) must be a number") }
                return v
            }
        }
        if let v = try number("points_per_side") {
            guard v == v.rounded(), (1...128).contains(v) else { throw GeoSAM2ServerError.badRequest("points_per_side must be an integer from 1 to 128") }
            options.masks.pointsPerSide = Int(v)
        }
        if let v = try number("pred_iou_thresh") { options.masks.predictedIoUThreshold = v }
        if let v = try number("stability_score_thresh") { options.masks.stabilityScoreThreshold = v }
        if let v = try number("stability_score_offset") { options.masks.stabilityScoreOffset = v }
        if let v = try number("box_nms_thresh") { options.masks.boxNMSThreshold = v }
        if let v = try number("crop_nms_thresh") { options.cropNMSThreshold = v }
        if let v = try number("min_mask_region_area") { options.masks.minMaskRegionArea = v }
        options.masks.useM2M = try JSONBody.flag(body, "use_m2m")
        // Absent or null keeps the official default (true).
        if let value = body["multimask_output"], value != .null { options.masks.multimaskOutput = try JSONBody.flag(body, "multimask_output") }
        do { try options.validate() } catch { throw GeoSAM2ServerError.badRequest("\(error)") }
        let polygons = PolygonOptions(minArea: try JSONBody.amount(body, "min_area"), largestOnly: try JSONBody.flag(body, "largest_only"),
                                      simplify: try JSONBody.amount(body, "simplify"), fillHoles: try JSONBody.flag(body, "fill_holes"),
                                      regularize: try JSONBody.flag(body, "regularize"))
        do { try polygons.validate() } catch { throw GeoSAM2ServerError.badRequest("\(error)") }
        return GenerateRequest(view: view, options: options, polygons: polygons)
    }
}
