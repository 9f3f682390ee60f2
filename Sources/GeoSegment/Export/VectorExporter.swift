import Foundation
import GeoIO

/// Vector formats the tool writes.
public enum VectorFormat: String, Sendable, CaseIterable {
    case geopackage = "GPKG", shapefile = "ESRI Shapefile", geojson = "GeoJSON", flatgeobuf = "FlatGeobuf"

    /// The format a file name implies (GeoPackage for unknown extensions).
    public init(path: String) {
        switch URL(fileURLWithPath: path).pathExtension.lowercased() {
        case "shp": self = .shapefile
        case "geojson", "json": self = .geojson
        case "fgb": self = .flatgeobuf
        default: self = .geopackage
        }
    }

    public var driver: String { rawValue }

    /// The sidecar files that make up one dataset (Shapefile's .shx, .dbf, …).
    func files(of path: String) -> [String] {
        guard self == .shapefile else { return [path] }
        let stem = String(path.dropLast(URL(fileURLWithPath: path).pathExtension.count + 1))
        return ["shp", "shx", "dbf", "prj", "cpg"].map { "\(stem).\($0)" }
    }
}

/// One segmented object with what is recorded about it.
public struct ObjectRecord: Sendable {
    public var objectID: Int
    public var result: SegmentedObject
    /// Number of foreground and background points, and whether a box was given.
    public var foregroundCount: Int
    public var backgroundCount: Int
    public var hasBox: Bool
    /// The raster the store was made from.
    public var source: String
    /// Preset and checkpoint SHA-256.
    public var model: String
    public var created: Date
    /// The user's class label (`building`, `field`, …); nil when none was given.
    public var className: String?

    public init(objectID: Int, result: SegmentedObject, source: String, model: String, created: Date = Date(), className: String? = nil) {
        self.objectID = objectID
        self.result = result
        foregroundCount = result.prompt.points.filter { $0.label == 1 }.count
        backgroundCount = result.prompt.points.filter { $0.label == 0 }.count
        hasBox = result.prompt.box != nil
        self.source = source
        self.model = model
        self.created = created
        self.className = className.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// Writes objects' polygons through OGR, appending without ever losing what a file held.
public enum VectorExporter {
    /// The attribute table (names fit Shapefile's 10 characters).
    public static let fields: [FieldDefinition] = [
        FieldDefinition("object_id", type: .integer), FieldDefinition("score", type: .real),
        FieldDefinition("area", type: .real), FieldDefinition("area_m2", type: .real), FieldDefinition("perimeter", type: .real),
        FieldDefinition("n_fg", type: .integer), FieldDefinition("n_bg", type: .integer), FieldDefinition("has_box", type: .integer),
        FieldDefinition("tile", type: .string), FieldDefinition("source", type: .string), FieldDefinition("model", type: .string),
        FieldDefinition("created", type: .string), FieldDefinition("prompts", type: .string),
        FieldDefinition("class", type: .string),
        FieldDefinition("level", type: .integer), FieldDefinition("tiles", type: .string), FieldDefinition("clipped", type: .integer),
        FieldDefinition("stability", type: .real),
    ]

    public static let defaultLayer = "objects"

    /// The features of an object, one per polygon, with geometries in `target` (the polygons'
    /// own CRS `srs` when nil).
    public static func features(of record: ObjectRecord, srs: SpatialReference?, target: SpatialReference? = nil) throws -> [Feature] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let prompts = String(decoding: try encoder.encode(record.result.prompt), as: UTF8.self)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        let created = formatter.string(from: record.created)
        var reprojection: CoordinateTransformation? = nil
        if let srs, let target, !srs.isSame(target) {
            reprojection = try rethrowing("cannot reproject to the output CRS") { try CoordinateTransformation(from: srs, to: target) }
        }
        return try record.result.polygons.map { polygon in
            let areaM2: FieldValue = try metricArea(polygon, srs: srs).map { .real($0) } ?? .null
            let geometry = try reprojection.map { t in try rethrowing { try polygon.transformed(with: t) } } ?? polygon
            return Feature(geometry: geometry, attributes: [
                "object_id": .integer(record.objectID), "score": .real(Double(record.result.score)),
                "area": .real(polygon.area), "area_m2": areaM2, "perimeter": .real(polygon.length),
                "n_fg": .integer(record.foregroundCount), "n_bg": .integer(record.backgroundCount),
                "has_box": .integer(record.hasBox ? 1 : 0), "tile": .string(record.result.tile),
                "source": .string(record.source), "model": .string(record.model),
                "created": .string(created), "prompts": .string(prompts),
                "class": record.className.map { .string($0) } ?? .null,
                "level": .integer(record.result.level), "tiles": .string(record.result.tiles.joined(separator: ",")),
                "clipped": .integer(record.result.clipped ? 1 : 0),
                "stability": record.result.stability.map { .real(Double($0)) } ?? .null,
            ])
        }
    }

    /// Area in square metres: projected CRSs scale by their unit; geographic ones are measured
    /// in a Lambert azimuthal equal-area projection centred on the polygon (exact to well under
    /// 0.1 % for objects of a tile's size). Nil without a CRS.
    static func metricArea(_ polygon: Geometry, srs: SpatialReference?) throws -> Double? {
        guard let srs else { return nil }
        if !srs.isGeographic {
            let metres = srs.linearUnits.metersPerUnit
            return polygon.area * metres * metres
        }
        if let geodesic = try? polygon.geodesicArea(in: srs) { return geodesic }
        guard let centre = polygon.centroid else { return nil }
        let laea = try rethrowing { try SpatialReference("+proj=laea +lat_0=\(centre.y) +lon_0=\(centre.x) +datum=WGS84 +units=m +no_defs") }
        let projected = try rethrowing { try polygon.transformed(with: try CoordinateTransformation(from: srs, to: laea)) }
        return projected.area
    }

    /// Appends the records to a layer (created with the tool's fields when missing) so that
    /// either all of them are saved or none, and what the file held before stays. The records
    /// keep the ids they carry; ``appendNew(_:to:layer:format:srs:)`` gives fresh ones.
    ///
    /// GeoPackage appends in one SQLite transaction. Formats without transactions are written to
    /// a copy that replaces the original only once complete. GeoJSON is written as RFC 7946
    /// (WGS 84 longitude/latitude).
    public static func append(_ records: [ObjectRecord], to path: String, layer: String? = nil,
                              format: VectorFormat? = nil, srs: SpatialReference?) throws {
        _ = try save(records, to: path, layer: layer, format: format, srs: srs, freshIDs: false)
    }

    /// Saves new objects under fresh ids, as ``append(_:to:layer:format:srs:)`` does, and returns
    /// them with the ids they were saved under. Ids only grow: in a GeoPackage the next id of each
    /// layer is kept in the table `gpkg_geosam2_object_ids` (a registered extension), updated in the same
    /// transaction as the objects, so neither a deleted object's id nor one of a failed save is
    /// ever given again, across restarts too. Other formats continue from the highest id present.
    public static func appendNew(_ records: [ObjectRecord], to path: String, layer: String? = nil,
                                 format: VectorFormat? = nil, srs: SpatialReference?) throws -> [ObjectRecord] {
        try save(records, to: path, layer: layer, format: format, srs: srs, freshIDs: true)
    }

    private static func save(_ records: [ObjectRecord], to path: String, layer: String?, format: VectorFormat?,
                             srs: SpatialReference?, freshIDs: Bool) throws -> [ObjectRecord] {
        let format = format ?? VectorFormat(path: path)
        var saved = records
        try modify(path: path, format: format) { dataset in
            let target = try targetLayer(in: dataset, name: layer, format: format, srs: srs)
            // A new RFC 7946 layer takes the store's CRS and reprojects on write; an existing layer
            // gets geometries in its own CRS.
            let layerSRS = target.spatialReference
            let add = {
                if freshIDs {
                    let first = try nextObjectID(dataset: dataset, layer: target, format: format)
                    for i in saved.indices { saved[i].objectID = first + i }
                    if format == .geopackage { try storeNextObjectID(first + saved.count, dataset: dataset, layer: target) }
                }
                let prepared = try saved.flatMap { try Self.features(of: $0, srs: srs, target: layerSRS) }
                for feature in prepared { _ = try target.add(feature) }
            }
            if format == .geopackage { try dataset.withTransaction(add) } else { try add() }
        }
        return saved
    }

    /// Writes a new file at `path` from records produced one at a time (so that they need not
    /// all be held), replacing whatever was there only once the file is complete: it is written
    /// beside `path` (in one transaction for a GeoPackage) and renamed over it.
    public static func writeNew(to path: String, layer: String? = nil, format: VectorFormat? = nil, srs: SpatialReference?,
                                _ produce: (_ add: (ObjectRecord) throws -> Void) throws -> Void) throws {
        _ = durableTransactions
        let format = format ?? VectorFormat(path: path)
        try replaceAtomically(path, format: format, removingStale: true) { copy in
            let dataset = try VectorDataset.create(driver: format.driver, path: copy)
            let target = try targetLayer(in: dataset, name: layer, format: format, srs: srs)
            let layerSRS = target.spatialReference
            func add(_ record: ObjectRecord) throws {
                for feature in try Self.features(of: record, srs: srs, target: layerSRS) { _ = try target.add(feature) }
            }
            if format == .geopackage { try dataset.withTransaction { try produce(add) } } else { try produce(add) }
            try dataset.flush()
        }
    }

    /// Deletes every feature of an object; returns how many were removed. A GeoPackage's id
    /// counter is brought up to date first (in the same transaction), so the id is not reused.
    @discardableResult
    public static func delete(objectID: Int, from path: String, layer: String? = nil, format: VectorFormat? = nil) throws -> Int {
        let format = format ?? VectorFormat(path: path)
        guard FileManager.default.fileExists(atPath: path) else { return 0 }
        var removed = 0
        try modify(path: path, format: format) { dataset in
            let target = try existingLayer(in: dataset, name: layer)
            guard target.fields.contains(where: { $0.name == "object_id" }) else { return }
            let fids = try target.features(where: "object_id = \(objectID)").compactMap(\.fid)
            guard !fids.isEmpty else { return }
            let remove = {
                if format == .geopackage {
                    try storeNextObjectID(try nextObjectID(dataset: dataset, layer: target, format: format), dataset: dataset, layer: target)
                }
                for fid in fids { try target.delete(fid: fid) }
            }
            if format == .geopackage { try dataset.withTransaction(remove) } else { try remove() }
            removed = fids.count
        }
        return removed
    }

    /// The table of a GeoPackage that keeps each layer's next object id. The `gpkg_` prefix (as
    /// GDAL's own `gpkg_ogr_contents`) keeps GDAL and QGIS from listing it as a layer.
    public static let objectIDTable = "gpkg_geosam2_object_ids"

    /// The next id for a layer: above every id it holds and, in a GeoPackage, never below the
    /// stored counter.
    static func nextObjectID(dataset: VectorDataset, layer: VectorLayer, format: VectorFormat) throws -> Int {
        guard format == .geopackage else {
            return (try layer.features().compactMap { $0.attributes["object_id"]?.intValue }.max() ?? 0) + 1
        }
        let highest = layer.fields.contains(where: { $0.name == "object_id" })
            ? try rethrowing { try dataset.executeSQL("SELECT MAX(object_id) FROM \(VectorDataset.sqlIdentifier(layer.name))") } : nil
        return max((highest ?? 0) + 1, try storedNextObjectID(dataset: dataset, layer: layer) ?? 1)
    }

    static func storedNextObjectID(dataset: VectorDataset, layer: VectorLayer) throws -> Int? {
        let exists = try rethrowing {
            try dataset.executeSQL("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = \(VectorDataset.sqlLiteral(objectIDTable))")
        }
        guard exists == 1 else { return nil }
        return try rethrowing {
            try dataset.executeSQL("SELECT next_id FROM \(objectIDTable) WHERE layer_name = \(VectorDataset.sqlLiteral(layer.name))")
        }
    }

    /// Records a layer's next id (inside the caller's transaction), creating the table and its
    /// `gpkg_extensions` registration on first use.
    static func storeNextObjectID(_ next: Int, dataset: VectorDataset, layer: VectorLayer) throws {
        try rethrowing("cannot record the next object id") {
            try dataset.executeSQL("CREATE TABLE IF NOT EXISTS \(objectIDTable) (layer_name TEXT PRIMARY KEY NOT NULL, next_id INTEGER NOT NULL)")
            try dataset.executeSQL("""
                CREATE TABLE IF NOT EXISTS gpkg_extensions (table_name TEXT, column_name TEXT, extension_name TEXT NOT NULL, \
                definition TEXT NOT NULL, scope TEXT NOT NULL, CONSTRAINT ge_tce UNIQUE (table_name, column_name, extension_name))
                """)
            try dataset.executeSQL("""
                INSERT INTO gpkg_extensions (table_name, column_name, extension_name, definition, scope) \
                SELECT '\(objectIDTable)', NULL, 'geosam2_object_ids', 'GeoSAM2 docs/store-format.md, section Object ids', 'read-write' \
                WHERE NOT EXISTS (SELECT 1 FROM gpkg_extensions WHERE extension_name = 'geosam2_object_ids')
                """)
            try dataset.executeSQL("INSERT OR REPLACE INTO \(objectIDTable) (layer_name, next_id) VALUES (\(VectorDataset.sqlLiteral(layer.name)), \(next))")
        }
    }

    /// Every feature of a layer (none when the file does not exist).
    public static func read(_ path: String, layer: String? = nil) throws -> [Feature] {
        guard FileManager.default.fileExists(atPath: path) else { return [] }
        return try rethrowing("\(path)") {
            let dataset = try VectorDataset.open(path)
            guard let target = try? existingLayer(in: dataset, name: layer) else { return [] }
            return try target.features()
        }
    }

    /// The id the next saved object of a layer gets (1 for a new file).
    public static func nextObjectID(in path: String, layer: String? = nil) throws -> Int {
        guard FileManager.default.fileExists(atPath: path) else { return 1 }
        return try rethrowing("\(path)") {
            let dataset = try VectorDataset.open(path)
            guard let target = try? existingLayer(in: dataset, name: layer) else { return 1 }
            return try nextObjectID(dataset: dataset, layer: target, format: VectorFormat(path: path))
        }
    }

    static func existingLayer(in dataset: VectorDataset, name: String?) throws -> VectorLayer {
        if let name { return try rethrowing { try dataset.layer(named: name) } }
        if let named = try? dataset.layer(named: defaultLayer) { return named }
        return try rethrowing { try dataset.layer(at: 0) }
    }

    static func targetLayer(in dataset: VectorDataset, name: String?, format: VectorFormat, srs: SpatialReference?) throws -> VectorLayer {
        let wanted = name ?? (format == .geopackage ? defaultLayer : nil)
        if let existing = try? existingLayer(in: dataset, name: wanted) {
            let names = Set(existing.fields.map(\.name))
            for field in fields where !names.contains(field.name) { try rethrowing { try existing.createField(field) } }
            return existing
        }
        // GDAL's RFC 7946 writer reprojects from the layer's CRS to WGS 84 longitude/latitude itself.
        let layerSRS = srs
        let options = format == .geojson ? ["RFC7946=YES"] : []
        let layerName = wanted ?? URL(fileURLWithPath: dataset.path).deletingPathExtension().lastPathComponent
        return try rethrowing("cannot create layer \(layerName)") {
            try dataset.createLayer(name: layerName, srs: layerSRS, geometryType: .polygon, fields: fields, options: options)
        }
    }

    /// A GeoPackage commit reaches the disk before it is acknowledged (SQLite's `synchronous=FULL`,
    /// whatever the build's default), so an acknowledged save survives a power cut.
    static let durableTransactions: Void = GDAL.setConfigOption("OGR_SQLITE_SYNCHRONOUS", "FULL")

    /// Opens (or creates) the dataset for update and runs `body` on it: in place for GeoPackage,
    /// on a copy renamed over the original afterwards for the others.
    static func modify(path: String, format: VectorFormat, _ body: (VectorDataset) throws -> Void) throws {
        _ = durableTransactions
        let fm = FileManager.default
        let exists = fm.fileExists(atPath: path)
        if format == .geopackage {
            try rethrowing("\(path)") {
                let dataset = exists ? try VectorDataset.open(path, access: .update) : try VectorDataset.create(driver: format.driver, path: path)
                try body(dataset)
                try dataset.flush()
            }
            return
        }
        try replaceAtomically(path, format: format, removingStale: false) { copy in
            for (original, copied) in zip(format.files(of: path), format.files(of: copy)) where fm.fileExists(atPath: original) {
                try rethrowing("cannot copy \(original)") { try fm.copyItem(atPath: original, toPath: copied) }
            }
            let dataset = exists ? try VectorDataset.open(copy, access: .update) : try VectorDataset.create(driver: format.driver, path: copy)
            try body(dataset)
            try dataset.flush()
        }
    }

    /// Writes a dataset at a scratch path beside `path` (`write` gets that path and must leave
    /// the dataset closed), then moves each of its files over the original, one atomic rename
    /// each; the scratch directory goes whatever happens.
    /// - Parameter removingStale: also remove the originals the new dataset lacks (a rewrite).
    static func replaceAtomically(_ path: String, format: VectorFormat, removingStale: Bool, _ write: (String) throws -> Void) throws {
        let fm = FileManager.default
        let url = URL(fileURLWithPath: path)
        let scratch = url.deletingLastPathComponent().appendingPathComponent(".\(UUID().uuidString)", isDirectory: true)
        try rethrowing("cannot write beside \(path)") { try fm.createDirectory(at: scratch, withIntermediateDirectories: true) }
        defer { try? fm.removeItem(at: scratch) }
        let copy = scratch.appendingPathComponent(url.lastPathComponent).path
        // `write` runs in a scope of its own, so GDAL closes (and finishes writing) the dataset before it is moved.
        try rethrowing("\(path)") { try write(copy) }
        for (original, written) in zip(format.files(of: path), format.files(of: copy)) {
            if fm.fileExists(atPath: written) {
                if rename(written, original) != 0 {
                    throw GeoSegmentError("cannot replace \(original): \(String(cString: strerror(errno)))")
                }
            } else if removingStale, fm.fileExists(atPath: original) {
                try rethrowing("cannot remove \(original)") { try fm.removeItem(atPath: original) }
            }
        }
    }

    /// Writes a mask as a single-band GeoTIFF (1 = object) on its grid.
    public static func writeMask(_ object: SegmentedObject, to path: String, srs: SpatialReference?) throws {
        try rethrowing("cannot write mask \(path)") {
            let ds = try RasterDataset.create(driver: "GTiff", path: path, width: object.maskWidth, height: object.maskHeight,
                                              bandCount: 1, dataType: .byte, options: ["COMPRESS=DEFLATE"])
            try ds.setGeoTransform(object.maskTransform)
            if let srs { try ds.setSpatialReference(srs) }
            try ds.band(1).write(values: object.mask)
            try ds.flush()
        }
    }
}
