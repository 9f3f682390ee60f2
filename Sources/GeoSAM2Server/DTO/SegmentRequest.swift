import Foundation
import GeoSegment

/// The body of `POST /api/segment` and `POST /api/objects`:
///
/// ```json
/// {"points": [[x, y, label], …], "box": [minx, miny, maxx, maxy] | null, "crs": "EPSG:4326" | null,
///  "multimask": false, "candidate": 0 | 1 | 2 | null,
///  "min_area": 0, "largest_only": false, "simplify": 0, "fill_holes": false}
/// ```
///
/// Coordinates are in `crs` (default: the store's); labels are 1 (foreground) or 0 (background).
/// Every key is optional but at least one point or a box is required; unknown keys are refused.
public struct SegmentRequest: Sendable, Equatable {
    public var prompt: ObjectPrompt
    public var options: PolygonOptions
    public var multimask: Bool
    /// Which of the multimask candidates to use (default: the best-scoring).
    public var candidate: Int?
    /// The class label saved with the object (`"class"`), nil when none.
    public var className: String?

    public static let maxPoints = 200
    public static let maxCRSLength = 16_384
    static let keys: Set<String> = ["points", "box", "crs", "multimask", "candidate", "min_area", "largest_only", "simplify", "fill_holes", "regularize", "class"]
    public static let maxClassLength = 200

    public init(prompt: ObjectPrompt, options: PolygonOptions = PolygonOptions(), multimask: Bool = false, candidate: Int? = nil) {
        self.prompt = prompt
        self.options = options
        self.multimask = multimask
        self.candidate = candidate
    }

    /// Parses and validates a request body.
    /// - Throws: ``GeoSAM2ServerError`` (400) naming what is wrong.
    public static func parse(_ data: Data) throws -> SegmentRequest {
        let body = try JSONBody.object(data, keys: keys)

        var prompt = ObjectPrompt()
        switch body["points"] {
        case nil, .null?: break
        case let .array(items)?:
            guard items.count <= maxPoints else { throw GeoSAM2ServerError.badRequest("at most \(maxPoints) points") }
            for (i, item) in items.enumerated() {
                guard case let .array(values) = item, values.count == 3,
                      let x = number(values[0]), let y = number(values[1]), let label = number(values[2]) else {
                    throw GeoSAM2ServerError.badRequest("points[\(i)] must be [x, y, label] with numbers")
                }
                guard label == 0 || label == 1 else {
                    throw GeoSAM2ServerError.badRequest("points[\(i)]: label must be 1 (foreground) or 0 (background)")
                }
                prompt.points.append(MapPoint(x: x, y: y, label: Int(label)))
            }
        default: throw GeoSAM2ServerError.badRequest("points must be an array of [x, y, label]")
        }
        switch body["box"] {
        case nil, .null?: break
        case let .array(values)?:
            let v = values.compactMap(number)
            guard values.count == 4, v.count == 4 else { throw GeoSAM2ServerError.badRequest("box must be [minx, miny, maxx, maxy] with numbers") }
            guard v[0] <= v[2], v[1] <= v[3] else { throw GeoSAM2ServerError.badRequest("box must be [minx, miny, maxx, maxy] with minx ≤ maxx and miny ≤ maxy") }
            prompt.box = MapBox(minX: v[0], minY: v[1], maxX: v[2], maxY: v[3])
        default: throw GeoSAM2ServerError.badRequest("box must be [minx, miny, maxx, maxy] or null")
        }
        prompt.crs = try JSONBody.crs(body["crs"])
        guard !prompt.isEmpty else { throw GeoSAM2ServerError.badRequest("no prompt: give at least one point or a box") }

        let multimask = try JSONBody.flag(body, "multimask")
        var candidate: Int?
        switch body["candidate"] {
        case nil, .null?: break
        case let value?:
            guard let c = number(value), c == c.rounded(), (0...2).contains(c) else {
                throw GeoSAM2ServerError.badRequest("candidate must be 0, 1 or 2")
            }
            guard multimask else { throw GeoSAM2ServerError.badRequest("candidate needs \"multimask\": true (there is one mask otherwise)") }
            candidate = Int(c)
        }
        let options = PolygonOptions(minArea: try JSONBody.amount(body, "min_area"), largestOnly: try JSONBody.flag(body, "largest_only"),
                                     simplify: try JSONBody.amount(body, "simplify"), fillHoles: try JSONBody.flag(body, "fill_holes"),
                                     regularize: try JSONBody.flag(body, "regularize"))
        var request = SegmentRequest(prompt: prompt, options: options, multimask: multimask, candidate: candidate)
        switch body["class"] {
        case nil, .null?: break
        case let .string(label)?:
            let trimmed = label.trimmingCharacters(in: .whitespacesAndNewlines)
            guard trimmed.count <= maxClassLength, !trimmed.contains(where: \.isNewline) else {
                throw GeoSAM2ServerError.badRequest("class must be one line of at most \(maxClassLength) characters")
            }
            request.className = trimmed.isEmpty ? nil : trimmed
        default: throw GeoSAM2ServerError.badRequest("class must be a string (a label such as \"building\") or null")
        }
        return request
    }

    private static func number(_ value: JSONValue) -> Double? { JSONBody.number(value) }
}
