/// Errors raised while reading or writing tensor files (PyTorch checkpoints, safetensors, NumPy).
public struct TensorIOError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A one-line, human-readable explanation.
    public let description: String
    public init(_ description: String) { self.description = description }
}
