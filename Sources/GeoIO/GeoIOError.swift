/// Errors raised by GDAL/OGR operations, carrying GDAL's own message where it gave one.
public struct GeoIOError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A one-line, human-readable explanation.
    public let description: String
    public init(_ description: String) { self.description = description }
}
