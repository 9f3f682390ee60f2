import Kernels

/// A source of named tensors: a checkpoint file, or a dictionary in tests.
public protocol WeightProvider: Sendable {
    /// Every tensor name the source holds.
    var tensorNames: [String] { get }
    /// The shape of a tensor, or nil if the source has no tensor of that name.
    func shape(of name: String) -> [Int]?
    /// The tensor, converted to Float32.
    func tensor(named name: String) throws -> Tensor
}

/// Tensors held in memory, keyed by name.
public struct InMemoryWeights: WeightProvider {
    public var tensors: [String: Tensor]
    public init(_ tensors: [String: Tensor]) { self.tensors = tensors }
    public var tensorNames: [String] { tensors.keys.sorted() }
    public func shape(of name: String) -> [Int]? { tensors[name]?.shape }
    public func tensor(named name: String) throws -> Tensor {
        guard let t = tensors[name] else { throw SAM2Error("missing tensor \(name)") }
        return t
    }
}

/// Reads the model's tensors by their official (Meta) key, checking each shape.
struct WeightReader {
    let provider: any WeightProvider
    let prefix: String

    init(_ provider: any WeightProvider, prefix: String = "") {
        self.provider = provider
        self.prefix = prefix
    }

    /// A reader whose keys are relative to `component` (e.g. `image_encoder.trunk`).
    func scoped(_ component: String) -> WeightReader {
        WeightReader(provider, prefix: key(component))
    }

    func key(_ name: String) -> String { prefix.isEmpty ? name : "\(prefix).\(name)" }

    /// The tensor `name` under this scope, which must have exactly `shape`.
    func load(_ name: String, _ shape: [Int]) throws -> Tensor {
        let full = key(name)
        guard let found = provider.shape(of: full) else {
            throw SAM2Error("checkpoint has no tensor \(full) (expected shape \(shape))")
        }
        guard found == shape else {
            throw SAM2Error("checkpoint tensor \(full) has shape \(found), the model needs \(shape)")
        }
        let t = try provider.tensor(named: full)
        guard t.shape == shape else {
            throw SAM2Error("checkpoint tensor \(full) decoded to shape \(t.shape), the model needs \(shape)")
        }
        return t
    }

    /// Whether the source holds `name` under this scope.
    func contains(_ name: String) -> Bool { provider.shape(of: key(name)) != nil }
}
