import Foundation
import Kernels

/// Name, element type and shape of one stored tensor, known without decoding its data.
public struct TensorInfo: Sendable, Equatable {
    /// The tensor's key (e.g. `image_encoder.trunk.pos_embed`).
    public let name: String
    /// The on-disk element type (tensors are converted to Float32 when read).
    public let dtype: DType
    /// Extent of each dimension, outermost first (`[]` for a scalar).
    public let shape: [Int]

    /// Creates a description (archives build these; public for tests and callers' fakes).
    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }
}

/// A read-only, lazily decoded collection of named tensors (a PyTorch checkpoint or a
/// safetensors file). Opening is cheap; element data is converted only by `tensor(named:)`.
public protocol TensorArchive: AnyObject, Sendable {
    /// The file the archive was opened from.
    var url: URL { get }
    /// Tensor names in file order.
    var tensorNames: [String] { get }
    /// Metadata for `name`, or `nil` if the archive has no such tensor.
    func info(_ name: String) -> TensorInfo?
    /// Decodes `name` to a row-major Float32 tensor (other element types are converted).
    /// Throws if the name is unknown or the data is unreadable.
    func tensor(named name: String) throws -> Tensor
}

/// Format detection for weight files.
public enum TensorArchives {
    /// Opens `url` as a PyTorch zip checkpoint or a safetensors file, chosen by content rather than
    /// by extension (people rename files).
    public static func open(_ url: URL) throws -> any TensorArchive {
        let file = try MappedFile(url: url)
        let r = file.reader
        if r.contains(0, 4), try r.u32(0, "magic") == 0x0403_4b50 {  // "PK\x03\x04"
            return try TorchCheckpoint(file: file, url: url)
        }
        if SafetensorsFile.looksLikeSafetensors(r) {
            return try SafetensorsFile(file: file, url: url)
        }
        if r.contains(0, 2), try r.u8(0, "magic") == 0x80 {
            throw TensorIOError("\(file.name): legacy (pre-1.6, non-zip) PyTorch checkpoint; re-save it with a current torch.save")
        }
        throw TensorIOError("\(file.name): not a PyTorch checkpoint or safetensors file")
    }
}
