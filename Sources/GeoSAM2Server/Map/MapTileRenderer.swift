import Foundation
import GeoIO
import GeoSegment

/// Renders map tiles (PNG) from the raster a store was made from, with the store's bands and
/// stretch, so the map shows what SAM2 saw. Zoomed-out tiles read GDAL overviews: the raster's
/// own, or ones built once into the store (`display.vrt` + `.ovr`) for a large raster without any.
///
/// Thread-safe: each render borrows a dataset of its own from a small pool.
public final class MapTileRenderer: @unchecked Sendable {
    // @unchecked: `idle` and `reading` are guarded by `lock`; a dataset is used by one render at a time.
    public let grid: MapGrid
    /// The raster read (the source, or the store's display VRT once it is built).
    public var path: String { lock.withLock { reading } }
    let rgb: [Int]
    let stretch: Stretch
    private let lock = NSLock()
    private var reading: String
    private var idle: [RasterDataset] = []
    private let poolSize = 4

    /// Rasters larger than this (on the long side) without overviews get display overviews.
    public static let overviewThreshold = 4096
    static let displayName = "display.vrt"

    /// - Parameters:
    ///   - prepareOverviews: build display overviews into the store when the raster is large and has none.
    ///   - overviewThreshold: what "large" means (pixels on the long side).
    ///   - inBackground: build them on a thread of their own and switch to them when they are
    ///     ready (the server opens at once; zoomed-out tiles are slow meanwhile).
    public init(store: FeatureStore, prepareOverviews: Bool = true, overviewThreshold: Int = MapTileRenderer.overviewThreshold,
                inBackground: Bool = false, log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        let m = store.manifest
        grid = MapGrid(width: m.source.width, height: m.source.height)
        rgb = m.encoding.bands.rgb
        stretch = m.encoding.stretch
        let source = m.source.path
        let dataset: RasterDataset
        do {
            dataset = try RasterDataset.open(source)
        } catch {
            throw GeoSAM2ServerError(.internalServerError, "cannot open the raster \(source) the store was made from: \(error)")
        }
        guard dataset.width == m.source.width, dataset.height == m.source.height else {
            throw GeoSAM2ServerError(.internalServerError, "\(source) is \(dataset.width)×\(dataset.height), the store says \(m.source.width)×\(m.source.height)")
        }
        reading = source
        idle.append(dataset)
        let hasOverviews = ((try? dataset.band(rgb.first ?? 1).overviewCount) ?? 0) > 0
        guard prepareOverviews, !hasOverviews, max(dataset.width, dataset.height) > overviewThreshold else { return }
        let (width, height) = (dataset.width, dataset.height)
        let build: @Sendable () -> Void = { [self] in
            guard let vrt = Self.displayOverviews(of: source, width: width, height: height, in: store, log: log) else { return }
            lock.withLock {
                reading = vrt
                idle.removeAll()
            }
        }
        if inBackground {
            let thread = Thread(block: build)
            thread.name = "geosam2.map-overviews"
            thread.start()
        } else {
            build()
        }
    }

    /// Builds (once) a VRT of the raster with external overviews inside the store; nil when the
    /// store cannot be written (the map then reads the full-resolution raster).
    static func displayOverviews(of source: String, width: Int, height: Int, in store: FeatureStore, log: (String) -> Void) -> String? {
        let vrt = store.url.appendingPathComponent(displayName).path
        let fm = FileManager.default
        if fm.fileExists(atPath: vrt), fm.fileExists(atPath: vrt + ".ovr") { return vrt }
        log("building map overviews of \(source) into \(store.url.path) (once)…")
        do {
            // Built under temporary names and renamed, so that an interrupted build is redone,
            // never taken for a finished one.
            let partial = store.url.appendingPathComponent(".\(displayName).partial.vrt").path
            try? fm.removeItem(atPath: partial)
            try? fm.removeItem(atPath: partial + ".ovr")
            try {
                // In a scope of their own: both datasets are closed (flushed) before the renames.
                let dataset = try RasterDataset.open(source)
                _ = try dataset.translate(to: partial, arguments: ["-of", "VRT"])
                let display = try RasterDataset.open(partial)
                var factors: [Int] = []
                var f = 2
                while max(width, height) / f >= MapGrid.tileSize / 2 {
                    factors.append(f)
                    f *= 2
                }
                try display.buildOverviews(factors: factors, resampling: .average)
            }()
            for (from, to) in [(partial + ".ovr", vrt + ".ovr"), (partial, vrt)] {
                try? fm.removeItem(atPath: to)
                try fm.moveItem(atPath: from, toPath: to)
            }
            return vrt
        } catch {
            try? fm.removeItem(atPath: vrt)
            try? fm.removeItem(atPath: vrt + ".ovr")
            log("warning: no map overviews (\(error)); zoomed-out tiles will be slow")
            return nil
        }
    }

    private func borrow() throws -> RasterDataset {
        let (dataset, current) = lock.withLock { (idle.popLast(), reading) }
        if let dataset { return dataset }
        return try RasterDataset.open(current)
    }

    private func giveBack(_ dataset: RasterDataset) {
        lock.lock()
        defer { lock.unlock() }
        // A dataset of the raster read before the overviews were ready is dropped.
        if idle.count < poolSize, dataset.path == reading { idle.append(dataset) }
    }

    /// The PNG of one tile (256 × 256 RGBA; transparent outside the raster and on nodata), or
    /// nil when the tile is outside the grid.
    public func png(zoom: Int, column: Int, row: Int) throws -> Data? {
        guard let (window, imageWidth, imageHeight) = grid.window(zoom: zoom, column: column, row: row) else { return nil }
        let dataset = try borrow()
        defer { giveBack(dataset) }
        let size = MapGrid.tileSize
        var distinct: [Int] = []
        for b in rgb where !distinct.contains(b) { distinct.append(b) }
        let plane = imageWidth * imageHeight
        let resampling: Resampling = grid.factor(zoom: zoom) > 1 ? .average : .nearest
        let values = try dataset.read(bands: distinct, window: window, bufferWidth: imageWidth, bufferHeight: imageHeight,
                                      resampling: resampling, as: Float.self)
        var valid = [Bool](repeating: true, count: plane)
        for b in distinct {
            let mask = try dataset.band(b).readMask(window: window, bufferWidth: imageWidth, bufferHeight: imageHeight)
            for i in 0..<plane where mask[i] == 0 { valid[i] = false }
        }
        var channels = [[UInt8]](repeating: [UInt8](repeating: 0, count: size * size), count: 4)
        let ranges = rgb.map { stretch.range(of: $0) }
        let offsets = rgb.map { b in (distinct.firstIndex(of: b) ?? 0) * plane }
        for y in 0..<imageHeight {
            for x in 0..<imageWidth {
                let i = y * imageWidth + x, o = y * size + x
                guard valid[i] else { continue }
                var finite = true
                for c in 0..<3 {
                    let v = values[offsets[c] + i]
                    if !v.isFinite { finite = false; break }
                    channels[c][o] = stretch.apply(v, range: ranges[c])
                }
                channels[3][o] = finite ? 255 : 0
            }
        }
        let image = try RasterDataset.create(driver: "MEM", path: "", width: size, height: size, bandCount: 4, dataType: .byte)
        for c in 0..<4 { try image.band(c + 1).write(values: channels[c]) }
        return try image.encoded(driver: "PNG", options: ["ZLEVEL=6"])
    }
}
