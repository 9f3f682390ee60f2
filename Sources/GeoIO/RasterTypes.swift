import CGDAL

/// The pixel data type of a raster band (GDAL's `GDALDataType`, as far as GDAL 3.6 knows it).
public enum RasterDataType: String, Sendable, CaseIterable {
    case byte, uint16, int16, uint32, int32, uint64, int64, float32, float64
    case complexInt16, complexInt32, complexFloat32, complexFloat64
    /// A type this module does not know (e.g. added by a newer GDAL).
    case unknown

    init(_ type: GDALDataType) {
        switch type {
        case GDT_Byte: self = .byte
        case GDT_UInt16: self = .uint16
        case GDT_Int16: self = .int16
        case GDT_UInt32: self = .uint32
        case GDT_Int32: self = .int32
        case GDT_UInt64: self = .uint64
        case GDT_Int64: self = .int64
        case GDT_Float32: self = .float32
        case GDT_Float64: self = .float64
        case GDT_CInt16: self = .complexInt16
        case GDT_CInt32: self = .complexInt32
        case GDT_CFloat32: self = .complexFloat32
        case GDT_CFloat64: self = .complexFloat64
        default: self = .unknown
        }
    }

    var gdal: GDALDataType {
        switch self {
        case .byte: GDT_Byte
        case .uint16: GDT_UInt16
        case .int16: GDT_Int16
        case .uint32: GDT_UInt32
        case .int32: GDT_Int32
        case .uint64: GDT_UInt64
        case .int64: GDT_Int64
        case .float32: GDT_Float32
        case .float64: GDT_Float64
        case .complexInt16: GDT_CInt16
        case .complexInt32: GDT_CInt32
        case .complexFloat32: GDT_CFloat32
        case .complexFloat64: GDT_CFloat64
        case .unknown: GDT_Unknown
        }
    }

    /// Size of one sample in bytes (0 for ``unknown``).
    public var byteSize: Int { Int(GDALGetDataTypeSizeBytes(gdal)) }

    /// GDAL's name for the type, e.g. `"Byte"`, `"Float32"`.
    public var gdalName: String {
        guard let name = GDALGetDataTypeName(gdal) else { return "Unknown" }
        return String(cString: name)
    }
}

/// What a band's values mean (GDAL's `GDALColorInterp`).
public enum ColorInterpretation: String, Sendable, CaseIterable {
    case undefined, gray, palette, red, green, blue, alpha
    case hue, saturation, lightness, cyan, magenta, yellow, black
    case luminance, chromaBlue, chromaRed

    init(_ value: GDALColorInterp) {
        switch value {
        case GCI_GrayIndex: self = .gray
        case GCI_PaletteIndex: self = .palette
        case GCI_RedBand: self = .red
        case GCI_GreenBand: self = .green
        case GCI_BlueBand: self = .blue
        case GCI_AlphaBand: self = .alpha
        case GCI_HueBand: self = .hue
        case GCI_SaturationBand: self = .saturation
        case GCI_LightnessBand: self = .lightness
        case GCI_CyanBand: self = .cyan
        case GCI_MagentaBand: self = .magenta
        case GCI_YellowBand: self = .yellow
        case GCI_BlackBand: self = .black
        case GCI_YCbCr_YBand: self = .luminance
        case GCI_YCbCr_CbBand: self = .chromaBlue
        case GCI_YCbCr_CrBand: self = .chromaRed
        default: self = .undefined
        }
    }

    var gdal: GDALColorInterp {
        switch self {
        case .undefined: GCI_Undefined
        case .gray: GCI_GrayIndex
        case .palette: GCI_PaletteIndex
        case .red: GCI_RedBand
        case .green: GCI_GreenBand
        case .blue: GCI_BlueBand
        case .alpha: GCI_AlphaBand
        case .hue: GCI_HueBand
        case .saturation: GCI_SaturationBand
        case .lightness: GCI_LightnessBand
        case .cyan: GCI_CyanBand
        case .magenta: GCI_MagentaBand
        case .yellow: GCI_YellowBand
        case .black: GCI_BlackBand
        case .luminance: GCI_YCbCr_YBand
        case .chromaBlue: GCI_YCbCr_CbBand
        case .chromaRed: GCI_YCbCr_CrBand
        }
    }
}

/// Resampling used when a read window and its buffer differ in size, and for overviews.
public enum Resampling: String, Sendable, CaseIterable {
    case nearest, bilinear, cubic, cubicSpline, lanczos, average, mode, gauss

    var gdal: GDALRIOResampleAlg {
        switch self {
        case .nearest: GRIORA_NearestNeighbour
        case .bilinear: GRIORA_Bilinear
        case .cubic: GRIORA_Cubic
        case .cubicSpline: GRIORA_CubicSpline
        case .lanczos: GRIORA_Lanczos
        case .average: GRIORA_Average
        case .mode: GRIORA_Mode
        case .gauss: GRIORA_Gauss
        }
    }

    /// The name `GDALBuildOverviews` expects.
    var overviewName: String {
        switch self {
        case .nearest: "NEAREST"
        case .bilinear: "BILINEAR"
        case .cubic: "CUBIC"
        case .cubicSpline: "CUBICSPLINE"
        case .lanczos: "LANCZOS"
        case .average: "AVERAGE"
        case .mode: "MODE"
        case .gauss: "GAUSS"
        }
    }
}

/// How a band's validity mask is derived (GDAL's `GMF_*` flags, see `GDALGetMaskFlags`).
public struct MaskFlags: OptionSet, Sendable, Hashable {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// No mask: every pixel is valid.
    public static let allValid = MaskFlags(rawValue: Int(GMF_ALL_VALID))
    /// The mask is shared by all bands (e.g. an internal TIFF mask or an alpha band).
    public static let perDataset = MaskFlags(rawValue: Int(GMF_PER_DATASET))
    /// The mask comes from an alpha band (values may be other than 0/255).
    public static let alpha = MaskFlags(rawValue: Int(GMF_ALPHA))
    /// The mask comes from the band's nodata value.
    public static let noData = MaskFlags(rawValue: Int(GMF_NODATA))
}

/// Summary statistics of a band.
public struct BandStatistics: Sendable, Hashable {
    public var min: Double
    public var max: Double
    public var mean: Double
    public var standardDeviation: Double
}

/// Swift scalar types that raster samples can be read into and written from.
public protocol RasterScalar: Sendable {
    /// The GDAL buffer type matching the Swift type's memory layout.
    static var rasterDataType: RasterDataType { get }
    /// The zero value used to allocate buffers.
    static var zero: Self { get }
}

extension UInt8: RasterScalar {
    public static var rasterDataType: RasterDataType { .byte }
}
extension UInt16: RasterScalar {
    public static var rasterDataType: RasterDataType { .uint16 }
}
extension Int16: RasterScalar {
    public static var rasterDataType: RasterDataType { .int16 }
}
extension UInt32: RasterScalar {
    public static var rasterDataType: RasterDataType { .uint32 }
}
extension Int32: RasterScalar {
    public static var rasterDataType: RasterDataType { .int32 }
}
extension Float: RasterScalar {
    public static var rasterDataType: RasterDataType { .float32 }
}
extension Double: RasterScalar {
    public static var rasterDataType: RasterDataType { .float64 }
}

/// Builds GDAL's `GDALRasterIOExtraArg` (C macro `INIT_RASTERIO_EXTRA_ARG`, which Swift cannot import).
func rasterIOExtraArg(_ resampling: Resampling) -> GDALRasterIOExtraArg {
    GDALRasterIOExtraArg(
        nVersion: 1, eResampleAlg: resampling.gdal, pfnProgress: nil, pProgressData: nil,
        bFloatingPointWindowValidity: 0, dfXOff: 0, dfYOff: 0, dfXSize: 0, dfYSize: 0)
}

/// Validates a read/write request against the raster and returns the number of buffer samples.
func checkedBufferCount(window: PixelWindow, rasterWidth: Int, rasterHeight: Int,
                        bufferWidth: Int, bufferHeight: Int) throws -> Int {
    guard window.fits(inWidth: rasterWidth, height: rasterHeight) else {
        throw GeoIOError("window \(window) is not inside the \(rasterWidth)×\(rasterHeight) raster")
    }
    guard bufferWidth > 0, bufferHeight > 0,
          bufferWidth <= Int(Int32.max), bufferHeight <= Int(Int32.max) else {
        throw GeoIOError("buffer size \(bufferWidth)×\(bufferHeight) is invalid")
    }
    let (count, overflow) = bufferWidth.multipliedReportingOverflow(by: bufferHeight)
    guard !overflow else { throw GeoIOError("buffer size \(bufferWidth)×\(bufferHeight) is too large") }
    return count
}
