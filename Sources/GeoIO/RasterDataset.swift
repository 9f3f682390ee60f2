import CGDAL

/// A raster opened or created through GDAL (owns a `GDALDatasetH`, closed in `deinit`).
///
/// Not `Sendable`: a GDAL dataset must not be used from two threads at once. Open one dataset
/// per task (opening is cheap) instead of sharing one.
public final class RasterDataset {
    /// How multi-band samples are laid out in a buffer.
    public enum SampleLayout: Sendable {
        /// All samples of the first band, then the second… (CHW).
        case bandSequential
        /// All bands of the first pixel, then the second… (HWC).
        case pixelInterleaved
    }

    let handle: GDALDatasetH
    /// The path the dataset was opened or created with (empty for unnamed `MEM` datasets).
    public let path: String
    /// A dataset this one reads from (the source of a VRT made by `translate`): kept alive until
    /// this one is closed, because GDAL closes the VRT through its source's handle.
    var source: RasterDataset?

    init(handle: GDALDatasetH, path: String) {
        self.handle = handle
        self.path = path
    }

    deinit {
        // GDALClose flushes pending writes; a failure there has nowhere to go but GDAL's quiet handler.
        withQuietGDAL { discardResult(GDALClose(handle)) }
    }

    /// Opens an existing raster: any path GDAL accepts, including `/vsizip/…`, `/vsicurl/…`, `/vsimem/…`.
    ///
    /// - Parameters:
    ///   - allowedDrivers: restrict detection to these driver short names (e.g. `["GTiff"]`).
    ///   - openOptions: driver open options, `"KEY=VALUE"`.
    public static func open(_ path: String, access: DatasetAccess = .readOnly,
                            allowedDrivers: [String]? = nil, openOptions: [String] = []) throws -> RasterDataset {
        let flags = UInt32(GDAL_OF_RASTER | GDAL_OF_VERBOSE_ERROR)
            | UInt32(access == .update ? GDAL_OF_UPDATE : GDAL_OF_READONLY)
        let drivers = allowedDrivers.map { StringList($0) }
        let options = StringList(openOptions)
        let handle = withQuietGDAL {
            options.withConstCSL { optionList in
                (drivers ?? StringList()).withConstCSL { driverList in
                    GDALOpenEx(path, flags, allowedDrivers == nil ? nil : driverList, optionList, nil)
                }
            }
        }
        guard let handle else { throw GeoIOError.gdal("cannot open raster", path: path) }
        return RasterDataset(handle: handle, path: path)
    }

    /// Creates a new raster with a driver that supports `Create` (e.g. `"GTiff"`, `"MEM"`).
    ///
    /// - Parameters:
    ///   - path: the file to write; ignored by `MEM` (pass `""`).
    ///   - options: driver creation options, e.g. `["COMPRESS=DEFLATE", "TILED=YES"]`.
    public static func create(driver: String, path: String, width: Int, height: Int, bandCount: Int,
                              dataType: RasterDataType, options: [String] = []) throws -> RasterDataset {
        guard let w = Int32(exactly: width), let h = Int32(exactly: height), let b = Int32(exactly: bandCount),
              width > 0, height > 0, bandCount >= 0 else {
            throw GeoIOError("cannot create a \(width)×\(height) raster with \(bandCount) bands")
        }
        guard dataType != .unknown else { throw GeoIOError("cannot create a raster of unknown data type") }
        let creation = StringList(options)
        let handle = try withQuietGDAL { () throws -> GDALDatasetH? in
            guard let gdalDriver = GDALGetDriverByName(driver) else {
                throw GeoIOError("unknown GDAL driver \"\(driver)\"")
            }
            return creation.withCSL { GDALCreate(gdalDriver, path, w, h, b, dataType.gdal, $0) }
        }
        guard let handle else {
            throw GeoIOError.gdal("cannot create \(driver) raster", path: path.isEmpty ? nil : path)
        }
        return RasterDataset(handle: handle, path: path)
    }

    /// Writes a copy of this raster with any driver that supports `CreateCopy` (e.g. `"COG"`, `"PNG"`).
    public func copy(driver: String, path: String, options: [String] = []) throws -> RasterDataset {
        let creation = StringList(options)
        let copied = try withQuietGDAL { () throws -> GDALDatasetH? in
            guard let gdalDriver = GDALGetDriverByName(driver) else {
                throw GeoIOError("unknown GDAL driver \"\(driver)\"")
            }
            return creation.withCSL { GDALCreateCopy(gdalDriver, path, handle, 0, $0, nil, nil) }
        }
        guard let copied else { throw GeoIOError.gdal("cannot copy raster to \(driver)", path: path) }
        return RasterDataset(handle: copied, path: path)
    }

    /// A short label for error messages.
    var label: String { path.isEmpty ? "\(driverName) raster" : fileName(path) }

    // MARK: Properties

    /// Raster width in pixels.
    public var width: Int { Int(GDALGetRasterXSize(handle)) }
    /// Raster height in pixels.
    public var height: Int { Int(GDALGetRasterYSize(handle)) }
    /// Number of bands.
    public var bandCount: Int { Int(GDALGetRasterCount(handle)) }

    /// Short name of the driver, e.g. `"GTiff"`.
    public var driverName: String {
        guard let driver = GDALGetDatasetDriver(handle), let name = GDALGetDriverShortName(driver) else {
            return "unknown"
        }
        return String(cString: name)
    }

    /// The pixel-to-map transform, or `nil` if the raster has none (GDAL would report
    /// ``GeoTransform/identity``).
    public var geoTransform: GeoTransform? {
        var coefficients = [Double](repeating: 0, count: 6)
        let error = withQuietGDAL { GDALGetGeoTransform(handle, &coefficients) }
        guard error == CE_None else { return nil }
        return GeoTransform(coefficients: coefficients)
    }

    /// Sets the pixel-to-map transform (needs a writable dataset).
    public func setGeoTransform(_ transform: GeoTransform) throws {
        var coefficients = transform.coefficients
        try withQuietGDAL {
            guard GDALSetGeoTransform(handle, &coefficients) == CE_None else {
                throw GeoIOError.gdal("cannot set geotransform", path: label)
            }
        }
    }

    /// The raster's CRS, or `nil` if it has none. A copy: changing it needs ``setSpatialReference(_:)``.
    public var spatialReference: SpatialReference? {
        withQuietGDAL { SpatialReference(copying: GDALGetSpatialRef(handle)) }
    }

    /// Sets (or with `nil`, clears) the raster's CRS (needs a writable dataset).
    public func setSpatialReference(_ srs: SpatialReference?) throws {
        try withQuietGDAL {
            let error: CPLErr
            if let srs {
                error = srs.withHandle { GDALSetSpatialRef(handle, $0) }
            } else {
                error = GDALSetSpatialRef(handle, nil)
            }
            guard error == CE_None else { throw GeoIOError.gdal("cannot set spatial reference", path: label) }
        }
    }

    /// Map bounds of the raster, or `nil` if it has no geotransform.
    public var bounds: Envelope? {
        geoTransform?.bounds(width: width, height: height)
    }

    /// Writes cached changes to disk (`GDALFlushCache`). Closing (deinit) flushes too.
    public func flush() throws {
        try withQuietGDAL {
            discardResult(GDALFlushCache(handle))
            if CPLGetLastErrorType() == CE_Failure || CPLGetLastErrorType() == CE_Fatal {
                throw GeoIOError.gdal("cannot flush", path: label)
            }
        }
    }

    // MARK: Bands

    /// Band `index`, counted from 1 as in GDAL.
    public func band(_ index: Int) throws -> RasterBand {
        guard index >= 1, index <= bandCount else {
            throw GeoIOError("band \(index) does not exist (raster has \(bandCount) band\(bandCount == 1 ? "" : "s"))")
        }
        guard let band = GDALGetRasterBand(handle, Int32(index)) else {
            throw GeoIOError.gdal("cannot get band \(index)", path: label)
        }
        return RasterBand(dataset: self, handle: band, name: "band \(index)")
    }

    /// All bands, in order.
    public var bands: [RasterBand] {
        (0..<bandCount).compactMap { try? band($0 + 1) }
    }

    /// Builds overviews (reduced-resolution copies) for all bands, e.g. `factors: [2, 4, 8]`.
    /// For read-only GeoTIFFs GDAL writes them to an external `.ovr` file.
    public func buildOverviews(factors: [Int], resampling: Resampling = .average) throws {
        var levels = try factors.map { factor -> Int32 in
            guard factor > 1, let level = Int32(exactly: factor) else {
                throw GeoIOError("invalid overview factor \(factor)")
            }
            return level
        }
        try withQuietGDAL {
            let error = GDALBuildOverviews(handle, resampling.overviewName, Int32(levels.count), &levels,
                                           0, nil, nil, nil)
            guard error == CE_None else { throw GeoIOError.gdal("cannot build overviews", path: label) }
        }
    }

    // MARK: Reading

    /// Reads several bands of `window` (the whole raster if `nil`) into a
    /// `bufferWidth` × `bufferHeight` buffer (the window size if `nil`), resampling as needed.
    ///
    /// - Parameters:
    ///   - bands: 1-based band indices; may repeat a band (e.g. `[1, 1, 1]`).
    ///   - layout: ``SampleLayout/bandSequential`` (CHW) or ``SampleLayout/pixelInterleaved`` (HWC).
    ///   - type: the sample type; GDAL converts (and clamps) from the band's type.
    public func read<T: RasterScalar>(bands: [Int], window: PixelWindow? = nil,
                                      bufferWidth: Int? = nil, bufferHeight: Int? = nil,
                                      resampling: Resampling = .nearest, layout: SampleLayout = .bandSequential,
                                      as type: T.Type) throws -> [T] {
        let window = window ?? PixelWindow(width: width, height: height)
        let bw = bufferWidth ?? window.width, bh = bufferHeight ?? window.height
        let perBand = try checkedBufferCount(window: window, rasterWidth: width, rasterHeight: height,
                                             bufferWidth: bw, bufferHeight: bh)
        guard !bands.isEmpty else { throw GeoIOError("no bands requested") }
        for index in bands where index < 1 || index > bandCount {
            throw GeoIOError("band \(index) does not exist (raster has \(bandCount) band\(bandCount == 1 ? "" : "s"))")
        }
        let (total, overflow) = perBand.multipliedReportingOverflow(by: bands.count)
        guard !overflow else { throw GeoIOError("buffer too large") }

        let sampleSize = Int64(MemoryLayout<T>.stride)
        let pixelSpace, lineSpace, bandSpace: Int64
        switch layout {
        case .bandSequential:
            pixelSpace = sampleSize
            lineSpace = sampleSize * Int64(bw)
            bandSpace = sampleSize * Int64(perBand)
        case .pixelInterleaved:
            pixelSpace = sampleSize * Int64(bands.count)
            lineSpace = pixelSpace * Int64(bw)
            bandSpace = sampleSize
        }
        var bandMap = bands.map { Int32($0) }
        var extra = rasterIOExtraArg(resampling)
        var buffer = [T](repeating: T.zero, count: total)
        try withQuietGDAL {
            let error = buffer.withUnsafeMutableBytes { bytes in
                GDALDatasetRasterIOEx(handle, GF_Read, Int32(window.x), Int32(window.y),
                                      Int32(window.width), Int32(window.height), bytes.baseAddress,
                                      Int32(bw), Int32(bh), T.rasterDataType.gdal, Int32(bands.count), &bandMap,
                                      pixelSpace, lineSpace, bandSpace, &extra)
            }
            guard error == CE_None else {
                throw GeoIOError.gdal("cannot read bands \(bands) of window \(window)", path: label)
            }
        }
        return buffer
    }

    /// Reads an 8-bit RGB image, pixel-interleaved (HWC: `pixels[(row * width + column) * 3 + channel]`).
    ///
    /// Bands default to 1, 2, 3; a 1-band raster is replicated to grey RGB and a 2-band raster
    /// is read as bands 1, 2, 1. The chosen bands must be of type Byte: other types need a stretch,
    /// which is the caller's choice (read them with ``read(bands:window:bufferWidth:bufferHeight:resampling:layout:as:)``).
    ///
    /// - Parameters:
    ///   - bands: three 1-based band indices to use as R, G, B (e.g. `[3, 2, 1]` for BGR rasters).
    ///   - window: the source window (whole raster if `nil`).
    ///   - bufferWidth/bufferHeight: output size (window size if `nil`).
    public func readRGB8(bands: [Int]? = nil, window: PixelWindow? = nil,
                         bufferWidth: Int? = nil, bufferHeight: Int? = nil,
                         resampling: Resampling = .nearest) throws -> (width: Int, height: Int, pixels: [UInt8]) {
        let chosen: [Int]
        if let bands {
            guard bands.count == 3 else { throw GeoIOError("readRGB8 needs 3 bands, got \(bands)") }
            chosen = bands
        } else {
            switch bandCount {
            case 0: throw GeoIOError("\(label) has no bands")
            case 1: chosen = [1, 1, 1]
            case 2: chosen = [1, 2, 1]
            default: chosen = [1, 2, 3]
            }
        }
        for index in Set(chosen).sorted() {
            let type = try band(index).dataType
            guard type == .byte else {
                throw GeoIOError("\(label): band \(index) is \(type.gdalName), not Byte; read it as numbers and stretch it to 8 bits")
            }
        }
        let window = window ?? PixelWindow(width: width, height: height)
        let bw = bufferWidth ?? window.width, bh = bufferHeight ?? window.height
        let pixels = try read(bands: chosen, window: window, bufferWidth: bw, bufferHeight: bh,
                              resampling: resampling, layout: .pixelInterleaved, as: UInt8.self)
        return (bw, bh, pixels)
    }
}

@available(*, unavailable, message: "a GDAL dataset must be used from one task at a time")
extension RasterDataset: Sendable {}
