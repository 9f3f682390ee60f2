import Foundation
import GeoIO

/// A raster prepared for encoding: opened (and resampled when a scale is asked for), with its
/// bands chosen and the georeferencing of its pixel grid.
///
/// Not `Sendable`: it owns GDAL datasets, which are used from one task at a time.
public final class RasterSource {
    /// The raster as the user named it.
    public let path: String
    /// The dataset as opened.
    public let original: RasterDataset
    /// The grid that gets encoded: `original`, or a resampled VRT of it when `scale != 1`.
    public let grid: RasterDataset
    public let scale: Double
    public let bands: BandSelection
    /// The CRS (nil for a plain image without georeferencing).
    public let spatialReference: SpatialReference?
    /// Pixel → map transform of `grid` (identity for a plain image: pixel coordinates).
    public let geoTransform: GeoTransform
    /// Whether the raster has real georeferencing.
    public let isGeoreferenced: Bool

    /// - Parameters:
    ///   - crs: a CRS to assume when the raster has a geotransform but none of its own.
    public init(path: String, bands requested: [Int]?, scale: Double = 1, crs: String? = nil) throws {
        guard scale > 0, scale <= 8, scale.isFinite else { throw GeoSegmentError("--scale must be in (0, 8], got \(scale)") }
        self.path = path
        let original = try rethrowing { try RasterDataset.open(path) }
        self.original = original
        guard original.bandCount > 0 else { throw GeoSegmentError("\(path): raster has no bands") }
        bands = try BandSelection.resolve(requested, in: original)
        self.scale = scale

        let transform = original.geoTransform
        var srs = original.spatialReference
        if let crs {
            srs = try rethrowing("--crs \(crs)") { try SpatialReference(crs) }
        }
        switch (transform, srs) {
        case (nil, nil):
            isGeoreferenced = false  // a plain image: map coordinates are pixel coordinates
        case (.some, nil):
            throw GeoSegmentError("\(path) has a geotransform but no CRS; give one with --crs EPSG:CODE")
        case (nil, .some):
            throw GeoSegmentError("\(path) has a CRS but no geotransform; it cannot be placed on a map")
        case (.some, .some):
            isGeoreferenced = true
        }
        spatialReference = srs

        if scale == 1 {
            grid = original
        } else {
            let width = max(1, Int((Double(original.width) * scale).rounded()))
            let height = max(1, Int((Double(original.height) * scale).rounded()))
            // Average when shrinking (keeps thin features), bilinear when enlarging.
            let method = scale < 1 ? "average" : "bilinear"
            grid = try rethrowing("cannot resample \(path) by \(scale)") { () throws -> RasterDataset in
                // An unnamed VRT lives in memory only and reads `original` window by window.
                try original.translate(to: "", arguments: ["-of", "VRT", "-outsize", "\(width)", "\(height)", "-r", method])
            }
        }
        let base = transform ?? .identity
        // The resampled grid covers the same extent with pixels 1/scale times larger.
        geoTransform = scale == 1 ? base : base.scaled(x: Double(original.width) / Double(grid.width),
                                                       y: Double(original.height) / Double(grid.height))
    }

    /// The same raster opened again, with the same bands, scale and CRS: a handle for another thread.
    public func reopened() throws -> RasterSource {
        try RasterSource(path: path, bands: bands.rgb, scale: scale, crs: try spatialReference.map { srs in try rethrowing { try srs.wkt } })
    }

    public var width: Int { grid.width }
    public var height: Int { grid.height }

    /// Reads the selected bands and the validity of a window, band-sequential.
    /// A pixel is valid when every selected band's GDAL mask (nodata, alpha, per-dataset mask) is
    /// non-zero and every value is a finite number.
    /// - Parameter resampling: how a buffer smaller than the window is filled; with `.average`
    ///   invalid pixels are left out of each average (GDAL's own rule) and a buffer pixel is valid
    ///   where any pixel it covers is.
    func readWindow(_ window: PixelWindow, bufferWidth: Int? = nil, bufferHeight: Int? = nil, resampling: Resampling = .nearest)
        throws -> (values: [Int: [Float]], valid: [Bool])
    {
        let bw = bufferWidth ?? window.width, bh = bufferHeight ?? window.height
        var values: [Int: [Float]] = [:]
        var valid = [Bool](repeating: true, count: bw * bh)
        try rethrowing("\(path)") {
            // All bands in one read: each block of a pixel-interleaved raster is decompressed once,
            // whatever the block cache holds (a level-3 tile's window is 8192² pixels).
            let sourceBands = bands.sourceBands
            let all: [Float] = try grid.read(bands: sourceBands, window: window, bufferWidth: bw, bufferHeight: bh,
                                             resampling: resampling, as: Float.self)
            let plane = bw * bh
            for (k, b) in sourceBands.enumerated() {
                let v = Array(all[k * plane..<(k + 1) * plane])
                // The mask's average as a fraction, so one valid pixel of a large block still counts.
                let m: [Float] = try grid.band(b).readMask(window: window, bufferWidth: bw, bufferHeight: bh, resampling: resampling)
                for i in 0..<valid.count where !(m[i] > 0) || !v[i].isFinite { valid[i] = false }
                values[b] = v
            }
        }
        return (values, valid)
    }

    /// Reads a window of pyramid level `level` (in level pixels): level pixel (i, j) is the
    /// average of the encoded grid's block of 2^L × 2^L pixels at (i·2^L, j·2^L) — invalid pixels
    /// left out, valid where any pixel of the block is, computed by GDAL in the raster's own type
    /// (rounded to the nearest integer for integer rasters). Blocks cut by the raster's edge average the
    /// part inside: the whole blocks and the cut last column and row are read apart, so that every
    /// level pixel covers exactly its block.
    func readLevelWindow(_ window: PixelWindow, level: Int) throws -> (values: [Int: [Float]], valid: [Bool]) {
        guard level > 0 else { return try readWindow(window) }
        let f = 1 << level
        let (nx, ny) = (window.x * f, window.y * f)
        let (nw, nh) = (min(window.width * f, width - nx), min(window.height * f, height - ny))
        guard nw > 0, nh > 0, (nw + f - 1) / f == window.width, (nh + f - 1) / f == window.height else {
            throw GeoSegmentError("level \(level) window \(window) does not lie on the \(width)×\(height) raster")
        }
        // (first level pixel, level pixels, first native pixel, native pixels) along an axis.
        func parts(_ native: Int, _ start: Int) -> [(Int, Int, Int, Int)] {
            let whole = native / f
            var result = whole > 0 ? [(0, whole, start, whole * f)] : []
            if native > whole * f { result.append((whole, 1, start + whole * f, native - whole * f)) }
            return result
        }
        var values: [Int: [Float]] = [:]
        for b in bands.sourceBands { values[b] = [Float](repeating: 0, count: window.width * window.height) }
        var valid = [Bool](repeating: false, count: window.width * window.height)
        for (by, bh, sy, sh) in parts(nh, ny) {
            for (bx, bw, sx, sw) in parts(nw, nx) {
                let (v, m) = try readWindow(PixelWindow(x: sx, y: sy, width: sw, height: sh), bufferWidth: bw, bufferHeight: bh,
                                            resampling: .average)
                for y in 0..<bh {
                    for x in 0..<bw {
                        let (o, i) = ((by + y) * window.width + bx + x, y * bw + x)
                        valid[o] = m[i]
                        for (band, data) in v { values[band]![o] = data[i] }
                    }
                }
            }
        }
        return (values, valid)
    }

    /// Computes the stretch from the whole raster: read at most `sampleSide` pixels on the long
    /// side when GDAL can do that cheaply (the raster is small, or has overviews), else from a
    /// grid of 32×32 windows spread evenly over it — a decimated read of a 20000² raster without
    /// overviews would decompress every block.
    public func computeStretch(_ mode: StretchMode, sampleSide: Int = 2048) throws -> Stretch {
        if case .none = mode { return Stretch(mode: mode, ranges: []) }
        let hasOverviews = (try? grid.band(bands.sourceBands[0]).overviewCount) ?? 0 > 0
        var windows: [(PixelWindow, Int, Int)] = []
        if width * height <= 4 * sampleSide * sampleSide || hasOverviews {
            let factor = max(1, Double(max(width, height)) / Double(sampleSide))
            let bw = max(1, Int((Double(width) / factor).rounded())), bh = max(1, Int((Double(height) / factor).rounded()))
            windows = [(PixelWindow(x: 0, y: 0, width: width, height: height), bw, bh)]
        } else {
            let n = 32, side = min(sampleSide / n, width / n, height / n)
            for i in 0..<n {
                for j in 0..<n {
                    let x = (width - side) * j / (n - 1), y = (height - side) * i / (n - 1)
                    windows.append((PixelWindow(x: x, y: y, width: side, height: side), side, side))
                }
            }
        }
        var samples: [Int: [Float]] = [:]
        for (window, bw, bh) in windows {
            let (values, valid) = try readWindow(window, bufferWidth: bw, bufferHeight: bh)
            for (band, v) in values {
                samples[band, default: []].append(contentsOf: v.indices.lazy.filter { valid[$0] }.map { v[$0] })
            }
        }
        guard samples.values.contains(where: { !$0.isEmpty }) else { throw Stretch.noValidPixels }
        return try Stretch.compute(mode: mode, samples: samples)
    }

    /// The tile's pixels as 8-bit RGB, `size × size`, with invalid pixels and the padding outside
    /// the raster set to 0; the number of valid pixels; and the validity of each pixel of the
    /// tile's raster window (`tile.width × tile.height`).
    /// - Parameter level: the pyramid level whose grid `tile` lies on (see ``readLevelWindow(_:level:)``).
    public func readTile(_ tile: Tile, size: Int, stretch: Stretch, level: Int = 0) throws -> (pixels: [UInt8], validCount: Int, valid: [Bool]) {
        let window = PixelWindow(x: tile.x, y: tile.y, width: tile.width, height: tile.height)
        let (values, valid) = try readLevelWindow(window, level: level)
        var pixels = [UInt8](repeating: 0, count: size * size * 3)
        var validCount = 0
        let channels = bands.rgb.map { (values[$0] ?? [], stretch.range(of: $0)) }
        for y in 0..<tile.height {
            for x in 0..<tile.width {
                let i = y * tile.width + x
                guard valid[i] else { continue }
                validCount += 1
                let o = (y * size + x) * 3
                for c in 0..<3 { pixels[o + c] = stretch.apply(channels[c].0[i], range: channels[c].1) }
            }
        }
        return (pixels, validCount, valid)
    }
}
