import Foundation

/// What every JSON request body of the API shares: one object with known keys, finite numbers,
/// an optional CRS. Errors are ``GeoSAM2ServerError`` 400s that name the problem.
enum JSONBody {
    /// The body as a JSON object, refusing invalid JSON, other values and keys not in `keys`.
    static func object(_ data: Data, keys: Set<String>) throws -> [String: JSONValue] {
        let json: JSONValue
        do {
            json = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw GeoSAM2ServerError.badRequest("the body is not valid JSON")
        }
        guard case let .object(body) = json else { throw GeoSAM2ServerError.badRequest("the body must be a JSON object") }
        if let unknown = body.keys.filter({ !keys.contains($0) }).sorted().first {
            throw GeoSAM2ServerError.badRequest("unknown key \"\(unknown)\"; expected \(keys.sorted().joined(separator: ", "))")
        }
        return body
    }

    /// A finite number, integer or not; nil for anything else.
    static func number(_ value: JSONValue) -> Double? {
        switch value {
        case let .integer(v): return Double(v)
        case let .number(v) where v.isFinite: return v
        default: return nil
        }
    }

    /// The `crs` member: nil when absent or null, else a trimmed CRS definition GDAL is given.
    static func crs(_ value: JSONValue?) throws -> String? {
        switch value {
        case nil, .null?: return nil
        case let .string(crs)?:
            let trimmed = crs.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty, trimmed.count <= SegmentRequest.maxCRSLength else {
                throw GeoSAM2ServerError.badRequest("crs must be a non-empty CRS definition of at most \(SegmentRequest.maxCRSLength) characters")
            }
            return trimmed
        default: throw GeoSAM2ServerError.badRequest("crs must be a string such as \"EPSG:4326\", or null")
        }
    }

    /// A boolean member: false when absent or null.
    static func flag(_ body: [String: JSONValue], _ key: String) throws -> Bool {
        switch body[key] {
        case nil, .null?: return false
        case let .bool(v)?: return v
        default: throw GeoSAM2ServerError.badRequest("\(key) must be true or false")
        }
    }

    /// A non-negative number member: 0 when absent or null.
    static func amount(_ body: [String: JSONValue], _ key: String) throws -> Double {
        switch body[key] {
        case nil, .null?: return 0
        case let value?:
            guard let v = number(value), v >= 0, v < 1e12 else { throw GeoSAM2ServerError.badRequest("\(key) must be a number ≥ 0") }
            return v
        }
    }
}
