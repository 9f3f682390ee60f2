import Foundation
import SAM2

/// Tile states in a feature store.
public enum TileState: String, Sendable, Codable {
    /// Planned, not encoded yet (or its file is missing).
    case pending
    /// Features encoded and stored.
    case done
    /// Skipped because no pixel of the tile is valid (nodata, NaN, alpha 0); recorded so that it is
    /// never mistaken for a missing tile.
    case empty
}

/// `manifest.json` of a feature store: everything needed to use the features without the raster
/// and to refuse features that don't belong together.
///
/// The manifest is a pure function of the inputs (no timestamps, no host names), so that several
/// shards, or a resumed run, write byte-identical manifests.
public struct StoreManifest: Sendable, Equatable, Codable {
    public static let currentFormatVersion = 1

    public struct Source: Sendable, Equatable, Codable {
        /// The raster as given to `encode` (absolute for local files).
        public var path: String
        /// Size in bytes and SHA-256 of the first and last MiB: cheap, and changes when the file does.
        public var fingerprint: String
        public var width: Int
        public var height: Int
        public var bandCount: Int
        /// WKT2 of the CRS; nil for an image without georeferencing (pixel coordinates).
        public var crsWKT: String?
        public var epsg: Int?
        /// GDAL geotransform of the original raster.
        public var geoTransform: [Double]
        /// Each band's nodata value as text ("nan" for NaN), nil where the band has none.
        public var nodata: [String?]
    }

    public struct Encoding: Sendable, Equatable, Codable {
        public var bands: BandSelection
        public var stretch: Stretch
        /// Masked pixels (nodata, NaN, alpha 0) and padding are set to this value before encoding.
        public var nodataFill: Int
        /// Resampling factor of the encoded grid relative to the raster (0.5: half resolution).
        public var scale: Double
        /// Size and geotransform of the encoded grid.
        public var width: Int
        public var height: Int
        public var geoTransform: [Double]
        public var tileSize: Int
        public var overlap: Int
        /// "f16" or "f32".
        public var featureDType: String
    }

    public struct Model: Sendable, Equatable, Codable {
        public var preset: String?
        public var checkpointSHA256: String
        public var configuration: SAM2Configuration
        /// Absolute path of the checkpoint the store was encoded with, so that `segment` and
        /// `serve` find it without `--model` (used only while its SHA-256 still matches). Not part
        /// of the store's identity: the same file elsewhere resumes the same store. Absent in
        /// stores from before 0.2.
        public var checkpointPath: String?
        /// The image encoder's arithmetic precision (absent in stores from before 0.4: fp32).
        /// Part of the identity: a store's tiles all come from one precision.
        public var encoderPrecision: EncoderPrecision?

        /// `encoderPrecision`, fp32 for older stores.
        public var precision: EncoderPrecision { encoderPrecision ?? .float32 }
    }

    public struct TileEntry: Sendable, Equatable, Codable {
        public var id: String
        /// The pyramid level (nil: level 0, the encoded grid itself).
        public var level: Int?
        public var row: Int
        public var column: Int
        /// `[x, y, width, height]` in its level's grid; width/height below the tile size mean padding.
        public var window: [Int]
        /// Map bounds of the raster part of the tile `[minX, minY, maxX, maxY]`.
        public var bounds: [Double]
        /// Tile pixel → map transform (GDAL order).
        public var geoTransform: [Double]
        public var state: TileState
        public var file: String

        /// The level as a number (0 for the encoded grid).
        public var levelIndex: Int { level ?? 0 }

        /// `window` and `geoTransform` as a tile file's metadata records them (comma-separated),
        /// so that `verify` can tell a file from another tile or a damaged manifest entry.
        var windowText: String { window.map(String.init).joined(separator: ",") }
        var geoTransformText: String { geoTransform.map { "\($0)" }.joined(separator: ",") }
    }

    /// A coarser level of the feature pyramid: the encoded grid averaged over blocks of
    /// 2^L × 2^L pixels (the last row and column of blocks may be cut by the raster edge), with the
    /// same stretch, tiled on its own grid.
    public struct Level: Sendable, Equatable, Codable {
        /// L ≥ 1.
        public var level: Int
        /// Size of the level's grid: ⌈encoded size / 2^L⌉.
        public var width: Int
        public var height: Int
        /// Level pixel → map (GDAL order): the encoded grid's transform with 2^L times larger pixels.
        public var geoTransform: [Double]
        public var overlap: Int
        public var tiles: [TileEntry]

        /// Encoded-grid pixels per level pixel along each axis.
        public var factor: Int { 1 << level }
    }

    public var formatVersion: Int
    public var tool: String
    public var source: Source
    public var encoding: Encoding
    public var model: Model
    /// Level 0: the tiles of the encoded grid.
    public var tiles: [TileEntry]
    /// Levels 1…K of the pyramid, coarsest last; nil or empty in single-level stores (all stores
    /// from before 0.3).
    public var levels: [Level]?
    /// True once every tile is done or empty.
    public var complete: Bool
    /// The checksum every tile file carries (`"crc32c"`: ``ContentChecksum``); nil in stores
    /// from before 0.2, whose tiles may lack one. When set, a tile without a checksum is corrupt.
    public var tileChecksum: String?

    /// The checksum new stores record.
    public static let currentTileChecksum = "crc32c"

    /// The tiles of every level, level 0 first.
    public var allTiles: [TileEntry] { tiles + (levels ?? []).flatMap(\.tiles) }

    /// The number of levels above level 0.
    public var levelCount: Int { levels?.count ?? 0 }

    /// Calls `update` on every tile entry of every level.
    mutating func updateTiles(_ update: (inout TileEntry) -> Void) {
        for i in tiles.indices { update(&tiles[i]) }
        for l in (levels ?? []).indices {
            for i in levels![l].tiles.indices { update(&levels![l].tiles[i]) }
        }
    }

    /// The part of the manifest that must match for an existing store to be resumed (levels
    /// are compared on their own: a store may gain levels).
    struct Identity: Equatable {
        var source: Source
        var encoding: Encoding
        var model: Model
        var tiles: [String]
    }

    var identity: Identity {
        var model = model
        model.checkpointPath = nil
        model.encoderPrecision = model.precision
        return Identity(source: source, encoding: encoding, model: model, tiles: tiles.map(\.id))
    }

    /// A level's grid without its tile states.
    struct LevelIdentity: Equatable {
        var level: Int, width: Int, height: Int, geoTransform: [Double], overlap: Int, tiles: [String]
    }

    var levelIdentities: [LevelIdentity] {
        (levels ?? []).map { LevelIdentity(level: $0.level, width: $0.width, height: $0.height, geoTransform: $0.geoTransform,
                                           overlap: $0.overlap, tiles: $0.tiles.map(\.id)) }
    }

    /// What differs between two manifests' identities, in words.
    /// Whether `other` describes the same store as this manifest (raster, encoding, model and
    /// pyramid levels; tile states aside), or, with `orMoreLevels`, the same store with levels
    /// added above this one's.
    func describesSameStore(as other: StoreManifest, orMoreLevels: Bool = false) -> Bool {
        let (mine, theirs) = (levelIdentities, other.levelIdentities)
        return identity == other.identity && (orMoreLevels ? theirs.starts(with: mine) : theirs == mine)
    }

    func differences(from other: StoreManifest) -> [String] {
        var d: [String] = []
        if source.fingerprint != other.source.fingerprint || source.width != other.source.width || source.height != other.source.height {
            d.append("the raster (\(other.source.path) vs \(source.path))")
        }
        if model.checkpointSHA256 != other.model.checkpointSHA256 { d.append("the model checkpoint") }
        if model.precision != other.model.precision {
            d.append("the encoder precision (\(other.model.precision.rawValue) vs \(model.precision.rawValue))")
        }
        if encoding.bands != other.encoding.bands { d.append("the bands (\(other.encoding.bands.rgb) vs \(encoding.bands.rgb))") }
        if encoding.stretch != other.encoding.stretch { d.append("the stretch") }
        if encoding.scale != other.encoding.scale { d.append("the scale") }
        if encoding.overlap != other.encoding.overlap || encoding.tileSize != other.encoding.tileSize { d.append("the tile grid") }
        if encoding.featureDType != other.encoding.featureDType { d.append("the feature dtype") }
        if d.isEmpty && identity != other.identity { d.append("the encoding parameters") }
        return d
    }

    /// Deterministic JSON: sorted keys, pretty-printed, trailing newline.
    public func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(self) + Data("\n".utf8)
    }

    public static func decode(_ data: Data, from path: String) throws -> StoreManifest {
        do {
            let m = try JSONDecoder().decode(StoreManifest.self, from: data)
            guard m.formatVersion == currentFormatVersion else {
                throw GeoSegmentError("\(path): feature store format \(m.formatVersion) is not supported (this tool reads \(currentFormatVersion))")
            }
            return m
        } catch let error as GeoSegmentError {
            throw error
        } catch {
            throw GeoSegmentError("\(path): not a valid feature store manifest (\(error))")
        }
    }
}
