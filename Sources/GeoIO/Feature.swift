import CGDAL

/// The type of an attribute field.
public enum FieldType: String, Sendable, CaseIterable {
    case integer, integer64, real, string, date, time, dateTime
    /// A type this module reads as text (lists, binary, …).
    case other

    init(_ type: OGRFieldType) {
        switch type {
        case OFTInteger: self = .integer
        case OFTInteger64: self = .integer64
        case OFTReal: self = .real
        case OFTString: self = .string
        case OFTDate: self = .date
        case OFTTime: self = .time
        case OFTDateTime: self = .dateTime
        default: self = .other
        }
    }

    var ogr: OGRFieldType {
        switch self {
        case .integer: OFTInteger
        case .integer64: OFTInteger64
        case .real: OFTReal
        case .string, .other: OFTString
        case .date: OFTDate
        case .time: OFTTime
        case .dateTime: OFTDateTime
        }
    }
}

/// An attribute field of a vector layer.
public struct FieldDefinition: Sendable, Hashable {
    public var name: String
    public var type: FieldType
    /// Maximum width (0 = driver default); matters for Shapefile.
    public var width: Int
    /// Digits after the decimal point for reals (0 = driver default).
    public var precision: Int

    public init(_ name: String, type: FieldType, width: Int = 0, precision: Int = 0) {
        self.name = name
        self.type = type
        self.width = width
        self.precision = precision
    }
}

/// A date and/or time attribute, as OGR stores it.
public struct FieldDateTime: Sendable, Hashable {
    public var year: Int
    public var month: Int
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Double
    /// Offset from UTC in minutes (a multiple of 15), or `nil` for unknown/local time.
    public var utcOffsetMinutes: Int?

    public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Double = 0,
                utcOffsetMinutes: Int? = nil) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
        self.utcOffsetMinutes = utcOffsetMinutes
    }

    /// OGR's time-zone flag: 0 unknown, 100 = UTC, 100 ± n for n quarter hours.
    var ogrTimeZoneFlag: Int32 {
        guard let offset = utcOffsetMinutes else { return 0 }
        return Int32(clamping: 100 + offset / 15)
    }

    static func offset(fromOGRFlag flag: Int32) -> Int? {
        flag >= 100 ? Int(flag - 100) * 15 : nil
    }
}

/// An attribute value.
public enum FieldValue: Sendable, Hashable {
    case integer(Int)
    case real(Double)
    case string(String)
    case dateTime(FieldDateTime)
    case null

    /// The value as an integer, if it is one.
    public var intValue: Int? {
        if case let .integer(value) = self { return value }
        return nil
    }

    /// The value as a double (integers convert).
    public var doubleValue: Double? {
        switch self {
        case let .real(value): value
        case let .integer(value): Double(value)
        default: nil
        }
    }

    /// The value as a string, if it is one.
    public var stringValue: String? {
        if case let .string(value) = self { return value }
        return nil
    }
}

extension FieldValue: ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral,
    ExpressibleByNilLiteral {
    public init(integerLiteral value: Int) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .real(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(nilLiteral: ()) { self = .null }
}

/// A vector feature as a Swift value.
public struct Feature: Sendable, Hashable {
    /// The feature id assigned by the layer, or `nil` for a feature not yet written.
    public var fid: Int64?
    /// The geometry (in the layer's CRS), or `nil` if the feature has none.
    public var geometry: Geometry?
    /// Attribute values by field name. Features read from a layer list every field, with `.null` for unset ones.
    public var attributes: [String: FieldValue]

    public init(fid: Int64? = nil, geometry: Geometry?, attributes: [String: FieldValue] = [:]) {
        self.fid = fid
        self.geometry = geometry
        self.attributes = attributes
    }
}

// MARK: - OGR feature handle

/// Owns an `OGRFeatureH` and destroys it in `deinit`.
final class OGRFeature {
    let handle: OGRFeatureH

    init(taking handle: OGRFeatureH) { self.handle = handle }

    deinit { OGR_F_Destroy(handle) }

    /// Converts to a ``Feature`` value.
    func toFeature() throws -> Feature {
        let fid = OGR_F_GetFID(handle)
        var geometry: Geometry?
        if let geometryHandle = OGR_F_GetGeometryRef(handle) {
            var bytes = [UInt8](repeating: 0, count: OGR_G_WkbSizeEx(geometryHandle))
            let error = bytes.withUnsafeMutableBufferPointer {
                OGR_G_ExportToIsoWkb(geometryHandle, wkbNDR, $0.baseAddress)
            }
            guard error == OGRERR_NONE else { throw GeoIOError.gdal("cannot export geometry of feature \(fid)") }
            geometry = Geometry(trustedWKB: bytes)
        }
        var attributes: [String: FieldValue] = [:]
        for index in 0..<OGR_F_GetFieldCount(handle) {
            guard let field = OGR_F_GetFieldDefnRef(handle, index), let namePointer = OGR_Fld_GetNameRef(field) else {
                continue
            }
            attributes[String(cString: namePointer)] = value(at: index, type: FieldType(OGR_Fld_GetType(field)))
        }
        return Feature(fid: fid == OGRNullFID ? nil : fid, geometry: geometry, attributes: attributes)
    }

    private func value(at index: Int32, type: FieldType) -> FieldValue {
        guard OGR_F_IsFieldSetAndNotNull(handle, index) != 0 else { return .null }
        switch type {
        case .integer, .integer64:
            return .integer(Int(OGR_F_GetFieldAsInteger64(handle, index)))
        case .real:
            return .real(OGR_F_GetFieldAsDouble(handle, index))
        case .date, .time, .dateTime:
            var year: Int32 = 0, month: Int32 = 0, day: Int32 = 0, hour: Int32 = 0, minute: Int32 = 0
            var second: Float = 0, zone: Int32 = 0
            guard OGR_F_GetFieldAsDateTimeEx(handle, index, &year, &month, &day, &hour, &minute,
                                             &second, &zone) != 0 else { return .null }
            return .dateTime(FieldDateTime(
                year: Int(year), month: Int(month), day: Int(day), hour: Int(hour), minute: Int(minute),
                second: Double(second), utcOffsetMinutes: FieldDateTime.offset(fromOGRFlag: zone)))
        case .string, .other:
            guard let text = OGR_F_GetFieldAsString(handle, index) else { return .null }
            return .string(String(cString: text))
        }
    }

    /// Sets geometry and attributes from a ``Feature`` value; throws on unknown field names.
    func set(from feature: Feature, layerName: String) throws {
        if let fid = feature.fid { _ = OGR_F_SetFID(handle, fid) }
        if let geometry = feature.geometry {
            let ogr = try OGRGeometry(wkb: geometry.wkb)
            // SetGeometry copies, so `ogr` keeps ownership of its handle.
            guard OGR_F_SetGeometry(handle, ogr.handle) == OGRERR_NONE else {
                throw GeoIOError.gdal("cannot set geometry of a feature of layer \(layerName)")
            }
        }
        for (name, value) in feature.attributes.sorted(by: { $0.key < $1.key }) {
            let index = OGR_F_GetFieldIndex(handle, name)
            guard index >= 0 else {
                throw GeoIOError("layer \(layerName) has no field named \"\(name)\"")
            }
            switch value {
            case let .integer(number): OGR_F_SetFieldInteger64(handle, index, Int64(number))
            case let .real(number): OGR_F_SetFieldDouble(handle, index, number)
            case let .string(text): OGR_F_SetFieldString(handle, index, text)
            case let .dateTime(date):
                OGR_F_SetFieldDateTimeEx(handle, index, Int32(clamping: date.year), Int32(clamping: date.month), Int32(clamping: date.day),
                                         Int32(clamping: date.hour), Int32(clamping: date.minute), Float(date.second),
                                         date.ogrTimeZoneFlag)
            case .null: OGR_F_SetFieldNull(handle, index)
            }
        }
    }
}
