import Foundation
import GeoIO

/// Encodes the pending tiles of a store while it is served, so that the first click does not
/// wait for the whole raster: the coarsest level first (the whole raster in a few tiles), then
/// the other tiles nearest the user's view first, and any tile a prompt needs at once, ahead of
/// that background work.
///
/// One thread encodes one tile at a time (the encoder already uses every core). Every tile goes
/// into the store as `geosam2 encode` writes it (atomically, checksummed), so stopping the server
/// loses at most the tile in progress and a later `encode` or `serve` resumes. Once no tile is
/// pending the manifest is finalized.
///
/// Thread-safe: prompts call ``ensureEncoded(_:)`` from request threads, the web UI moves the
/// focus with ``focus(onMapBox:)`` and polls ``status()``.
public final class OnDemandEncoder: @unchecked Sendable {
    // @unchecked: every mutable member is guarded by `condition`; the rest is immutable.

    /// Why a tile is being encoded.
    public enum Reason: String, Sendable {
        /// A prompt needs it.
        case prompt
        /// Filling the store in the background.
        case background
    }

    /// What the encoder is doing and how far the store is.
    public struct Status: Sendable {
        public struct Level: Sendable {
            public var level: Int
            public var tiles: Int
            /// Tiles done or found empty.
            public var finished: Int
        }
        public struct Current: Sendable {
            public var tile: String
            public var level: Int
            public var reason: Reason
            /// Seconds since this tile's encoding started.
            public var elapsed: Double
            /// What a tile of this level has taken in this run (nil before the first one).
            public var expected: Double?
        }
        public var levels: [Level]
        public var current: Current?
        /// Tiles prompts are waiting for, in the order they are encoded (the newest prompt's first).
        public var queued: [String]
        /// Tiles that could not be encoded, with why (retried when a prompt needs them).
        public var failed: [String: String]
        /// Tiles this run encoded (or found empty).
        public var encoded: Int
        public var complete: Bool
        /// Nothing left to do but tiles that failed (they wait for a prompt to retry them).
        public var idle: Bool
        public var tiles: Int { levels.reduce(0) { $0 + $1.tiles } }
        public var finished: Int { levels.reduce(0) { $0 + $1.finished } }

        /// What a store nothing is encoding reports: its tiles as their files say, and nothing
        /// to do (`idle`).
        public init(filesOf store: FeatureStore) {
            let tiles = store.manifest.allTiles.map { ($0.levelIndex, store.state(of: $0) != .pending) }
            levels = Self.levels(tiles)
            current = nil
            queued = []
            failed = [:]
            encoded = 0
            idle = true
            complete = tiles.allSatisfy(\.1)
        }

        init(levels: [Level], current: Current?, queued: [String], failed: [String: String], encoded: Int, complete: Bool, idle: Bool) {
            (self.levels, self.current, self.queued, self.failed) = (levels, current, queued, failed)
            (self.encoded, self.complete, self.idle) = (encoded, complete, idle)
        }

        /// Per level, how many tiles there are and how many are finished.
        static func levels(_ tiles: [(level: Int, finished: Bool)]) -> [Level] {
            var levels: [Int: Level] = [:]
            for t in tiles {
                levels[t.level, default: Level(level: t.level, tiles: 0, finished: 0)].tiles += 1
                if t.finished { levels[t.level]?.finished += 1 }
            }
            return levels.values.sorted { $0.level < $1.level }
        }
    }

    public let store: FeatureStore
    /// Held while serving: `encode --force` cannot replace the store's tiles under it.
    private let writerLock: FeatureStore.WriterLock
    let source: RasterSource
    let model: EncoderModel
    let log: @Sendable (String) -> Void
    /// Every tile with its level and its footprint on the encoded grid (level-0 pixels).
    private let entries: [(entry: StoreManifest.TileEntry, level: Int, footprint: PixelBox)]
    private let inverse: GeoTransform?

    private let condition = NSCondition()
    private var pending: Set<String>
    private var requested: [String] = []
    private var failures: [String: String] = [:]
    /// The centre of the user's view on the encoded grid (nil: the raster's centre).
    private var focusPoint: (x: Double, y: Double)?
    private var current: (index: Int, reason: Reason, started: UInt64)?
    private var durations: [Int: (count: Int, seconds: Double)] = [:]
    private var encodedCount = 0
    private var stopping = false
    private var finalized = false

    /// Starts encoding the store's pending tiles in the background.
    /// - Parameters:
    ///   - source: the store's raster, opened as the store reads it (``RasterEncoder/openSource(of:)``).
    ///   - model: the checkpoint the store records.
    ///   - log: one line per failed tile and when the store is complete.
    public init(store: FeatureStore, source: RasterSource, model: EncoderModel, log: @escaping @Sendable (String) -> Void = { _ in }) throws {
        guard model.checkpointSHA256 == store.manifest.model.checkpointSHA256 else {
            throw GeoSegmentError("the model is not the checkpoint the store was encoded with (SHA-256 \(store.manifest.model.checkpointSHA256.prefix(12))…)")
        }
        writerLock = try store.lockForWriting()
        self.store = store
        self.source = source
        self.model = model
        self.log = log
        let m = store.manifest
        var all: [(StoreManifest.TileEntry, Int, PixelBox)] = []
        for entry in RasterEncoder.encodingOrder(of: m) {
            let f = Double(1 << entry.levelIndex), w = entry.window.map(Double.init)
            all.append((entry, entry.levelIndex, PixelBox(minX: w[0] * f, minY: w[1] * f, maxX: (w[0] + w[2]) * f, maxY: (w[1] + w[3]) * f)))
        }
        entries = all
        inverse = GeoTransform(coefficients: m.encoding.geoTransform)?.inverse
        pending = Set(all.filter { store.state(of: $0.0) == .pending }.map(\.0.id))
        let thread = Thread { [self] in work() }
        thread.name = "geosam2.encode-on-demand"
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Whether some tile is still to be encoded.
    public var isComplete: Bool { condition.withLock { pending.isEmpty } }

    /// Returns once `tile` is encoded (or found empty), encoding it ahead of the background work
    /// when it is pending; throws when it cannot be encoded or the encoder stops first.
    public func ensureEncoded(_ tile: StoreManifest.TileEntry) throws {
        condition.lock()
        defer { condition.unlock() }
        guard pending.contains(tile.id) else { return }
        failures[tile.id] = nil  // a prompt retries a tile that failed in the background
        // The newest prompt first: the user has moved on from the older ones (the page aborts
        // their requests), and those still waiting are served right after.
        requested.removeAll { $0 == tile.id }
        requested.insert(tile.id, at: 0)
        condition.broadcast()
        while pending.contains(tile.id), failures[tile.id] == nil, !stopping { condition.wait() }
        if let failure = failures[tile.id] { throw GeoSegmentError("tile \(tile.id) could not be encoded: \(failure)") }
        if pending.contains(tile.id) { throw GeoSegmentError("the server is stopping; tile \(tile.id) was not encoded") }
    }

    /// Moves the background work to the tiles nearest the centre of `box` (store CRS) first.
    public func focus(onMapBox box: MapBox) {
        guard let inverse else { return }
        let c = inverse.pixelToMap(x: (box.minX + box.maxX) / 2, y: (box.minY + box.maxY) / 2)
        guard c.x.isFinite, c.y.isFinite else { return }
        condition.withLock { focusPoint = (c.x, c.y) }
    }

    /// Where the store stands and what is being encoded.
    public func status() -> Status {
        condition.withLock {
            let levels = Status.levels(entries.map { ($0.level, !pending.contains($0.entry.id)) })
            let now = DispatchTime.now().uptimeNanoseconds
            let running = current.map { c -> Status.Current in
                let e = entries[c.index]
                return Status.Current(tile: e.entry.id, level: e.level, reason: c.reason, elapsed: Double(now - c.started) / 1e9,
                                      expected: expectedSeconds(level: e.level))
            }
            return Status(levels: levels, current: running, queued: requested,
                          failed: failures, encoded: encodedCount, complete: pending.isEmpty,
                          idle: !pending.isEmpty && current == nil && pending.allSatisfy { failures[$0] != nil })
        }
    }

    /// Stops after the tile in progress; prompts still waiting get an error.
    public func stop() {
        condition.withLock {
            stopping = true
            condition.broadcast()
        }
    }

    // MARK: The encoding thread

    private func work() {
        while true {
            condition.lock()
            var next = nextTile()
            while next == nil, !stopping {
                // Nothing to do but failed tiles: those another process has written since are
                // finished (looked at again every 30 s, or when a prompt arrives).
                for id in failures.keys {
                    if let e = entries.first(where: { $0.entry.id == id }), store.state(of: e.entry) != .pending {
                        failures[id] = nil
                        pending.remove(id)
                    }
                }
                if pending.isEmpty { finalize() }
                _ = condition.wait(until: Date().addingTimeInterval(30))
                next = nextTile()
            }
            guard let (index, reason) = next, !stopping else {
                condition.unlock()
                return
            }
            let start = DispatchTime.now().uptimeNanoseconds
            current = (index, reason, start)
            condition.unlock()

            let entry = entries[index].entry
            // Whether this thread encoded it: another process (`encode` on the same store) may
            // have written it meanwhile, which costs nothing and says nothing of the time a tile takes.
            let outcome = Result { () throws -> Bool in
                guard store.state(of: entry) == .pending else { return false }
                _ = try RasterEncoder.encode(entry, from: source, into: store, model: model)
                return true
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9

            condition.lock()
            current = nil
            requested.removeAll { $0 == entry.id }
            switch outcome {
            case .success(let encoded):
                pending.remove(entry.id)
                if encoded {
                    encodedCount += 1
                    durations[entries[index].level, default: (0, 0)].count += 1
                    durations[entries[index].level, default: (0, 0)].seconds += seconds
                }
            case .failure(let error):
                failures[entry.id] = "\(error)"
                log("warning: tile \(entry.id) could not be encoded: \(error)")
            }
            if pending.isEmpty { finalize() }
            condition.broadcast()
            condition.unlock()
        }
    }

    /// Records a full store in its manifest, once (caller holds the lock).
    private func finalize() {
        guard !finalized else { return }
        do {
            if try store.finalizeIfComplete() {
                finalized = true
                log("every tile of \(store.url.path) is encoded")
            }
        } catch {
            log("warning: the store's manifest was not finalized: \(error)")
        }
    }

    /// The next tile to encode (caller holds the lock).
    private func nextTile() -> (Int, Reason)? {
        let focus = focusPoint ?? (Double(store.manifest.encoding.width) / 2, Double(store.manifest.encoding.height) / 2)
        return Self.nextTile(among: entries.map { ($0.entry.id, $0.level, $0.footprint) }, pending: pending, failed: Set(failures.keys),
                             requested: requested, focus: focus)
    }

    /// The newest prompt's pending tile; else a pending tile of the coarsest level; else the
    /// pending tile whose footprint (level-0 pixels) is nearest `focus`, the finer level first
    /// among equals, so that the view gets every level of its own tiles before the work spreads
    /// out. Tiles that failed wait for a prompt to retry them.
    static func nextTile(among tiles: [(id: String, level: Int, footprint: PixelBox)], pending: Set<String>, failed: Set<String>,
                         requested: [String], focus: (x: Double, y: Double)) -> (Int, Reason)? {
        for id in requested where pending.contains(id) && !failed.contains(id) {
            if let i = tiles.firstIndex(where: { $0.id == id }) { return (i, .prompt) }
        }
        let top = tiles.map(\.level).max() ?? 0
        var best: (index: Int, key: (Int, Double, Int))?
        for (i, t) in tiles.enumerated() where pending.contains(t.id) && !failed.contains(t.id) {
            let b = t.footprint
            let dx = max(b.minX - focus.x, 0, focus.x - b.maxX), dy = max(b.minY - focus.y, 0, focus.y - b.maxY)
            let key = (t.level == top ? 0 : 1, (dx * dx + dy * dy).squareRoot(), t.level)
            if let current = best, !(key < current.key) { continue }
            best = (i, key)
        }
        return best.map { ($0.index, .background) }
    }

    /// The mean time of this level's tiles in this run, else of any tile's.
    private func expectedSeconds(level: Int) -> Double? {
        if let d = durations[level], d.count > 0 { return d.seconds / Double(d.count) }
        let all = durations.values.reduce((0, 0.0)) { ($0.0 + $1.count, $0.1 + $1.seconds) }
        return all.0 > 0 ? all.1 / Double(all.0) : nil
    }
}
