import Hummingbird

/// An error the server answers with: an HTTP status and a one-line message, sent as
/// `{"error": "message"}`.
public struct GeoSAM2ServerError: Error, CustomStringConvertible, Sendable, Equatable {
    public let status: HTTPResponse.Status
    public let description: String

    public init(_ status: HTTPResponse.Status, _ description: String) {
        self.status = status
        self.description = description
    }

    /// A malformed or invalid request (400).
    public static func badRequest(_ message: String) -> GeoSAM2ServerError { .init(.badRequest, message) }
    /// Something that does not exist (404).
    public static func notFound(_ message: String) -> GeoSAM2ServerError { .init(.notFound, message) }
    /// A well-formed request the data cannot satisfy, e.g. a click outside the raster (422).
    public static func unprocessable(_ message: String) -> GeoSAM2ServerError { .init(.unprocessableContent, message) }
}
