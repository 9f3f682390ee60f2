/// Errors of the GeoSAM2 domain layer (encoding, feature stores, segmentation, export): one line
/// for the user, carrying the underlying library's message where there is one.
public struct GeoSegmentError: Error, CustomStringConvertible, Sendable, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs `body`, turning any error into a `GeoSegmentError` that keeps its message.
func rethrowing<T>(_ context: @autoclosure () -> String? = nil, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as GeoSegmentError {
        throw error
    } catch {
        let message = String(describing: error)
        if let context = context() { throw GeoSegmentError("\(context): \(message)") }
        throw GeoSegmentError(message)
    }
}
