import Foundation
import GeoIO

/// Any JSON value, for responses whose shape is data (GeoJSON properties, geometries).
public enum JSONValue: Sendable, Equatable, Codable {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])
    /// JSON text inserted as it is: GDAL's GeoJSON of a geometry, which would be slow to parse
    /// and re-encode. Must be valid JSON.
    case raw(String)

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Int.self) {
            self = .integer(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case let .bool(v): try container.encode(v)
        case let .integer(v): try container.encode(v)
        // JSON has no NaN or infinity.
        case let .number(v): if v.isFinite { try container.encode(v) } else { try container.encodeNil() }
        case let .string(v): try container.encode(v)
        case let .array(v): try container.encode(v)
        case let .object(v): try container.encode(v)
        case let .raw(text): try container.encode(try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)))
        }
    }

    /// Compact JSON text with sorted keys. Much faster than `JSONEncoder` for large geometries.
    public func serialized() -> String {
        var out = ""
        out.reserveCapacity(4096)
        write(to: &out)
        return out
    }

    private func write(to out: inout String) {
        switch self {
        case .null: out += "null"
        case let .bool(v): out += v ? "true" : "false"
        case let .integer(v): out += String(v)
        case let .number(v): out += v.isFinite ? (v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : "\(v)") : "null"
        case let .string(v): Self.quote(v, into: &out)
        case let .raw(text): out += text
        case let .array(values):
            out += "["
            for (i, value) in values.enumerated() {
                if i > 0 { out += "," }
                value.write(to: &out)
            }
            out += "]"
        case let .object(members):
            out += "{"
            for (i, key) in members.keys.sorted().enumerated() {
                if i > 0 { out += "," }
                Self.quote(key, into: &out)
                out += ":"
                members[key]?.write(to: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ text: String, into out: inout String) {
        out += "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    /// The value of an OGR attribute.
    init(_ value: FieldValue) {
        switch value {
        case let .integer(v): self = .integer(v)
        case let .real(v): self = .number(v)
        case let .string(v): self = .string(v)
        case let .dateTime(d):
            self = .string(String(format: "%04d-%02d-%02dT%02d:%02d:%02.0f", d.year, d.month, d.day, d.hour, d.minute, d.second))
        case .null: self = .null
        }
    }

    /// A member of an object.
    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }
}

/// Builds GeoJSON FeatureCollections.
enum GeoJSON {
    /// A FeatureCollection, with the GeoJSON 2008 `crs` member naming the CRS when it has an EPSG
    /// code (GDAL and QGIS read it; RFC 7946 readers ignore it), plus `extra` top-level members.
    static func collection(_ features: [JSONValue], epsg: Int?, extra: [String: JSONValue] = [:]) -> JSONValue {
        var object: [String: JSONValue] = ["type": .string("FeatureCollection"), "features": .array(features)]
        if let epsg {
            object["crs"] = .object(["type": .string("name"), "properties": .object(["name": .string("urn:ogc:def:crs:EPSG::\(epsg)")])])
        }
        for (key, value) in extra { object[key] = value }
        return .object(object)
    }

    static func feature(id: Int64?, geometry: Geometry?, properties: [String: JSONValue]) -> JSONValue {
        var object: [String: JSONValue] = [
            "type": .string("Feature"),
            "geometry": geometry.map { .raw(compact($0.geoJSON)) } ?? .null,
            "properties": .object(properties),
        ]
        if let id { object["id"] = .integer(Int(id)) }
        return .object(object)
    }

    /// GDAL's geometry JSON without its spaces (a third of its size; it holds no strings with spaces).
    static func compact(_ json: String) -> String {
        var bytes = Array(json.utf8)
        bytes.removeAll { $0 == 0x20 }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func feature(_ feature: Feature, dropping: Set<String> = []) -> JSONValue {
        var properties: [String: JSONValue] = [:]
        for (key, value) in feature.attributes where !dropping.contains(key) { properties[key] = JSONValue(value) }
        return self.feature(id: feature.fid, geometry: feature.geometry, properties: properties)
    }
}
