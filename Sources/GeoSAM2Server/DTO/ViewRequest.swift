import Foundation
import GeoSegment

/// The body of `PUT /api/view`: what the user is looking at, so that encoding on demand fills
/// those tiles first.
///
/// ```json
/// {"bbox": [minx, miny, maxx, maxy], "crs": "EPSG:4326" | null}
/// ```
public struct ViewRequest: Sendable, Equatable {
    public var box: MapBox
    public var crs: String?

    /// Parses and validates a request body.
    /// - Throws: ``GeoSAM2ServerError`` (400) naming what is wrong.
    public static func parse(_ data: Data) throws -> ViewRequest {
        let json: JSONValue
        do {
            json = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw GeoSAM2ServerError.badRequest("the body is not valid JSON")
        }
        guard case let .object(body) = json else { throw GeoSAM2ServerError.badRequest("the body must be a JSON object") }
        if let unknown = body.keys.filter({ $0 != "bbox" && $0 != "crs" }).sorted().first {
            throw GeoSAM2ServerError.badRequest("unknown key \"\(unknown)\"; expected bbox, crs")
        }
        guard case let .array(values)? = body["bbox"] else {
            throw GeoSAM2ServerError.badRequest("bbox must be [minx, miny, maxx, maxy]")
        }
        let v = values.compactMap { value -> Double? in
            switch value {
            case let .integer(i): return Double(i)
            case let .number(d) where d.isFinite: return d
            default: return nil
            }
        }
        guard values.count == 4, v.count == 4, v[0] <= v[2], v[1] <= v[3] else {
            throw GeoSAM2ServerError.badRequest("bbox must be [minx, miny, maxx, maxy] with finite numbers, minx ≤ maxx and miny ≤ maxy")
        }
        var crs: String?
        switch body["crs"] {
        case nil, .null?: break
        case let .string(text)?:
            let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty, trimmed.count <= SegmentRequest.maxCRSLength else {
                throw GeoSAM2ServerError.badRequest("crs must be a non-empty CRS definition of at most \(SegmentRequest.maxCRSLength) characters")
            }
            crs = trimmed
        default: throw GeoSAM2ServerError.badRequest("crs must be a string such as \"EPSG:4326\", or null")
        }
        return ViewRequest(box: MapBox(minX: v[0], minY: v[1], maxX: v[2], maxY: v[3]), crs: crs)
    }
}
