import SAM2

/// How `generate` segments everything on a store: the official generator's parameters for each
/// tile, and how objects are merged across tiles and pyramid levels.
public struct GenerateOptions: Sendable, Equatable, Codable {
    /// The official `SAM2AutomaticMaskGenerator` parameters, applied to every tile as one crop.
    public var masks = AutomaticMaskOptions()
    /// Two whole objects from different tiles or levels are one when their boxes' IoU is above
    /// this (the official `crop_nms_thresh`).
    public var cropNMSThreshold = 0.7
    /// A mask whose box comes this close (level pixels) to an interior tile edge may be cut by it
    /// (the official `is_box_near_crop_edge` tolerance).
    public var edgeTolerance = 20.0
    /// A cut mask lying this much inside a whole object of another tile is that object's piece.
    public var containment = 0.8
    /// Two cut masks of neighbouring tiles are pieces of one object when, inside the tiles'
    /// shared overlap, they agree on at least this fraction of the smaller one's pixels there.
    public var pieceAgreement = 0.5
    /// The pyramid levels to segment (nil: every level of the store).
    public var levels: [Int]? = nil

    public init() {}

    public func validate() throws {
        do { try masks.validate() } catch { throw GeoSegmentError("\(error)") }
        for (name, v) in [("crop NMS threshold", cropNMSThreshold), ("containment", containment), ("piece agreement", pieceAgreement)] {
            guard v.isFinite, (0...1).contains(v) else { throw GeoSegmentError("\(name) must lie in [0, 1], got \(v)") }
        }
        guard edgeTolerance.isFinite, edgeTolerance >= 0 else { throw GeoSegmentError("edge tolerance must not be negative") }
        if let levels, levels.isEmpty || levels.contains(where: { $0 < 0 }) {
            throw GeoSegmentError("levels must be a non-empty list of level numbers (0 is the encoded grid)")
        }
    }
}

/// Progress of a `generate` run.
public struct GenerateProgress: Sendable {
    /// Tiles of this run finished (segmented now or found done), and in all.
    public var finished: Int
    public var total: Int
    /// Tiles segmented by this process (for the rate), and the last one.
    public var segmented: Int
    public var lastTile: String?
    public var elapsed: Double
    /// The phase: segmenting tiles, or merging and writing objects.
    public var merging: Bool

    /// Seconds left at this run's rate of segmented tiles (nil before the first one).
    public var remainingSeconds: Double? {
        segmented > 0 ? Double(total - finished) * elapsed / Double(segmented) : nil
    }
}
