import Foundation
import Kernels

/// A PyTorch (≥ 1.6) zip checkpoint written by `torch.save`, read without Python.
///
/// The file is memory-mapped and `data.pkl` is interpreted by a restricted unpickler that knows
/// only the handful of globals a state dict uses, so opening an untrusted checkpoint cannot run
/// code. Tensors are located at open time and decoded on demand.
///
/// If the pickled top-level dict has a `"model"` entry (Meta's `{"model": state_dict}`), that dict
/// is the state dict; otherwise the top-level dict itself is. Entries whose values are not tensors
/// are skipped; a state dict without any tensor is an error.
public final class TorchCheckpoint: TensorArchive {
    /// The checkpoint file.
    public let url: URL
    /// The archive's top-level folder (the saved file's basename, or `archive`).
    public let prefix: String
    /// State-dict keys in pickle (insertion) order.
    public let tensorNames: [String]

    private struct Stored: Sendable {
        let info: TensorInfo
        let record: TensorRecord
        /// Absolute file offset of the storage's first byte.
        let storageOffset: Int
    }

    private let file: MappedFile
    private let tensors: [String: Stored]

    /// Opens and indexes a checkpoint; throws `TensorIOError` for anything malformed or unsafe.
    public convenience init(contentsOf url: URL) throws {
        try self.init(file: MappedFile(url: url), url: url)
    }

    init(file: MappedFile, url: URL) throws {
        self.file = file
        self.url = url
        let name = file.name
        let directory = try ZipDirectory(file.reader)

        // The prefix is whatever the first entry lives under (torch's own reader does the same).
        guard let first = directory.entries.first else {
            throw TensorIOError("\(name): not a PyTorch checkpoint: the zip archive is empty")
        }
        guard let slash = first.name.firstIndex(of: "/") else {
            throw TensorIOError("\(name): not a PyTorch checkpoint: first zip entry '\(first.name)' is not inside a folder")
        }
        let prefix = String(first.name[..<slash])
        self.prefix = prefix

        func storedEntry(_ path: String) throws -> ZipEntry? {
            guard let e = directory.entry(path) else { return nil }
            guard e.method == 0 else {
                throw TensorIOError("\(name): zip entry '\(path)' is compressed (method \(e.method)); PyTorch checkpoints store entries uncompressed")
            }
            guard e.size == e.compressedSize else {
                throw TensorIOError("\(name): corrupt: stored zip entry '\(path)' has differing sizes (\(e.compressedSize) vs \(e.size))")
            }
            return e
        }

        if let order = try storedEntry("\(prefix)/byteorder") {
            let text = String(decoding: try file.reader.bytes(order.dataOffset, order.size, "byteorder"), as: UTF8.self)
            guard text.trimmingCharacters(in: .whitespacesAndNewlines) == "little" else {
                throw TensorIOError("\(name): unsupported byte order '\(text)' (only little-endian checkpoints are supported)")
            }
        }
        guard let pickle = try storedEntry("\(prefix)/data.pkl") else {
            throw TensorIOError("\(name): not a PyTorch checkpoint: no '\(prefix)/data.pkl' entry")
        }

        var storageOffsets: [String: Int] = [:]
        let lookup: StorageLookup = { key, dtype, count in
            let path = "\(prefix)/data/\(key)"
            guard let entry = try storedEntry(path) else {
                throw TensorIOError("\(name): data.pkl: storage '\(key)' has no zip entry '\(path)'")
            }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard !overflow, entry.size >= bytes else {
                throw TensorIOError("\(name): storage '\(path)' holds \(entry.size) bytes but \(count) \(dtype) elements need \(overflow ? "more" : String(bytes))")
            }
            storageOffsets[key] = entry.dataOffset
        }
        var vm = Unpickler(file.reader, start: pickle.dataOffset, length: pickle.size,
                           context: "\(name): data.pkl", lookupStorage: lookup)
        let records: [(String, TensorRecord)] = try vm.run { top in
            guard case .dict(let topDict) = top else {
                throw TensorIOError("\(name): data.pkl: top-level object is a \(top.typeName), expected a dict")
            }
            var stateDict = topDict
            if let model = topDict.value(forString: "model") {
                guard case .dict(let d) = model else {
                    throw TensorIOError("\(name): data.pkl: key 'model' holds a \(model.typeName), expected a state dict")
                }
                stateDict = d
            }
            var out: [(String, TensorRecord)] = []
            for (k, v) in zip(stateDict.keys, stateDict.values) {
                guard case .string(let key) = k, case .tensor(let t) = v else { continue }
                out.append((key, t))
            }
            // An archive with nothing to load is almost always the wrong file or a wrapper format
            // (e.g. {"state_dict": …}); say so instead of returning an empty archive.
            guard !out.isEmpty else {
                let keys = stateDict.keys.prefix(10).map { k -> String in
                    if case .string(let s) = k { return s }
                    return "<\(k.typeName)>"
                }
                throw TensorIOError("\(name): data.pkl: no tensors found (keys: \(keys.joined(separator: ", ")))")
            }
            return out
        }

        var names: [String] = []
        var tensors: [String: Stored] = [:]
        for (key, t) in records {
            let layout = StridedLayout(dtype: t.dtype, offset: t.offset, shape: t.shape, strides: t.strides)
            _ = try validateView(layout, storageCount: t.storageCount, file: name, key: key)
            guard let offset = storageOffsets[t.storageKey] else {
                throw TensorIOError("\(name): tensor '\(key)': storage '\(t.storageKey)' was never loaded")
            }
            names.append(key)
            tensors[key] = Stored(info: TensorInfo(name: key, dtype: t.dtype, shape: t.shape), record: t, storageOffset: offset)
        }
        self.tensorNames = names
        self.tensors = tensors
    }

    /// Storage dtype and shape of `name`, or `nil` if the state dict has no such key.
    public func info(_ name: String) -> TensorInfo? {
        tensors[name]?.info
    }

    /// Materializes `name` as a contiguous Float32 tensor, honouring its storage offset and strides.
    public func tensor(named name: String) throws -> Tensor {
        guard let s = tensors[name] else {
            throw TensorIOError("\(file.name): no tensor named '\(name)'")
        }
        let t = s.record
        let layout = StridedLayout(dtype: t.dtype, offset: t.offset, shape: t.shape, strides: t.strides)
        // Bounds were validated at open: every touched element lies inside the storage entry.
        let storage = file.base.map { $0 + s.storageOffset }
        return decodeTensor(shape: t.shape, storage: storage, layout: layout)
    }
}
