import CGDAL

/// A vector data source (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, …; owns a `GDALDatasetH`
/// opened in vector mode, closed — and thereby written — in `deinit`).
///
/// Not `Sendable`: a GDAL dataset must be used from one task at a time.
public final class VectorDataset {
    let handle: GDALDatasetH
    /// The path the dataset was opened or created with.
    public let path: String

    private init(handle: GDALDatasetH, path: String) {
        self.handle = handle
        self.path = path
    }

    deinit {
        withQuietGDAL { discardResult(GDALClose(handle)) }
    }

    var label: String { path.isEmpty ? "\(driverName) dataset" : fileName(path) }

    /// Opens an existing vector dataset (any GDAL path, including `/vsizip/…`).
    public static func open(_ path: String, access: DatasetAccess = .readOnly,
                            allowedDrivers: [String]? = nil, openOptions: [String] = []) throws -> VectorDataset {
        let flags = UInt32(GDAL_OF_VECTOR | GDAL_OF_VERBOSE_ERROR)
            | UInt32(access == .update ? GDAL_OF_UPDATE : GDAL_OF_READONLY)
        let drivers = StringList(allowedDrivers ?? [])
        let options = StringList(openOptions)
        let handle = withQuietGDAL {
            options.withConstCSL { optionList in
                drivers.withConstCSL { driverList in
                    GDALOpenEx(path, flags, allowedDrivers == nil ? nil : driverList, optionList, nil)
                }
            }
        }
        guard let handle else { throw GeoIOError.gdal("cannot open vector dataset", path: path) }
        return VectorDataset(handle: handle, path: path)
    }

    /// Creates a new, empty vector dataset.
    ///
    /// - Parameters:
    ///   - driver: e.g. `"GPKG"`, `"ESRI Shapefile"`, `"GeoJSON"`, `"FlatGeobuf"`, `"Memory"`.
    ///   - path: the file (or directory, for Shapefile) to create; `""` for `Memory`.
    ///   - options: dataset creation options, `"KEY=VALUE"`.
    public static func create(driver: String, path: String, options: [String] = []) throws -> VectorDataset {
        let creation = StringList(options)
        let handle = try withQuietGDAL { () throws -> GDALDatasetH? in
            guard let gdalDriver = GDALGetDriverByName(driver) else {
                throw GeoIOError("unknown GDAL driver \"\(driver)\"")
            }
            return creation.withCSL { GDALCreate(gdalDriver, path, 0, 0, 0, GDT_Unknown, $0) }
        }
        guard let handle else {
            throw GeoIOError.gdal("cannot create \(driver) dataset", path: path.isEmpty ? nil : path)
        }
        return VectorDataset(handle: handle, path: path)
    }

    /// Short name of the driver, e.g. `"GPKG"`.
    public var driverName: String {
        guard let driver = GDALGetDatasetDriver(handle), let name = GDALGetDriverShortName(driver) else {
            return "unknown"
        }
        return String(cString: name)
    }

    // MARK: Layers

    /// Number of layers.
    public var layerCount: Int { Int(GDALDatasetGetLayerCount(handle)) }

    /// All layers, in order.
    public var layers: [VectorLayer] {
        (0..<layerCount).compactMap { try? layer(at: $0) }
    }

    /// Layer `index`, counted from 0 as in GDAL.
    public func layer(at index: Int) throws -> VectorLayer {
        guard index >= 0, index < layerCount, let layer = GDALDatasetGetLayer(handle, Int32(index)) else {
            throw GeoIOError("layer \(index) does not exist (\(label) has \(layerCount) layers)")
        }
        return VectorLayer(dataset: self, handle: layer)
    }

    /// The layer called `name`.
    public func layer(named name: String) throws -> VectorLayer {
        guard let layer = withQuietGDAL({ GDALDatasetGetLayerByName(handle, name) }) else {
            let names = layers.map(\.name).joined(separator: ", ")
            throw GeoIOError("\(label) has no layer named \"\(name)\" (layers: \(names.isEmpty ? "none" : names))")
        }
        return VectorLayer(dataset: self, handle: layer)
    }

    /// Creates a layer with the given attribute fields.
    ///
    /// - Parameters:
    ///   - srs: the CRS of its geometries (`nil`: unknown).
    ///   - geometryType: the geometry type; ``GeometryType/none`` for attribute-only tables.
    ///   - fields: attribute fields; drivers may adapt them (Shapefile truncates names to 10
    ///     characters and stores date-times as dates).
    ///   - options: layer creation options, `"KEY=VALUE"`.
    @discardableResult
    public func createLayer(name: String, srs: SpatialReference?, geometryType: GeometryType,
                            fields: [FieldDefinition] = [], options: [String] = []) throws -> VectorLayer {
        let creation = StringList(options)
        let srsHandle = srs?.cloneHandle()
        defer { if let srsHandle { OSRRelease(srsHandle) } }
        let layer = try withQuietGDAL { () throws -> VectorLayer in
            let made = creation.withCSL {
                GDALDatasetCreateLayer(handle, name, srsHandle, geometryType.ogr, $0)
            }
            guard let made else { throw GeoIOError.gdal("cannot create layer \"\(name)\"", path: label) }
            return VectorLayer(dataset: self, handle: made)
        }
        for field in fields { try layer.createField(field) }
        return layer
    }

    /// Deletes the layer called `name`.
    public func deleteLayer(named name: String) throws {
        guard let index = layers.firstIndex(where: { $0.name == name }) else {
            throw GeoIOError("\(label) has no layer named \"\(name)\"")
        }
        try withQuietGDAL {
            guard GDALDatasetDeleteLayer(handle, Int32(index)) == OGRERR_NONE else {
                throw GeoIOError.gdal("cannot delete layer \"\(name)\"", path: label)
            }
        }
    }

    // MARK: Transactions

    /// Runs `body` in a dataset transaction: committed if `body` returns, rolled back if it throws
    /// (and the error rethrown). Needs a driver with transactions (GPKG, SQLite, PostgreSQL, …);
    /// throws for others (Shapefile, GeoJSON, FlatGeobuf) before running `body`.
    public func withTransaction<T>(_ body: () throws -> T) throws -> T {
        try withQuietGDAL {
            let started = GDALDatasetStartTransaction(handle, 0)
            if started == OGRERR_UNSUPPORTED_OPERATION {
                throw GeoIOError("\(label): the \(driverName) driver does not support transactions")
            }
            guard started == OGRERR_NONE else { throw GeoIOError.gdal("cannot start a transaction", path: label) }
        }
        let result: T
        do {
            result = try body()
        } catch {
            withQuietGDAL { _ = GDALDatasetRollbackTransaction(handle) }
            throw error
        }
        try withQuietGDAL {
            guard GDALDatasetCommitTransaction(handle) == OGRERR_NONE else {
                throw GeoIOError.gdal("cannot commit the transaction", path: label)
            }
        }
        return result
    }

    // MARK: SQL

    /// Runs an SQL statement in the driver's own dialect (SQLite for GeoPackage) and returns the
    /// integer in the first column of the first row of its result, nil when there is no row or
    /// the value is NULL (statements without results: nil). Inside ``withTransaction(_:)`` the
    /// statement is part of the transaction.
    @discardableResult
    public func executeSQL(_ statement: String) throws -> Int? {
        try withQuietGDAL {
            CPLErrorReset()
            let result = GDALDatasetExecuteSQL(handle, statement, nil, nil)
            defer { if let result { GDALDatasetReleaseResultSet(handle, result) } }
            let type = CPLGetLastErrorType()
            if type == CE_Failure || type == CE_Fatal { throw GeoIOError.gdal("SQL failed", path: label) }
            guard let result else { return nil }
            OGR_L_ResetReading(result)
            guard let feature = OGR_L_GetNextFeature(result) else { return nil }
            defer { OGR_F_Destroy(feature) }
            guard OGR_F_GetFieldCount(feature) > 0, OGR_F_IsFieldSetAndNotNull(feature, 0) != 0 else { return nil }
            return Int(OGR_F_GetFieldAsInteger64(feature, 0))
        }
    }

    /// `text` as an SQL string literal (single quotes doubled).
    public static func sqlLiteral(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "''") + "'" }
    /// `name` as an SQL identifier (double quotes doubled).
    public static func sqlIdentifier(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// Writes pending changes (`GDALFlushCache`). Closing (deinit) does this too.
    public func flush() throws {
        try withQuietGDAL {
            discardResult(GDALFlushCache(handle))
            if CPLGetLastErrorType() == CE_Failure || CPLGetLastErrorType() == CE_Fatal {
                throw GeoIOError.gdal("cannot flush", path: label)
            }
        }
    }
}

@available(*, unavailable, message: "a GDAL dataset must be used from one task at a time")
extension VectorDataset: Sendable {}

/// A layer of a ``VectorDataset`` (the `OGRLayerH` belongs to the dataset, which the layer keeps alive).
///
/// Not `Sendable`, like its dataset.
public final class VectorLayer {
    /// The dataset owning this layer.
    public let dataset: VectorDataset
    let handle: OGRLayerH

    init(dataset: VectorDataset, handle: OGRLayerH) {
        self.dataset = dataset
        self.handle = handle
    }

    /// The layer name.
    public var name: String {
        guard let name = OGR_L_GetName(handle) else { return "" }
        return String(cString: name)
    }

    private var label: String { "\(dataset.label), layer \(name)" }

    /// The declared geometry type (``GeometryType/unknown`` if mixed).
    public var geometryType: GeometryType { GeometryType(OGR_L_GetGeomType(handle)) }

    /// The CRS of its geometries, or `nil` if unknown.
    public var spatialReference: SpatialReference? {
        withQuietGDAL { SpatialReference(copying: OGR_L_GetSpatialRef(handle)) }
    }

    /// The attribute fields, in order.
    public var fields: [FieldDefinition] {
        guard let definition = OGR_L_GetLayerDefn(handle) else { return [] }
        return (0..<OGR_FD_GetFieldCount(definition)).compactMap { index in
            guard let field = OGR_FD_GetFieldDefn(definition, index),
                  let name = OGR_Fld_GetNameRef(field) else { return nil }
            return FieldDefinition(String(cString: name), type: FieldType(OGR_Fld_GetType(field)),
                                   width: Int(OGR_Fld_GetWidth(field)), precision: Int(OGR_Fld_GetPrecision(field)))
        }
    }

    /// Adds an attribute field.
    public func createField(_ field: FieldDefinition) throws {
        try withQuietGDAL {
            guard let definition = OGR_Fld_Create(field.name, field.type.ogr) else {
                throw GeoIOError.gdal("cannot create field \"\(field.name)\"", path: label)
            }
            defer { OGR_Fld_Destroy(definition) }
            OGR_Fld_SetWidth(definition, Int32(clamping: field.width))
            OGR_Fld_SetPrecision(definition, Int32(clamping: field.precision))
            guard OGR_L_CreateField(handle, definition, 1) == OGRERR_NONE else {
                throw GeoIOError.gdal("cannot create field \"\(field.name)\"", path: label)
            }
        }
    }

    /// Number of features (counted by scanning if the driver does not know it).
    ///
    /// GDAL 3.6's Shapefile driver still counts features deleted in this session until the layer
    /// is read again (e.g. with ``features()``) or reopened.
    public var featureCount: Int {
        withQuietGDAL { Int(max(OGR_L_GetFeatureCount(handle, 1), 0)) }
    }

    /// The bounding box of all geometries, or `nil` if the layer has none.
    public var extent: Envelope? {
        var envelope = OGREnvelope()
        let error = withQuietGDAL { OGR_L_GetExtent(handle, &envelope, 1) }
        guard error == OGRERR_NONE else { return nil }
        return Envelope(minX: envelope.MinX, minY: envelope.MinY, maxX: envelope.MaxX, maxY: envelope.MaxY)
    }

    // MARK: Reading

    /// Calls `body` with every feature, in the layer's order (restarts reading from the first feature).
    public func forEachFeature(_ body: (Feature) throws -> Void) throws {
        OGR_L_ResetReading(handle)
        while true {
            let next = withQuietGDAL { () -> (OGRFeature?, GeoIOError?) in
                if let feature = OGR_L_GetNextFeature(handle) { return (OGRFeature(taking: feature), nil) }
                // NULL means the end, unless GDAL recorded a failure.
                let type = CPLGetLastErrorType()
                return (nil, type == CE_Failure || type == CE_Fatal ? GeoIOError.gdal("cannot read features", path: label) : nil)
            }
            if let error = next.1 { throw error }
            guard let feature = next.0 else { return }
            try body(withQuietGDAL { try feature.toFeature() })
        }
    }

    /// The features matching an OGR SQL `WHERE` clause (`OGR_L_SetAttributeFilter`), e.g.
    /// `object_id = 3`; the filter is cleared afterwards.
    public func features(where clause: String) throws -> [Feature] {
        try withQuietGDAL {
            guard OGR_L_SetAttributeFilter(handle, clause) == OGRERR_NONE else {
                throw GeoIOError.gdal("invalid attribute filter \(clause)", path: label)
            }
        }
        defer { withQuietGDAL { _ = OGR_L_SetAttributeFilter(handle, nil) } }
        return try features()
    }

    /// All features, in the layer's order.
    public func features() throws -> [Feature] {
        var result: [Feature] = []
        try forEachFeature { result.append($0) }
        return result
    }

    /// The feature with id `fid`, or `nil` if there is none.
    public func feature(fid: Int64) throws -> Feature? {
        try withQuietGDAL {
            guard let feature = OGR_L_GetFeature(handle, fid) else {
                let type = CPLGetLastErrorType()
                if type == CE_Failure || type == CE_Fatal {
                    // Drivers report a missing id as an error too; treat both as "not found".
                    CPLErrorReset()
                }
                return nil
            }
            return try OGRFeature(taking: feature).toFeature()
        }
    }

    // MARK: Writing

    /// Appends a feature and returns its new id. Attributes must name existing fields;
    /// a `fid` in `feature` is passed to the driver, which may ignore it.
    @discardableResult
    public func add(_ feature: Feature) throws -> Int64 {
        let ogr = try makeOGRFeature(feature)
        return try withQuietGDAL {
            guard OGR_L_CreateFeature(handle, ogr.handle) == OGRERR_NONE else {
                throw GeoIOError.gdal("cannot add feature", path: label)
            }
            return OGR_F_GetFID(ogr.handle)
        }
    }

    /// Rewrites the feature with `feature.fid` (which must be set).
    public func update(_ feature: Feature) throws {
        guard feature.fid != nil else { throw GeoIOError("cannot update a feature without fid") }
        let ogr = try makeOGRFeature(feature)
        try withQuietGDAL {
            let error = OGR_L_SetFeature(handle, ogr.handle)
            guard error == OGRERR_NONE else {
                if error == OGRERR_NON_EXISTING_FEATURE, let fid = feature.fid {
                    throw GeoIOError("\(label): no feature with fid \(fid)")
                }
                throw GeoIOError.gdal("cannot update feature", path: label)
            }
        }
    }

    /// Deletes the feature with id `fid`.
    public func delete(fid: Int64) throws {
        try withQuietGDAL {
            let error = OGR_L_DeleteFeature(handle, fid)
            guard error == OGRERR_NONE else {
                if error == OGRERR_NON_EXISTING_FEATURE { throw GeoIOError("\(label): no feature with fid \(fid)") }
                throw GeoIOError.gdal("cannot delete feature \(fid)", path: label)
            }
        }
    }

    private func makeOGRFeature(_ feature: Feature) throws -> OGRFeature {
        try withQuietGDAL {
            guard let definition = OGR_L_GetLayerDefn(handle), let made = OGR_F_Create(definition) else {
                throw GeoIOError.gdal("cannot create a feature", path: label)
            }
            let ogr = OGRFeature(taking: made)
            try ogr.set(from: feature, layerName: name)
            return ogr
        }
    }
}

@available(*, unavailable, message: "a GDAL layer must be used from one task at a time")
extension VectorLayer: Sendable {}
