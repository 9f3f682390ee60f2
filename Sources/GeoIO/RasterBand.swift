import CGDAL

/// One band of a ``RasterDataset`` (or one of its overviews). The handle belongs to the dataset,
/// which the band keeps alive.
///
/// Not `Sendable`, like its dataset.
public final class RasterBand {
    /// The dataset owning this band.
    public let dataset: RasterDataset
    let handle: GDALRasterBandH
    /// A label such as `"band 2"` or `"overview 0 of band 2"`, used in error messages.
    public let name: String

    init(dataset: RasterDataset, handle: GDALRasterBandH, name: String) {
        self.dataset = dataset
        self.handle = handle
        self.name = name
    }

    private var label: String { "\(dataset.label), \(name)" }

    // MARK: Properties

    /// Band width in pixels (smaller than the dataset's for overviews).
    public var width: Int { Int(GDALGetRasterBandXSize(handle)) }
    /// Band height in pixels.
    public var height: Int { Int(GDALGetRasterBandYSize(handle)) }

    /// The type samples are stored as.
    public var dataType: RasterDataType { RasterDataType(GDALGetRasterDataType(handle)) }

    /// What the band's values mean (red, alpha, gray, …).
    public var colorInterpretation: ColorInterpretation {
        ColorInterpretation(GDALGetRasterColorInterpretation(handle))
    }

    /// Sets the band's colour interpretation (needs a writable dataset and driver support).
    public func setColorInterpretation(_ value: ColorInterpretation) throws {
        try withQuietGDAL {
            guard GDALSetRasterColorInterpretation(handle, value.gdal) == CE_None else {
                throw GeoIOError.gdal("cannot set colour interpretation of \(name)", path: dataset.label)
            }
        }
    }

    /// The value marking missing pixels (may be NaN), or `nil` if the band has none.
    public var noDataValue: Double? {
        var hasNoData: Int32 = 0
        let value = withQuietGDAL { GDALGetRasterNoDataValue(handle, &hasNoData) }
        return hasNoData != 0 ? value : nil
    }

    /// Sets the nodata value, or removes it with `nil`.
    public func setNoDataValue(_ value: Double?) throws {
        try withQuietGDAL {
            let error = value.map { GDALSetRasterNoDataValue(handle, $0) } ?? GDALDeleteRasterNoDataValue(handle)
            guard error == CE_None else {
                throw GeoIOError.gdal("cannot set nodata value of \(name)", path: dataset.label)
            }
        }
    }

    /// The natural block (tile or strip) size: reading whole blocks is fastest.
    public var blockSize: (width: Int, height: Int) {
        var w: Int32 = 0, h: Int32 = 0
        GDALGetBlockSize(handle, &w, &h)
        return (Int(w), Int(h))
    }

    // MARK: Overviews

    /// Number of reduced-resolution overviews.
    public var overviewCount: Int { Int(GDALGetOverviewCount(handle)) }

    /// Overview `index`, counted from 0 (largest first, as in GDAL).
    public func overview(_ index: Int) throws -> RasterBand {
        guard index >= 0, index < overviewCount, let overview = GDALGetOverview(handle, Int32(index)) else {
            throw GeoIOError("overview \(index) of \(name) does not exist (it has \(overviewCount) overviews)")
        }
        return RasterBand(dataset: dataset, handle: overview, name: "overview \(index) of \(name)")
    }

    // MARK: Reading and writing

    /// Reads `window` (the whole band if `nil`) into a `bufferWidth` × `bufferHeight` buffer
    /// (the window size if `nil`), row-major, converting samples to `type` (`GDALRasterIOEx`).
    ///
    /// When buffer and window sizes differ GDAL resamples with `resampling` (and uses overviews
    /// when they exist). Nodata pixels are returned as stored; see ``readMask(window:bufferWidth:bufferHeight:)``.
    public func read<T: RasterScalar>(window: PixelWindow? = nil, bufferWidth: Int? = nil, bufferHeight: Int? = nil,
                                      resampling: Resampling = .nearest, as type: T.Type) throws -> [T] {
        try rasterIO(GF_Read, window: window, bufferWidth: bufferWidth, bufferHeight: bufferHeight,
                     resampling: resampling, values: nil)
    }

    /// Reads `window` as 32-bit floats; see ``read(window:bufferWidth:bufferHeight:resampling:as:)``.
    public func read(window: PixelWindow? = nil, bufferWidth: Int? = nil, bufferHeight: Int? = nil,
                     resampling: Resampling = .nearest) throws -> [Float] {
        try read(window: window, bufferWidth: bufferWidth, bufferHeight: bufferHeight,
                 resampling: resampling, as: Float.self)
    }

    /// Writes `values` (row-major, `window.width` × `window.height` of them) into `window`
    /// (the whole band if `nil`), converting to the band's type.
    public func write<T: RasterScalar>(window: PixelWindow? = nil, values: [T]) throws {
        let _: [T] = try rasterIO(GF_Write, window: window, bufferWidth: nil, bufferHeight: nil,
                                  resampling: .nearest, values: values)
    }

    /// Sets every pixel to `value` (`GDALFillRaster`).
    public func fill(_ value: Double) throws {
        try withQuietGDAL {
            guard GDALFillRaster(handle, value, 0) == CE_None else {
                throw GeoIOError.gdal("cannot fill \(name)", path: dataset.label)
            }
        }
    }

    private func rasterIO<T: RasterScalar>(_ direction: GDALRWFlag, window: PixelWindow?, bufferWidth: Int?,
                                           bufferHeight: Int?, resampling: Resampling, values: [T]?) throws -> [T] {
        let window = window ?? PixelWindow(width: width, height: height)
        let bw = bufferWidth ?? window.width, bh = bufferHeight ?? window.height
        let count = try checkedBufferCount(window: window, rasterWidth: width, rasterHeight: height,
                                           bufferWidth: bw, bufferHeight: bh)
        var buffer: [T]
        if let values {
            guard values.count == count else {
                throw GeoIOError("\(values.count) values given for a \(bw)×\(bh) window (\(count) expected)")
            }
            buffer = values
        } else {
            buffer = [T](repeating: T.zero, count: count)
        }
        var extra = rasterIOExtraArg(resampling)
        try withQuietGDAL {
            let error = buffer.withUnsafeMutableBytes { bytes in
                GDALRasterIOEx(handle, direction, Int32(window.x), Int32(window.y),
                               Int32(window.width), Int32(window.height), bytes.baseAddress,
                               Int32(bw), Int32(bh), T.rasterDataType.gdal, 0, 0, &extra)
            }
            guard error == CE_None else {
                let verb = direction == GF_Read ? "read" : "write"
                throw GeoIOError.gdal("cannot \(verb) \(name) window \(window)", path: dataset.label)
            }
        }
        return buffer
    }

    // MARK: Mask

    /// How the band's validity mask is derived (nodata value, alpha band, per-dataset mask, or none).
    ///
    /// GDAL derives the mask once per band, on first use: after changing the nodata value or
    /// adding an alpha band, reopen the dataset to see the new mask.
    public var maskFlags: MaskFlags { MaskFlags(rawValue: Int(GDALGetMaskFlags(handle))) }

    /// Reads the validity mask (`GDALGetMaskBand`) of `window`: 0 = invalid, non-zero = valid
    /// (255 for a nodata or binary mask; alpha masks give the alpha value, clamped to 255).
    public func readMask(window: PixelWindow? = nil, bufferWidth: Int? = nil,
                         bufferHeight: Int? = nil) throws -> [UInt8] {
        try readMask(window: window, bufferWidth: bufferWidth, bufferHeight: bufferHeight, resampling: .nearest)
    }

    /// `readMask` into a buffer of another size or type, resampled with `resampling` (with
    /// `.average` into floats: the valid fraction of each buffer pixel, times 255).
    public func readMask<T: RasterScalar>(window: PixelWindow? = nil, bufferWidth: Int? = nil, bufferHeight: Int? = nil,
                                          resampling: Resampling, as type: T.Type = T.self) throws -> [T] {
        guard let mask = withQuietGDAL({ GDALGetMaskBand(handle) }) else {
            throw GeoIOError.gdal("cannot get mask of \(name)", path: dataset.label)
        }
        let maskBand = RasterBand(dataset: dataset, handle: mask, name: "mask of \(name)")
        return try maskBand.read(window: window, bufferWidth: bufferWidth, bufferHeight: bufferHeight,
                                 resampling: resampling, as: type)
    }

    // MARK: Statistics

    /// Minimum and maximum of valid pixels (`GDALComputeRasterMinMax`); `approximate` may use
    /// overviews or a subsample.
    public func computeMinMax(approximate: Bool = false) throws -> (min: Double, max: Double) {
        var minMax = [Double](repeating: 0, count: 2)
        try withQuietGDAL {
            // GDAL 3.6 returns void, later versions CPLErr: check the error state instead.
            discardResult(GDALComputeRasterMinMax(handle, approximate ? 1 : 0, &minMax))
            if CPLGetLastErrorType() == CE_Failure || CPLGetLastErrorType() == CE_Fatal {
                throw GeoIOError.gdal("cannot compute min/max of \(name)", path: dataset.label)
            }
        }
        return (minMax[0], minMax[1])
    }

    /// Minimum, maximum, mean and standard deviation of valid pixels (`GDALComputeRasterStatistics`).
    ///
    /// GDAL also stores the result as band metadata, which drivers with PAM support persist in a
    /// `.aux.xml` side-car file when the dataset is closed.
    public func statistics(approximate: Bool = false) throws -> BandStatistics {
        var stats = BandStatistics(min: 0, max: 0, mean: 0, standardDeviation: 0)
        try withQuietGDAL {
            let error = GDALComputeRasterStatistics(handle, approximate ? 1 : 0, &stats.min, &stats.max,
                                                    &stats.mean, &stats.standardDeviation, nil, nil)
            guard error == CE_None else {
                throw GeoIOError.gdal("cannot compute statistics of \(name)", path: dataset.label)
            }
        }
        return stats
    }

    /// Counts valid pixels in `bucketCount` equal buckets spanning [`min`, `max`]
    /// (`GDALGetRasterHistogramEx`). Out-of-range values go to the end buckets if
    /// `includeOutOfRange`, otherwise they are ignored.
    public func histogram(min: Double, max: Double, bucketCount: Int, includeOutOfRange: Bool = false,
                          approximate: Bool = false) throws -> [UInt64] {
        guard bucketCount > 0, let buckets = Int32(exactly: bucketCount), min < max else {
            throw GeoIOError("invalid histogram: \(bucketCount) buckets over [\(min), \(max)]")
        }
        var counts = [UInt64](repeating: 0, count: bucketCount)
        try withQuietGDAL {
            let error = counts.withUnsafeMutableBufferPointer { pointer in
                pointer.withMemoryRebound(to: GUIntBig.self) { histogram in
                    GDALGetRasterHistogramEx(handle, min, max, buckets, histogram.baseAddress,
                                             includeOutOfRange ? 1 : 0, approximate ? 1 : 0, nil, nil)
                }
            }
            guard error == CE_None else {
                throw GeoIOError.gdal("cannot compute histogram of \(name)", path: dataset.label)
            }
        }
        return counts
    }
}

@available(*, unavailable, message: "a GDAL band must be used from one task at a time")
extension RasterBand: Sendable {}
