import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Kernels
import SAM2
import TensorIO

/// A directory of encoded tiles: `manifest.json` plus `tiles/<id>.safetensors` (the three SAM2
/// feature maps, readable by any safetensors reader) and `tiles/<id>.empty` for tiles without
/// valid pixels.
///
/// Every file is written to a temporary name and renamed, so a killed process leaves either the
/// old file or the new one, never a torn one. A tile's state is what its file says; the manifest
/// records the states once the store is complete.
public final class FeatureStore: @unchecked Sendable {
    // @unchecked: the manifest is guarded by `lock` (a server encoding on demand finalizes it from
    // its encoding thread while requests read it); everything else is immutable or on disk.
    public let url: URL
    private let lock = NSLock()
    private var current: StoreManifest
    /// The manifest as last written (a snapshot: it changes when the store gains levels or is
    /// finalized).
    public var manifest: StoreManifest {
        lock.withLock { current }
    }

    public static let manifestName = "manifest.json"
    public static let tilesDirectory = "tiles"
    /// Tensor names in a tile file, as `SAM2ImagePredictor._features` calls them.
    public static let imageEmbeddingName = "image_embed"
    public static let highResolutionNames = ["high_res_feats_0", "high_res_feats_1"]
    static let tileFormat = "geosam2-tile-1"

    init(url: URL, manifest: StoreManifest) {
        self.url = url
        self.current = manifest
    }

    /// Opens an existing store.
    public static func open(_ url: URL) throws -> FeatureStore {
        let manifestURL = url.appendingPathComponent(manifestName)
        guard FileManager.default.fileExists(atPath: manifestURL.path) else {
            throw GeoSegmentError("\(url.path) is not a feature store (no \(manifestName)); create one with `geosam2 encode`")
        }
        return FeatureStore(url: url, manifest: try readManifest(at: manifestURL))
    }

    private static func readManifest(at manifestURL: URL) throws -> StoreManifest {
        let data = try rethrowing("cannot read \(manifestURL.path)") { try Data(contentsOf: manifestURL) }
        return try StoreManifest.decode(data, from: manifestURL.path)
    }

    /// The manifest as it is on disk now (another process may have rewritten it), nil when it
    /// cannot be read.
    private func manifestOnDisk() -> StoreManifest? {
        try? Self.readManifest(at: url.appendingPathComponent(Self.manifestName))
    }

    /// Whether a directory holds a feature store.
    public static func exists(at url: URL) -> Bool {
        FileManager.default.fileExists(atPath: url.appendingPathComponent(manifestName).path)
    }

    var tilesURL: URL { url.appendingPathComponent(Self.tilesDirectory, isDirectory: true) }

    public func featuresURL(_ tile: StoreManifest.TileEntry) -> URL { tilesURL.appendingPathComponent("\(tile.id).safetensors") }
    func emptyMarkerURL(_ tile: StoreManifest.TileEntry) -> URL { tilesURL.appendingPathComponent("\(tile.id).empty") }

    /// The state of a tile, from its files.
    public func state(of tile: StoreManifest.TileEntry) -> TileState {
        let fm = FileManager.default
        if fm.fileExists(atPath: featuresURL(tile).path) { return .done }
        if fm.fileExists(atPath: emptyMarkerURL(tile).path) { return .empty }
        return .pending
    }

    /// The entry of tile `id`, at any level.
    public func tile(id: String) -> StoreManifest.TileEntry? { manifest.allTiles.first { $0.id == id } }

    /// Loads a tile's features as the SAM2 decoder takes them (a 1024×1024 image, tile pixels).
    public func loadFeatures(_ tile: StoreManifest.TileEntry) throws -> ImageFeatures {
        try withTileFile(tile) { archive, size in
            try ImageFeatures(
                imageEmbedding: try FeatureDType.decode(name: Self.imageEmbeddingName, from: archive),
                highResolutionS0: try FeatureDType.decode(name: Self.highResolutionNames[0], from: archive),
                highResolutionS1: try FeatureDType.decode(name: Self.highResolutionNames[1], from: archive),
                originalWidth: size, originalHeight: size)
        }
    }

    /// Opens an encoded tile's file, checks its checksum and that it belongs to this store's
    /// checkpoint, and passes it with the tile size to `body`; errors name the tile.
    private func withTileFile<T>(_ tile: StoreManifest.TileEntry, _ body: (SafetensorsFile, Int) throws -> T) throws -> T {
        let file = featuresURL(tile)
        guard FileManager.default.fileExists(atPath: file.path) else {
            throw GeoSegmentError("tile \(tile.id) of \(url.path) is \(state(of: tile).rawValue), not encoded")
        }
        let archive: SafetensorsFile
        do {
            archive = try SafetensorsFile(contentsOf: file)
        } catch {
            throw GeoSegmentError("tile \(tile.id) is corrupt: \(error); run `geosam2 verify --repair`")
        }
        do {
            _ = try checksumCovers(checksumStatus(archive), file: "it")
        } catch {
            throw GeoSegmentError("tile \(tile.id) is corrupt: \(error); run `geosam2 verify --repair`")
        }
        return try rethrowing("tile \(tile.id)") {
            if let owner = archive.metadata["checkpoint_sha256"], owner != manifest.model.checkpointSHA256 {
                throw GeoSegmentError("\(file.lastPathComponent) was encoded with another checkpoint than the store's")
            }
            if let window = archive.metadata["window"], window != tile.windowText {
                throw GeoSegmentError("\(file.lastPathComponent) holds window \(window), not the manifest's \(tile.windowText); run `geosam2 verify --repair`")
            }
            return try body(archive, manifest.encoding.tileSize)
        }
    }

    /// What the checksum of a tile file says (the marker is looked for in its header).
    func checksumStatus(_ archive: SafetensorsFile) -> ContentChecksum.Status {
        archive.withFileBytes { ContentChecksum.check($0, searchLimit: archive.headerEnd) }
    }

    /// Whether a checksum covered a file of this store (false: a file from before checksums, in a
    /// store that does not require them); throws the reason, naming the file as `file`, when its
    /// bytes cannot be trusted.
    func checksumCovers(_ status: ContentChecksum.Status, file: String) throws -> Bool {
        switch status {
        case .valid: return true
        case .missing where manifest.tileChecksum == nil: return false
        case .missing: throw GeoSegmentError("\(file) carries no checksum (the store's tiles all have one)")
        case .mismatch(let stored, let computed): throw GeoSegmentError("CRC-32C \(computed) does not match the \(stored) \(file) was written with")
        }
    }

    /// A tile ready for the decoder and which pixels of its window are valid (nil: all), from
    /// one read of its file.
    public func loadTile(_ tile: StoreManifest.TileEntry, for model: SAM2Model) throws -> (features: PreparedFeatures, validity: [Bool]?) {
        try withTileFile(tile) { archive, size in
            let features = try model.prepare(
                channelsLastImageEmbedding: try FeatureDType.decodeChannelsLast(name: Self.imageEmbeddingName, from: archive),
                highResolutionS0: try FeatureDType.decodeChannelsLast(name: Self.highResolutionNames[0], from: archive),
                highResolutionS1: try FeatureDType.decodeChannelsLast(name: Self.highResolutionNames[1], from: archive),
                originalWidth: size, originalHeight: size)
            return (features, try validity(in: archive, of: tile))
        }
    }

    /// Which pixels of the tile's raster window are valid (row-major, `width × height` of the
    /// window); nil when all are.
    public func loadValidity(_ tile: StoreManifest.TileEntry) throws -> [Bool]? {
        try withTileFile(tile) { archive, _ in try validity(in: archive, of: tile) }
    }

    private func validity(in archive: SafetensorsFile, of tile: StoreManifest.TileEntry) throws -> [Bool]? {
        guard archive.info(Self.validMaskName) != nil else { return nil }
        let packed = try archive.tensor(named: Self.validMaskName)
        let (width, height) = (tile.window[2], tile.window[3])
        let rowBytes = (width + 7) / 8
        guard packed.shape == [height, rowBytes] else {
            throw GeoSegmentError("\(Self.validMaskName) has shape \(packed.shape), expected \([height, rowBytes])")
        }
        var valid = [Bool](repeating: false, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                valid[y * width + x] = (Int(packed[flat: y * rowBytes + x / 8]) >> (7 - x % 8)) & 1 == 1
            }
        }
        return valid
    }

    // MARK: Writing

    /// Creates the store directory and writes its manifest (atomically).
    static func create(at url: URL, manifest: StoreManifest) throws -> FeatureStore {
        let store = FeatureStore(url: url, manifest: manifest)
        try rethrowing("cannot create feature store \(url.path)") {
            try FileManager.default.createDirectory(at: store.tilesURL, withIntermediateDirectories: true)
        }
        try store.writeManifest(manifest)
        return store
    }

    /// Replaces the manifest (a store gaining levels) and writes it.
    func replaceManifest(_ new: StoreManifest) throws {
        try lock.withLock {
            try writeManifest(new)
            current = new
        }
    }

    private func writeManifest(_ manifest: StoreManifest) throws {
        try Self.atomicWrite(try manifest.encoded(), to: url.appendingPathComponent(Self.manifestName))
    }

    /// Name of the packed validity mask of a tile with nodata, NaN or masked pixels: `[height,
    /// ceil(width/8)]` bytes, one bit per pixel of the tile's raster window, most significant bit
    /// first (`numpy.packbits`); 1 = valid. Absent when every pixel is valid.
    public static let validMaskName = "valid_mask"

    /// Stores a tile's features, and which pixels of its window are valid when not all are.
    func writeFeatures(_ features: ImageFeatures, validity: [Bool]?, for tile: StoreManifest.TileEntry) throws {
        let dtype = FeatureDType(rawValue: manifest.encoding.featureDType) ?? .q16z
        let metadata = [
            "format": Self.tileFormat, "tile": tile.id,
            "checkpoint_sha256": manifest.model.checkpointSHA256,
            "window": tile.windowText,
            "geotransform": tile.geoTransformText,
            ContentChecksum.key: ContentChecksum.placeholder,
        ]
        let data = try rethrowing("cannot encode tile \(tile.id)") {
            var entries = try dtype.entries(name: Self.imageEmbeddingName, map: features.imageEmbedding)
                + dtype.entries(name: Self.highResolutionNames[0], map: features.highResolutionS0)
                + dtype.entries(name: Self.highResolutionNames[1], map: features.highResolutionS1)
            if let validity {
                let (width, height) = (tile.window[2], tile.window[3])
                let rowBytes = (width + 7) / 8
                var packed = [Float](repeating: 0, count: height * rowBytes)
                for y in 0..<height {
                    for x in 0..<width where validity[y * width + x] {
                        packed[y * rowBytes + x / 8] += Float(1 << (7 - x % 8))
                    }
                }
                entries.append(.init(name: Self.validMaskName, tensor: Tensor(shape: [height, rowBytes], scalars: packed), dtype: .uint8))
            }
            var data = try SafetensorsWriter.data(entries: entries, metadata: metadata)
            let headerEnd = 8 + Int(data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self).littleEndian })
            try ContentChecksum.seal(&data, searchLimit: headerEnd)
            return data
        }
        try Self.atomicWrite(data, to: featuresURL(tile))
    }

    /// Records a tile without valid pixels.
    func markEmpty(_ tile: StoreManifest.TileEntry) throws {
        var data = Data("{\"\(ContentChecksum.key)\":\"\(ContentChecksum.placeholder)\",\"reason\":\"no valid pixels\",\"tile\":\"\(tile.id)\"}\n".utf8)
        try ContentChecksum.seal(&data, searchLimit: data.count)
        try Self.atomicWrite(data, to: emptyMarkerURL(tile))
    }

    /// Once every tile is done or empty, records the states in the manifest. Returns whether the
    /// store is complete.
    @discardableResult
    public func finalizeIfComplete() throws -> Bool {
        try lock.withLock {
            // Another process may have changed the manifest since it was read (`encode --levels`
            // adding levels): never write an older one over it.
            if let onDisk = manifestOnDisk(), !current.describesSameStore(as: onDisk) { return false }
            var updated = current
            updated.updateTiles { $0.state = state(of: $0) }
            let complete = updated.allTiles.allSatisfy { $0.state != .pending }
            guard complete else { return false }
            updated.complete = true
            if updated != current {
                try writeManifest(updated)
                current = updated
            }
            return true
        }
    }

    /// Writes `data` to a temporary file beside `destination`, flushes it to the disk, renames it
    /// into place and flushes the directory: after a crash or a power cut the destination holds
    /// the old content or the new, never a torn file. On failure (a full disk) the temporary file
    /// is removed and the error is errno's own words.
    static func atomicWrite(_ data: Data, to destination: URL) throws {
        let directory = destination.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(destination.lastPathComponent).\(UUID().uuidString).tmp")
        func failure() -> GeoSegmentError {
            let reason = String(cString: strerror(errno))  // before unlink can change errno
            unlink(temporary.path)
            return GeoSegmentError("cannot write \(destination.path): \(reason)")
        }
        let fd = Glibc.open(temporary.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure() }
        let written: Bool = data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
        guard written, fsync(fd) == 0 else {
            let error = failure()
            close(fd)
            throw error
        }
        guard close(fd) == 0 else { throw failure() }
        guard rename(temporary.path, destination.path) == 0 else { throw failure() }
        let directoryFD = Glibc.open(directory.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            _ = fsync(directoryFD)
            close(directoryFD)
        }
    }

    /// The precision the store's tiles are encoded in, refusing one this CPU cannot run (a bf16
    /// store resumed or encoded on demand on a CPU without AVX512_BF16, an int16 one on a CPU
    /// without AVX2).
    public func precision() throws -> EncoderPrecision {
        let precision = manifest.model.precision
        guard precision.isAvailable else {
            throw GeoSegmentError("\(url.path) is encoded in \(precision.rawValue), which needs \(precision.requirement), which this one is not (encode it anew with --precision auto --force)")
        }
        return precision
    }

    /// Removes temporary files a killed run left behind.
    func removeLeftovers(olderThan age: TimeInterval = 600) {
        // Only old ones: a younger one may be another process's write in progress (a shard, or a
        // server encoding on demand); a tile takes seconds to write, not minutes.
        let fm = FileManager.default
        let cutoff = Date().addingTimeInterval(-age)
        for dir in [url, tilesURL] {
            for name in (try? fm.contentsOfDirectory(atPath: dir.path)) ?? [] where name.hasPrefix(".") && name.hasSuffix(".tmp") {
                let file = dir.appendingPathComponent(name)
                let modified = (try? fm.attributesOfItem(atPath: file.path))?[.modificationDate] as? Date
                if (modified ?? .distantPast) < cutoff { try? fm.removeItem(at: file) }
            }
        }
    }

    /// An advisory lock on the store's directory held by a process that writes tiles: shared by
    /// `encode` runs and servers encoding on demand (any number may write at once: tiles are
    /// written atomically, and the same tile twice gives the same bytes), exclusive for
    /// `encode --force`, which removes the tiles. Released when the value is freed (or the
    /// process ends).
    public final class WriterLock: @unchecked Sendable {
        // @unchecked: the descriptor is only read, and closed once in deinit.
        let descriptor: Int32
        init(descriptor: Int32) { self.descriptor = descriptor }
        deinit { if descriptor >= 0 { close(descriptor) } }
    }

    static let lockName = ".writers.lock"

    /// Takes the writers' lock (shared, or exclusive for replacing the tiles) without waiting,
    /// then checks that the manifest on disk is still the one this store was opened with (an
    /// `encode --force` may have replaced it in between). On a read-only store, or a file system
    /// without `flock`, there is nothing to guard: the lock is a no-op.
    public func lockForWriting(exclusive: Bool = false) throws -> WriterLock {
        let path = url.appendingPathComponent(Self.lockName).path
        var fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        if fd < 0, errno == EROFS || errno == EACCES { fd = Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        guard fd >= 0 else {
            if errno == EROFS || errno == EACCES || errno == ENOENT { return WriterLock(descriptor: -1) }
            throw GeoSegmentError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        if flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            let code = errno
            close(fd)
            if code == ENOLCK || code == EOPNOTSUPP { return WriterLock(descriptor: -1) }
            throw GeoSegmentError(code == EWOULDBLOCK
                ? (exclusive ? "another geosam2 (encode or serve) is writing \(url.path); stop it before replacing its tiles"
                             : "\(url.path) is being replaced by `encode --force`")
                : "cannot lock \(path): \(String(cString: strerror(code)))")
        }
        let lock = WriterLock(descriptor: fd)
        if let onDisk = manifestOnDisk(), !manifest.describesSameStore(as: onDisk, orMoreLevels: true) {
            throw GeoSegmentError("\(url.path) was replaced while it was being opened (`encode --force`?); run again")
        }
        return lock
    }
}
