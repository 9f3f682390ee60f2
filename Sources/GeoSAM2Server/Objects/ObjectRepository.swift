import Foundation
import GeoIO
import GeoSegment

/// The committed objects: the output vector file (a GeoPackage), written at each commit in one
/// transaction and read back on every request, so a restarted server shows what earlier runs saved.
///
/// An actor: commits, undos and exports run one at a time.
public actor ObjectRepository {
    public let path: String
    public let layer: String?
    /// The store's CRS (objects are written and shown in it).
    let wkt: String?
    let epsg: Int?
    /// What every record says about its origin.
    let source: String
    let model: String

    public init(path: String, layer: String? = nil, store: FeatureStore) {
        self.path = path
        self.layer = layer
        let m = store.manifest
        wkt = m.source.crsWKT
        epsg = m.source.epsg
        source = m.source.path
        model = "\(m.model.preset ?? "custom") sha256:\(m.model.checkpointSHA256)"
    }

    func spatialReference() throws -> SpatialReference? {
        try wkt.map { try SpatialReference(wkt: $0) }
    }

    /// A record for a segmentation result (id 0 for a preview that is not saved).
    nonisolated func record(_ result: SegmentedObject, objectID: Int) -> ObjectRecord {
        ObjectRecord(objectID: objectID, result: result, source: source, model: model)
    }

    /// Saves an object under the next free id; returns the record and its features.
    public func commit(_ result: SegmentedObject) throws -> (record: ObjectRecord, features: [Feature]) {
        guard !result.polygons.isEmpty else {
            throw GeoSAM2ServerError.unprocessable("the mask is empty after filtering: nothing to save")
        }
        let srs = try spatialReference()
        let id = try VectorExporter.nextObjectID(in: path, layer: layer)
        let record = record(result, objectID: id)
        try VectorExporter.append([record], to: path, layer: layer, srs: srs)
        return (record, try VectorExporter.features(of: record, srs: srs))
    }

    /// Every saved feature, with geometries in the store's CRS.
    public func features() throws -> [Feature] {
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
        var features = try target.features()
        if let layerSRS = target.spatialReference, let storeSRS = try spatialReference(), !layerSRS.isSame(storeSRS) {
            let transformation = try CoordinateTransformation(from: layerSRS, to: storeSRS)
            for i in features.indices {
                features[i].geometry = try features[i].geometry.map { try $0.transformed(with: transformation) }
            }
        }
        return features
    }

    /// The features of one object; empty when it does not exist.
    public func features(objectID: Int) throws -> [Feature] {
        try features().filter { $0.attributes["object_id"]?.intValue == objectID }
    }

    /// Object ids in the file, ascending.
    public func objectIDs() throws -> [Int] {
        Array(Set(try features().compactMap { $0.attributes["object_id"]?.intValue })).sorted()
    }

    /// Deletes an object; returns how many features were removed (0: no such object).
    public func delete(objectID: Int) throws -> Int {
        try VectorExporter.delete(objectID: objectID, from: path, layer: layer)
    }

    /// Deletes the object with the highest id (the last saved); returns its id and feature count,
    /// nil when there is none.
    public func deleteLast() throws -> (objectID: Int, features: Int)? {
        guard let last = try objectIDs().last else { return nil }
        return (last, try delete(objectID: last))
    }

    /// The output GeoPackage's bytes (an empty layer when nothing is saved yet).
    public func geoPackage() throws -> Data {
        if FileManager.default.fileExists(atPath: path) {
            return try Data(contentsOf: URL(fileURLWithPath: path))
        }
        return try withScratchFile(named: "objects.gpkg") { file in
            try {
                let dataset = try VectorDataset.create(driver: "GPKG", path: file)
                try dataset.createLayer(name: layer ?? VectorExporter.defaultLayer, srs: try spatialReference(),
                                        geometryType: .polygon, fields: VectorExporter.fields)
                try dataset.flush()
            }()
            return try Data(contentsOf: URL(fileURLWithPath: file))
        }
    }

    /// The objects as GeoJSON: RFC 7946 (WGS 84 longitude/latitude) when the store has a CRS,
    /// else in the store's pixel coordinates.
    public func geoJSON() throws -> Data {
        let features = try features()
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

    private func withScratchFile<T>(named name: String, _ body: (String) throws -> T) throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("geosam2-export-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        return try body(directory.appendingPathComponent(name).path)
    }
}
