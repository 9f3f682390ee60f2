import Foundation
import TensorIO

/// What `verify` found in a feature store.
public struct VerificationReport: Sendable {
    public var done: [String] = []
    public var empty: [String] = []
    public var pending: [String] = []
    /// `tile id: reason` for each tile whose file is unreadable or does not match the manifest.
    public var problems: [String] = []

    /// True when every tile is encoded (or empty) and readable.
    public var isComplete: Bool { pending.isEmpty && problems.isEmpty }
}

extension FeatureStore {
    /// Checks that every tile of the manifest is present, readable and matches the manifest
    /// (tensor names, shapes and dtype, tile id, checkpoint); with `readValues`, also that every
    /// value decodes to a finite number. Records the states in the manifest when all is well.
    public func verify(readValues: Bool = true) throws -> VerificationReport {
        var report = VerificationReport()
        let d = manifest.model.configuration.modelDimension
        let g = 64
        let expected: [(String, [Int])] = [
            (Self.imageEmbeddingName, [d, g, g]),
            (Self.highResolutionNames[0], [d / 8, 4 * g, 4 * g]),
            (Self.highResolutionNames[1], [d / 4, 2 * g, 2 * g]),
        ]
        let dtype = FeatureDType(rawValue: manifest.encoding.featureDType) ?? .q16z
        for tile in manifest.tiles {
            switch state(of: tile) {
            case .pending:
                report.pending.append(tile.id)
            case .empty:
                report.empty.append(tile.id)
            case .done:
                do {
                    let archive = try SafetensorsFile(contentsOf: featuresURL(tile))
                    guard archive.metadata["tile"] == tile.id else {
                        throw GeoSegmentError("file holds tile \(archive.metadata["tile"] ?? "?")")
                    }
                    guard archive.metadata["checkpoint_sha256"] == manifest.model.checkpointSHA256 else {
                        throw GeoSegmentError("encoded with another checkpoint")
                    }
                    for (name, shape) in expected {
                        let stored = dtype.shapeTensor(of: name)
                        guard let info = archive.info(stored.name) else { throw GeoSegmentError("no tensor \(stored.name)") }
                        guard info.shape == shape else { throw GeoSegmentError("\(stored.name) has shape \(info.shape), expected \(shape)") }
                        guard info.dtype == stored.dtype else { throw GeoSegmentError("\(stored.name) is \(info.dtype), the manifest says \(manifest.encoding.featureDType)") }
                        if readValues {
                            let t = try FeatureDType.decode(name: name, from: archive)
                            guard t.scalars.allSatisfy(\.isFinite) else { throw GeoSegmentError("\(name) holds NaN or infinite values") }
                        }
                    }
                    report.done.append(tile.id)
                } catch {
                    report.problems.append("\(tile.id): \(error)")
                }
            }
        }
        if report.problems.isEmpty { try finalizeIfComplete() }
        return report
    }

    /// Bytes on disk of the store's files.
    public var sizeOnDisk: Int {
        let fm = FileManager.default
        var total = 0
        for dir in [url, tilesURL] {
            for name in (try? fm.contentsOfDirectory(atPath: dir.path)) ?? [] {
                let attributes = try? fm.attributesOfItem(atPath: dir.appendingPathComponent(name).path)
                if (attributes?[.type] as? FileAttributeType) == .typeRegular { total += (attributes?[.size] as? Int) ?? 0 }
            }
        }
        return total
    }
}
