import Foundation
import TensorIO

/// A tile `verify` found unusable, and why.
public struct TileProblem: Sendable, Equatable, CustomStringConvertible {
    public var tile: String
    public var reason: String
    public var description: String { "\(tile): \(reason)" }
}

/// What `verify` found in a feature store.
public struct VerificationReport: Sendable {
    public var done: [String] = []
    public var empty: [String] = []
    public var pending: [String] = []
    /// Tiles whose file is corrupt, unreadable or does not match the manifest.
    public var problems: [TileProblem] = []
    /// Done or empty tiles whose files carry no checksum (written before stores had them): they
    /// were checked for structure and values only.
    public var unchecked: [String] = []

    /// True when every tile is encoded (or empty) and sound.
    public var isComplete: Bool { pending.isEmpty && problems.isEmpty }
}

extension FeatureStore {
    /// Checks every tile of the manifest: its checksum over every byte of its file, that it is
    /// readable and matches the manifest (tensor names, shapes and dtype, tile id, window,
    /// geotransform, checkpoint); with `readValues`, also that every value decodes to a finite
    /// number. Records the states in the manifest when all is well.
    public func verify(readValues: Bool = true) throws -> VerificationReport {
        var report = VerificationReport()
        for tile in manifest.allTiles {
            switch state(of: tile) {
            case .pending:
                report.pending.append(tile.id)
            case .empty:
                do {
                    if try !checkEmptyMarker(tile) { report.unchecked.append(tile.id) }
                    report.empty.append(tile.id)
                } catch {
                    report.problems.append(TileProblem(tile: tile.id, reason: "\(error)"))
                }
            case .done:
                do {
                    if try !checkFeatureFile(tile, readValues: readValues) { report.unchecked.append(tile.id) }
                    report.done.append(tile.id)
                } catch {
                    report.problems.append(TileProblem(tile: tile.id, reason: "\(error)"))
                }
            }
        }
        if report.problems.isEmpty { try finalizeIfComplete() }
        return report
    }

    /// Checks a tile's feature file; returns whether a checksum covered it.
    private func checkFeatureFile(_ tile: StoreManifest.TileEntry, readValues: Bool) throws -> Bool {
        let d = manifest.model.configuration.modelDimension
        let g = 64
        let expected: [(String, [Int])] = [
            (Self.imageEmbeddingName, [d, g, g]),
            (Self.highResolutionNames[0], [d / 8, 4 * g, 4 * g]),
            (Self.highResolutionNames[1], [d / 4, 2 * g, 2 * g]),
        ]
        let dtype = FeatureDType(rawValue: manifest.encoding.featureDType) ?? .q16z
        let archive = try SafetensorsFile(contentsOf: featuresURL(tile))
        let checksummed = try checksumCovers(checksumStatus(archive), file: "it")
        guard archive.metadata["tile"] == tile.id else {
            throw GeoSegmentError("file holds tile \(archive.metadata["tile"] ?? "?")")
        }
        guard archive.metadata["checkpoint_sha256"] == manifest.model.checkpointSHA256 else {
            throw GeoSegmentError("encoded with another checkpoint")
        }
        // The manifest's tile entry against what the file was written for: catches a damaged manifest.
        if let window = archive.metadata["window"], window != tile.windowText {
            throw GeoSegmentError("the file was written for window \(window), the manifest says \(tile.window)")
        }
        if let transform = archive.metadata["geotransform"], transform != tile.geoTransformText {
            throw GeoSegmentError("the file was written for geotransform \(transform), the manifest says \(tile.geoTransform)")
        }
        for (name, shape) in expected {
            let stored = dtype.shapeTensor(of: name)
            guard let info = archive.info(stored.name) else { throw GeoSegmentError("no tensor \(stored.name)") }
            guard info.shape == shape else { throw GeoSegmentError("\(stored.name) has shape \(info.shape), expected \(shape)") }
            guard info.dtype == stored.dtype else { throw GeoSegmentError("\(stored.name) is \(info.dtype), the manifest says \(manifest.encoding.featureDType)") }
            if readValues {
                let t = try FeatureDType.decode(name: name, from: archive)
                guard t.withElements({ $0.allSatisfy(\.isFinite) }) else { throw GeoSegmentError("\(name) holds NaN or infinite values") }
            }
        }
        return checksummed
    }

    /// Checks an empty-tile marker; returns whether a checksum covered it.
    private func checkEmptyMarker(_ tile: StoreManifest.TileEntry) throws -> Bool {
        let data = try rethrowing("cannot read \(emptyMarkerURL(tile).lastPathComponent)") { try Data(contentsOf: emptyMarkerURL(tile)) }
        let checksummed = try checksumCovers(data.withUnsafeBytes { ContentChecksum.check($0, searchLimit: $0.count) },
                                             file: "the empty-tile marker")
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], object["tile"] as? String == tile.id else {
            throw GeoSegmentError("the empty-tile marker does not name this tile")
        }
        return checksummed
    }

    /// Moves the files of `tiles` aside (to `tiles/<id>.<ext>.corrupt`, replacing an earlier
    /// copy), so that they count as pending and the next encode run writes them again; the
    /// manifest is marked incomplete.
    public func setAside(_ tiles: [String]) throws {
        let fm = FileManager.default
        for id in tiles {
            guard let entry = tile(id: id) else { throw GeoSegmentError("no tile \(id) in \(url.path)") }
            for file in [featuresURL(entry), emptyMarkerURL(entry)] where fm.fileExists(atPath: file.path) {
                let aside = file.appendingPathExtension("corrupt")
                if rename(file.path, aside.path) != 0 {
                    throw GeoSegmentError("cannot move \(file.path) aside: \(String(cString: strerror(errno)))")
                }
            }
        }
        var updated = manifest
        if updated.complete {
            updated.complete = false
            updated.updateTiles { $0.state = state(of: $0) }
            try replaceManifest(updated)
        }
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
