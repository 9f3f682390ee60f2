import Dispatch
import Foundation
import GeoIO
import GeoSegment

/// The committed objects: the output vector file (a GeoPackage), written at each commit in one
/// transaction, so a restarted server shows what earlier runs saved.
///
/// Every GDAL call on the file runs on one serial queue of its own, off Swift's cooperative pool:
/// commits, undos and exports run one at a time and never hold up the threads that serve previews
/// and map tiles. Listings are answered from the features last read, re-read only when the file
/// changed (its size, time or inode), so they cost no GDAL work between saves.
public final class ObjectRepository: Sendable {
    public let path: String
    public let layer: String?
    /// The store's CRS (objects are written and shown in it).
    let wkt: String?
    let epsg: Int?
    /// What every record says about its origin.
    let source: String
    let model: String

    private let queue = DispatchQueue(label: "geosam2.objects")
    /// Touched only on `queue`.
    private let cache = Cache()

    private final class Cache: @unchecked Sendable {
        var stamp: FileStamp?
        var features: [Feature] = []
        /// Each feature's GeoJSON, serialized once (`features[i]` → `fragments[i]` when present).
        var fragments: [String] = []
        /// The RFC 7946 export of the features at `stamp`, once asked for.
        var geoJSONExport: Data?
    }

    /// What identifies one version of the file.
    struct FileStamp: Equatable {
        var size: Int64, modified: Int64, inode: UInt64

        init?(path: String) {
            var st = stat()
            guard stat(path, &st) == 0 else { return nil }
            size = Int64(st.st_size)
            modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
            inode = UInt64(st.st_ino)
        }
    }

    public init(path: String, layer: String? = nil, store: FeatureStore) {
        self.path = path
        self.layer = layer
        let m = store.manifest
        wkt = m.source.crsWKT
        epsg = m.source.epsg
        source = m.source.path
        model = "\(m.model.preset ?? "custom") sha256:\(m.model.checkpointSHA256)"
    }

    /// Runs `body` on the repository's queue.
    private func serially<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            queue.async { continuation.resume(with: Result { try body() }) }
        }
    }

    func spatialReference() throws -> SpatialReference? {
        try wkt.map { try SpatialReference(wkt: $0) }
    }

    /// A record for a segmentation result (id 0 for a preview that is not saved).
    func record(_ result: SegmentedObject, objectID: Int) -> ObjectRecord {
        ObjectRecord(objectID: objectID, result: result, source: source, model: model)
    }

    /// Saves an object under the next id (ids only grow, see `VectorExporter.appendNew`);
    /// returns the record and its features.
    public func commit(_ result: SegmentedObject, className: String? = nil) async throws -> (record: ObjectRecord, features: [Feature]) {
        guard !result.polygons.isEmpty else {
            throw GeoSAM2ServerError.unprocessable("the mask is empty after filtering: nothing to save")
        }
        var draft = record(result, objectID: 0)
        draft.className = className
        let record = draft
        return try await serially { [self] in
            let srs = try spatialReference()
            let upToDate = isCacheCurrent()
            let saved = try VectorExporter.appendNew([record], to: path, layer: layer, srs: srs)
            guard let first = saved.first else { throw GeoSAM2ServerError.unprocessable("nothing was saved") }
            // Read back only what this save added, when the cache held the file as it was before.
            let since = cache.features.compactMap(\.fid).max() ?? 0
            if upToDate, let added = try? readFeatures(where: "fid > \(since)") {
                cache.features += added
                cache.stamp = FileStamp(path: path)
                cache.geoJSONExport = nil
            } else {
                cache.stamp = nil
            }
            return (first, try VectorExporter.features(of: first, srs: srs))
        }
    }

    /// Whether the cache holds the file as it is now.
    private func isCacheCurrent() -> Bool {
        guard let stamp = cache.stamp else { return false }
        return FileStamp(path: path) == stamp
    }

    /// After deleting `objectID` from the file: drops it from the cache if the cache held the file
    /// as it was before, else forgets the cache.
    private func forget(objectID: Int, upToDate: Bool) {
        guard upToDate else {
            cache.stamp = nil
            return
        }
        var kept: [Feature] = [], fragments: [String] = []
        for (i, feature) in cache.features.enumerated() where feature.attributes["object_id"]?.intValue != objectID {
            kept.append(feature)
            if i < cache.fragments.count { fragments.append(cache.fragments[i]) }
        }
        cache.features = kept
        cache.fragments = fragments.count == kept.count ? fragments : []
        cache.stamp = FileStamp(path: path)
        cache.geoJSONExport = nil
    }

    /// The saved features as GeoJSON fragments (each serialized once), how many objects there
    /// are and the next id: what `GET /api/objects` lists.
    func listing() async throws -> (fragments: [String], objects: Int, nextObjectID: Int) {
        try await serially { [self] in
            let features = try currentFeatures()
            if cache.fragments.count > features.count { cache.fragments = [] }
            for feature in features.dropFirst(cache.fragments.count) {
                cache.fragments.append(GeoJSON.feature(feature).serialized())
            }
            let ids = Set(features.compactMap { $0.attributes["object_id"]?.intValue })
            return (cache.fragments, ids.count, try VectorExporter.nextObjectID(in: path, layer: layer))
        }
    }

    /// Every saved feature, with geometries in the store's CRS.
    public func features() async throws -> [Feature] {
        try await serially { [self] in try currentFeatures() }
    }

    /// The features as the file holds them now (on `queue`).
    private func currentFeatures() throws -> [Feature] {
        let stamp = FileStamp(path: path)
        if let stamp, stamp == cache.stamp { return cache.features }
        let features = try readFeatures()
        // Stamped before reading: a change during the read only causes one more read later.
        cache.stamp = stamp
        cache.features = features
        cache.fragments = []
        cache.geoJSONExport = nil
        return features
    }

    /// The layer's features (those matching `clause`, an OGR attribute filter, when given), in
    /// the store's CRS.
    private func readFeatures(where clause: String? = nil) throws -> [Feature] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        let dataset = try VectorDataset.open(path)
        let target: VectorLayer
        if let layer {
            guard let named = try? dataset.layer(named: layer) else { return [] }
            target = named
        } else if let named = try? dataset.layer(named: VectorExporter.defaultLayer) {
            target = named
        } else {
            guard dataset.layerCount > 0 else { return [] }
            target = try dataset.layer(at: 0)
        }
        var features = try clause.map { try target.features(where: $0) } ?? target.features()
        if let layerSRS = target.spatialReference, let storeSRS = try spatialReference(), !layerSRS.isSame(storeSRS) {
            let transformation = try CoordinateTransformation(from: layerSRS, to: storeSRS)
            for i in features.indices {
                features[i].geometry = try features[i].geometry.map { try $0.transformed(with: transformation) }
            }
        }
        return features
    }

    /// The features of one object; empty when it does not exist.
    public func features(objectID: Int) async throws -> [Feature] {
        try await features().filter { $0.attributes["object_id"]?.intValue == objectID }
    }

    /// Deletes an object; returns how many features were removed (0: no such object).
    public func delete(objectID: Int) async throws -> Int {
        try await serially { [self] in
            let upToDate = isCacheCurrent()
            let removed = try VectorExporter.delete(objectID: objectID, from: path, layer: layer)
            forget(objectID: objectID, upToDate: upToDate)
            return removed
        }
    }

    /// Deletes the object with the highest id (the last saved); returns its id and feature count,
    /// nil when there is none.
    public func deleteLast() async throws -> (objectID: Int, features: Int)? {
        try await serially { [self] in
            guard let last = try currentFeatures().compactMap({ $0.attributes["object_id"]?.intValue }).max() else { return nil }
            let removed = try VectorExporter.delete(objectID: last, from: path, layer: layer)
            forget(objectID: last, upToDate: true)  // currentFeatures() just brought the cache up to date
            return (last, removed)
        }
    }

    /// The output GeoPackage's bytes (an empty layer when nothing is saved yet), read between
    /// commits, so never a half-written file.
    public func geoPackage() async throws -> Data {
        let existing: Data? = try await serially { [self] in
            FileManager.default.fileExists(atPath: path) ? try Data(contentsOf: URL(fileURLWithPath: path)) : nil
        }
        if let existing { return existing }
        return try await offload { [self] in
            try withScratchFile(named: "objects.gpkg") { file in
                try {
                    let dataset = try VectorDataset.create(driver: "GPKG", path: file)
                    try dataset.createLayer(name: layer ?? VectorExporter.defaultLayer, srs: try spatialReference(),
                                            geometryType: .polygon, fields: VectorExporter.fields)
                    try dataset.flush()
                }()
                return try Data(contentsOf: URL(fileURLWithPath: file))
            }
        }
    }

    /// The objects as GeoJSON: RFC 7946 (WGS 84 longitude/latitude) when the store has a CRS,
    /// else in the store's pixel coordinates. Written from a snapshot of the features, off the
    /// repository's queue, so that saves do not wait for it.
    public func geoJSON() async throws -> Data {
        // The snapshot and the file version it belongs to, taken together: a save in between must
        // not get this export kept as its own.
        let (features, cached, stamp) = try await serially { [self] in (try currentFeatures(), cache.geoJSONExport, cache.stamp) }
        if let cached { return cached }
        let data = try await offload { [self] in
            let srs = try spatialReference()
            return try withScratchFile(named: "objects.geojson") { file in
                try {
                    let dataset = try VectorDataset.create(driver: "GeoJSON", path: file)
                    let out = try dataset.createLayer(name: "objects", srs: srs, geometryType: .polygon, fields: VectorExporter.fields,
                                                      options: srs == nil ? [] : ["RFC7946=YES"])
                    for var feature in features {
                        feature.fid = nil
                        _ = try out.add(feature)
                    }
                    try dataset.flush()
                }()
                return try Data(contentsOf: URL(fileURLWithPath: file))
            }
        }
        // Kept for the next download while the file stays as it was.
        try await serially { [self] in
            if cache.stamp == stamp { cache.geoJSONExport = data }
        }
        return data
    }

    private func withScratchFile<T>(named name: String, _ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("geosam2-export-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        return try body(directory.appendingPathComponent(name).path)
    }
}
