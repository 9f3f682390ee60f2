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
        try parse(members: try JSONBody.object(data, keys: ["bbox", "crs"]))
    }

    /// The `bbox` and `crs` members of a request body that holds them (and maybe more).
    static func parse(members body: [String: JSONValue]) throws -> ViewRequest {
        guard case let .array(values)? = body["bbox"] else {
            throw GeoSAM2ServerError.badRequest("bbox must be [minx, miny, maxx, maxy]")
        }
        let v = values.compactMap(JSONBody.number)
        guard values.count == 4, v.count == 4, v[0] <= v[2], v[1] <= v[3] else {
            throw GeoSAM2ServerError.badRequest("bbox must be [minx, miny, maxx, maxy] with finite numbers, minx ≤ maxx and miny ≤ maxy")
        }
        return ViewRequest(box: MapBox(minX: v[0], minY: v[1], maxX: v[2], maxY: v[3]), crs: try JSONBody.crs(body["crs"]))
    }
}
