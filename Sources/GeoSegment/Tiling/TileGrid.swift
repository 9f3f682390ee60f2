/// One 1024×1024 tile of the encoding grid.
public struct Tile: Sendable, Hashable, Codable {
    /// Row and column in the grid.
    public var row: Int
    public var column: Int
    /// Top-left pixel of the tile in the (scaled) raster.
    public var x: Int
    public var y: Int
    /// How much of the tile the raster covers (less than the tile size only for rasters smaller
    /// than a tile in that direction; the rest is padding).
    public var width: Int
    public var height: Int

    /// A stable identifier, also the tile's file name stem.
    public var id: String { "r\(pad(row))_c\(pad(column))" }

    private func pad(_ v: Int) -> String {
        let s = String(v)
        return s.count >= 4 ? s : String(repeating: "0", count: 4 - s.count) + s
    }
}

/// The grid of tiles over a raster: windows of `size` pixels on a stride of `size − overlap`,
/// the last column and row shifted back to end at the raster edge so that every tile is full size
/// where the raster allows; a raster dimension smaller than `size` gives one window padded to `size`.
public struct TileGrid: Sendable, Equatable, Codable {
    public let rasterWidth: Int
    public let rasterHeight: Int
    public let size: Int
    public let overlap: Int
    /// Tile origins along x and y.
    public let columnOrigins: [Int]
    public let rowOrigins: [Int]

    public init(rasterWidth: Int, rasterHeight: Int, size: Int = 1024, overlap: Int = 0) throws {
        guard rasterWidth > 0, rasterHeight > 0 else {
            throw GeoSegmentError("raster has no pixels (\(rasterWidth)×\(rasterHeight))")
        }
        guard size > 0, overlap >= 0, overlap < size else {
            throw GeoSegmentError("overlap must be between 0 and \(size - 1) pixels, got \(overlap)")
        }
        self.rasterWidth = rasterWidth
        self.rasterHeight = rasterHeight
        self.size = size
        self.overlap = overlap
        columnOrigins = Self.origins(length: rasterWidth, size: size, stride: size - overlap)
        rowOrigins = Self.origins(length: rasterHeight, size: size, stride: size - overlap)
    }

    static func origins(length: Int, size: Int, stride: Int) -> [Int] {
        guard length > size else { return [0] }
        var origins: [Int] = []
        var x = 0
        while true {
            if x + size >= length {
                origins.append(length - size)  // shifted back to end at the edge
                break
            }
            origins.append(x)
            x += stride
        }
        return origins
    }

    public var rows: Int { rowOrigins.count }
    public var columns: Int { columnOrigins.count }
    public var count: Int { rows * columns }

    /// All tiles, row-major.
    public var tiles: [Tile] {
        rowOrigins.enumerated().flatMap { r, y in
            columnOrigins.enumerated().map { c, x in
                Tile(row: r, column: c, x: x, y: y, width: min(size, rasterWidth), height: min(size, rasterHeight))
            }
        }
    }

    /// The tiles a shard `index` of `count` encodes: every `count`-th tile, so shards get an even
    /// share of the raster's tiles whatever their order.
    public func tiles(shard index: Int, of count: Int) -> [Tile] {
        tiles.enumerated().filter { $0.offset % count == index }.map(\.element)
    }
}
