import Foundation
import GeoIO
import Kernels
import SAM2

/// A mask of one tile, on its level's grid, as `generate` keeps it between the tiles and the merge.
struct TileMask: Sendable {
    /// The mask over the tile's window (level pixels from the window's origin, window height rows).
    var runs: RowRuns
    /// The mask's box in level pixels (continuous, pixel edges at integers).
    var box: PixelBox
    var score: Float
    var stability: Float
    /// The grid point that prompted it, in level pixels.
    var point: Coordinate
    /// The box comes within the edge tolerance of an interior edge of the tile: the object may be cut.
    var cut: Bool
}

/// One tile's masks, as a part file of a `generate` run holds them.
struct TileMasks: Sendable {
    var tile: String
    var level: Int
    /// The tile's window `[x, y, width, height]` on its level's grid.
    var window: [Int]
    var masks: [TileMask]

    struct Header: Codable {
        struct Mask: Codable {
            var score: Float, stability: Float, box: [Double], point: [Double], cut: Bool, runs: Int
        }
        var tile: String, level: Int, window: [Int], masks: [Mask]
    }

    static let magic = Array("GSAM2TM1".utf8)

    /// The part file: magic, header length (UInt32 LE), JSON header, then per mask its row
    /// offsets (window height + 1) and run starts and ends as Int32 LE, and a CRC-32C (UInt32 LE)
    /// of everything before it.
    func encoded() throws -> Data {
        let header = Header(tile: tile, level: level, window: window, masks: masks.map { m in
            Header.Mask(score: m.score, stability: m.stability, box: [m.box.minX, m.box.minY, m.box.maxX, m.box.maxY],
                        point: [m.point.x, m.point.y], cut: m.cut, runs: m.runs.start.count)
        })
        let json = try JSONEncoder().encode(header)
        var data = Data(Self.magic)
        func append(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        func append(_ values: [Int32]) { values.map(\.littleEndian).withUnsafeBytes { data.append(contentsOf: $0) } }
        append(UInt32(json.count))
        data.append(json)
        for m in masks {
            append(m.runs.rowOffset.map { Int32($0) })
            append(m.runs.start)
            append(m.runs.end)
        }
        append(data.withUnsafeBytes { CRC32C.checksum($0) })
        return data
    }

    /// Reads a part file; throws on any damage (the tile is then segmented again).
    init(decoding data: Data) throws {
        let bytes = [UInt8](data)
        guard bytes.count >= Self.magic.count + 8, Array(bytes.prefix(Self.magic.count)) == Self.magic else {
            throw GeoSegmentError("not a generate part file")
        }
        let body = bytes.count - 4
        func uint32(at offset: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * UInt32($1)) } }
        guard bytes.withUnsafeBytes({ CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<body])) }) == uint32(at: body) else {
            throw GeoSegmentError("part file checksum mismatch")
        }
        var position = Self.magic.count
        func readInt32s(_ count: Int) throws -> [Int32] {
            guard count >= 0, position + 4 * count <= body else { throw GeoSegmentError("part file truncated") }
            defer { position += 4 * count }
            return (0..<count).map { Int32(bitPattern: uint32(at: position + 4 * $0)) }
        }
        let length = Int(UInt32(bitPattern: try readInt32s(1)[0]))
        guard position + length <= body else { throw GeoSegmentError("part file truncated") }
        let header = try JSONDecoder().decode(Header.self, from: Data(bytes[position..<(position + length)]))
        position += length
        guard header.window.count == 4, header.window[3] >= 0 else { throw GeoSegmentError("part file has a bad window") }
        let rows = header.window[3]
        var masks: [TileMask] = []
        for m in header.masks {
            let offsets = try readInt32s(rows + 1).map(Int.init)
            let starts = try readInt32s(m.runs), ends = try readInt32s(m.runs)
            guard offsets.first == 0, offsets.last == m.runs, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 <= $1 }),
                  m.box.count == 4, m.point.count == 2 else { throw GeoSegmentError("part file has a bad mask") }
            masks.append(TileMask(runs: RowRuns(starts: starts, ends: ends, rowOffsets: offsets),
                                  box: PixelBox(minX: m.box[0], minY: m.box[1], maxX: m.box[2], maxY: m.box[3]), score: m.score,
                                  stability: m.stability, point: Coordinate(x: m.point[0], y: m.point[1]), cut: m.cut))
        }
        guard position == body else { throw GeoSegmentError("part file has trailing bytes") }
        (tile, level, window, self.masks) = (header.tile, header.level, header.window, masks)
    }

    init(tile: String, level: Int, window: [Int], masks: [TileMask]) {
        (self.tile, self.level, self.window, self.masks) = (tile, level, window, masks)
    }
}

/// Where `generate` gets each tile's masks: every mask that passed the official filters, clipped
/// to the tile's raster part and valid pixels (before any NMS).
protocol TileMaskSource: Sendable {
    func masks(of tile: StoreManifest.TileEntry, on level: PyramidLevel) throws -> [TileMask]
}

/// The masks of SAM2's automatic mask generator on a tile's stored features.
struct AutomaticTileMasks: TileMaskSource {
    let segmenter: Segmenter
    let generator: AutomaticMaskGenerator
    let edgeTolerance: Double

    func masks(of tile: StoreManifest.TileEntry, on level: PyramidLevel) throws -> [TileMask] {
        _ = try segmenter.encodeIfPending(tile)
        switch segmenter.store.state(of: tile) {
        case .empty: return []
        case .pending: throw GeoSegmentError("tile \(tile.id) is not encoded")
        case .done: break
        }
        let (features, validity) = try segmenter.loadTile(tile)
        let masks = try rethrowing { try generator.candidates(features) }
        return masks.compactMap { m in
            TileMask.clipped(runs: RowRuns(starts: m.runs.starts, ends: m.runs.ends, rowOffsets: m.runs.rowOffsets), to: tile,
                             validity: validity, on: level, score: m.predictedIoU, stability: m.stabilityScore,
                             point: Coordinate(x: Double(m.point.x) + 0.5, y: Double(m.point.y) + 0.5), edgeTolerance: edgeTolerance)
        }
    }
}

extension TileMask {
    /// A tile-frame mask (runs over the padded tile, from its origin) cut to the tile's raster
    /// part and its valid pixels, with its box and edge flag on the level; nil when nothing is left.
    /// - Parameter point: the prompting point in tile pixels (continuous).
    static func clipped(runs: RowRuns, to tile: StoreManifest.TileEntry, validity: RowRuns?, on level: PyramidLevel,
                        score: Float, stability: Float, point: Coordinate, edgeTolerance: Double) -> TileMask? {
        var cut = runs.clipped(rows: tile.window[3], columns: tile.window[2])
        if let validity { cut = cut.intersection(validity) }
        guard let b = cut.boundingBox else { return nil }
        let (x0, y0) = (Double(tile.window[0]), Double(tile.window[1]))
        let box = PixelBox(minX: b.minX + x0, minY: b.minY + y0, maxX: b.maxX + x0, maxY: b.maxY + y0)
        return TileMask(runs: cut, box: box, score: score, stability: stability, point: Coordinate(x: point.x + x0, y: point.y + y0),
                        cut: level.touchesInteriorEdge(box, of: tile, tolerance: edgeTolerance))
    }
}

extension RowRuns {
    /// The runs of the first `rows` rows, cut at `columns`.
    func clipped(rows: Int, columns: Int) -> RowRuns {
        var builder = Builder()
        for y in 0..<min(rows, height) {
            for r in row(y) where Int(start[r]) < columns { builder.append(Int(start[r]), min(Int(end[r]), columns)) }
            builder.endRow()
        }
        for _ in min(rows, height)..<rows { builder.endRow() }
        return builder.runs
    }
}
