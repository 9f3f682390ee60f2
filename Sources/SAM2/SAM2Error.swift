/// Errors raised while building or running a SAM2 model.
public struct SAM2Error: Error, CustomStringConvertible, Sendable, Equatable {
    /// A one-line, human-readable explanation.
    public let description: String
    public init(_ description: String) { self.description = description }
}
