import Foundation
import Kernels
import SAM2

/// How `encode` spreads its work over the cores: `tilesInFlight` tiles encoded at once, each
/// splitting its arithmetic over `coresPerTile` cores.
///
/// One tile splits over cores less well than tiles run side by side: every split of its norms,
/// window attention and products ends waiting on its slowest part, and its stage-3 and stage-4
/// products have only 4096 and 1024 rows. Tiles share nothing but the read-only weights. On this
/// project's 2-core machine, 2 tiles × 1 core encode 1.96× one core's tiles per second, 1 tile ×
/// 2 cores 1.85× (docs/performance.md, "Encoding throughput"), so the default runs one tile per
/// core, as memory and ``maximumTilesInFlight`` allow, and gives each tile the cores left.
public struct EncodeConcurrency: Sendable, Equatable, CustomStringConvertible {
    public var tilesInFlight: Int
    public var coresPerTile: Int

    public init(tilesInFlight: Int, coresPerTile: Int) throws {
        guard tilesInFlight >= 1, coresPerTile >= 1 else {
            throw GeoSegmentError("tiles in flight and cores per tile must be at least 1, got \(tilesInFlight) and \(coresPerTile)")
        }
        self.tilesInFlight = tilesInFlight
        self.coresPerTile = coresPerTile
    }

    /// The most tiles the default puts in flight: past it, each tile gets several cores (64 cores:
    /// 16 tiles × 4), which keeps memory and the one reader's share of the work bounded.
    public static let maximumTilesInFlight = 16

    /// Memory budgeted per tile in flight for a trunk of width `embedDim`: Hiera-T (96) measured
    /// 154 MiB above the process's own; activations grow with the width; twice that for headroom.
    public static func memoryPerTile(embedDim: Int) -> Int { (320 << 20) * max(embedDim, 1) / 96 }

    /// The split for `cores` cores: one tile per core, at most ``maximumTilesInFlight`` and as
    /// many as half of `availableMemory` holds at ``memoryPerTile(embedDim:)`` each; the cores
    /// shared out between them. `tilesInFlight` fixes the number of tiles instead.
    public static func automatic(cores: Int = CPUAllowance.current.cores, tilesInFlight: Int? = nil, embedDim: Int = 96,
                                 availableMemory: Int? = MemoryAllowance.availableBytes) throws -> EncodeConcurrency {
        let cores = max(1, cores)
        var tiles = min(cores, maximumTilesInFlight)
        if let availableMemory { tiles = min(tiles, max(1, availableMemory / 2 / memoryPerTile(embedDim: embedDim))) }
        if let tilesInFlight { tiles = tilesInFlight }
        return try EncodeConcurrency(tilesInFlight: tiles, coresPerTile: max(1, cores / max(tiles, 1)))
    }

    public var description: String { "\(tilesInFlight) tile\(tilesInFlight == 1 ? "" : "s") in flight × \(coresPerTile) core\(coresPerTile == 1 ? "" : "s")" }
}

/// Encodes a list of tiles: reader threads read and stretch the tiles ahead (up to one per
/// tile in flight waiting, so a slow source — a COG over HTTP, a web map — overlaps the
/// arithmetic) and mark the ones without a valid pixel empty; `tilesInFlight` encoder threads
/// take the read tiles, each splitting its tile over `coresPerTile` cores, and write the features.
/// The calling thread only reports progress, in the order tiles finish.
///
/// Each tile's file is written atomically on its own, so tiles finish in any order and an error
/// or a kill loses no finished tile: the run stops at the first error, after the tiles in flight.
enum TilePipeline {
    /// What happened to one tile.
    enum Outcome { case encoded, empty, skipped }

    /// A tile read and ready to encode.
    struct ReadTile {
        let entry: StoreManifest.TileEntry
        let image: RGBImage
        let validity: [Bool]?
    }

    /// The state shared by the reader, the encoders and the reporting thread, under `condition`.
    final class Shared: @unchecked Sendable {
        // @unchecked: every field is read and written with `condition` locked.
        let condition = NSCondition()
        var ready: [ReadTile] = []
        var outcomes: [(id: String, outcome: Outcome)] = []
        var readersLeft = 0
        var running = 0
        var failure: (any Error)?
        var stopping: Bool { failure != nil }

        func fail(_ error: any Error) {
            condition.lock()
            if failure == nil { failure = error }
            condition.broadcast()
            condition.unlock()
        }
    }

    /// The raster handle, used by the reader thread only (GDAL datasets are used by one thread at a time).
    struct ReaderSource: @unchecked Sendable {
        let source: RasterSource
    }

    /// Tiles in flight one reader keeps fed: a tile's read and stretch take a few tens of
    /// milliseconds against seconds of arithmetic, so more readers are for many tiles in flight.
    static let tilesPerReader = 4

    /// Runs the tiles `entries` (pending, done or empty) of `store`; `report` gets each tile's
    /// outcome on the calling thread. `source` is the first reader's; `openSource` opens the
    /// raster again for each further reader (one per ``tilesPerReader`` tiles in flight, each
    /// taking every R-th tile).
    static func run(_ entries: [StoreManifest.TileEntry], from source: RasterSource, openSource: () throws -> RasterSource,
                    into store: FeatureStore, model: EncoderModel, concurrency: EncodeConcurrency,
                    report: (String, Outcome) -> Void) throws {
        guard !entries.isEmpty else { return }
        let shared = Shared()
        let size = store.manifest.encoding.tileSize
        let stretch = store.manifest.encoding.stretch
        let precision = try store.precision()
        let wanted = min(entries.count, (concurrency.tilesInFlight + tilesPerReader - 1) / tilesPerReader)
        var readers = [ReaderSource(source: source)]
        while readers.count < wanted { readers.append(ReaderSource(source: try openSource())) }
        let capacity = concurrency.tilesInFlight
        shared.running = readers.count + concurrency.tilesInFlight
        shared.readersLeft = readers.count

        @Sendable func finished() {
            shared.condition.lock()
            shared.running -= 1
            shared.condition.broadcast()
            shared.condition.unlock()
        }
        @Sendable func record(_ id: String, _ outcome: Outcome) {
            shared.condition.lock()
            shared.outcomes.append((id, outcome))
            shared.condition.broadcast()
            shared.condition.unlock()
        }

        let readerCount = readers.count
        for (r, reader) in readers.enumerated() {
            start {
                defer {
                    shared.condition.lock()
                    shared.readersLeft -= 1
                    shared.condition.broadcast()
                    shared.condition.unlock()
                    finished()
                }
                do {
                    for entry in stride(from: r, to: entries.count, by: readerCount).map({ entries[$0] }) {
                        shared.condition.lock()
                        while shared.ready.count >= capacity, !shared.stopping { shared.condition.wait() }
                        let stop = shared.stopping
                        shared.condition.unlock()
                        if stop { return }
                        switch store.state(of: entry) {
                        case .done, .empty:
                            record(entry.id, .skipped)
                            continue
                        case .pending:
                            break
                        }
                        let tile = Tile(row: entry.row, column: entry.column, x: entry.window[0], y: entry.window[1],
                                        width: entry.window[2], height: entry.window[3])
                        let (pixels, validCount, valid) = try reader.source.readTile(tile, size: size, stretch: stretch, level: entry.levelIndex)
                        guard validCount > 0 else {
                            try store.markEmpty(entry)
                            record(entry.id, .empty)
                            continue
                        }
                        let image = try rethrowing { try RGBImage(width: size, height: size, pixels: pixels) }
                        shared.condition.lock()
                        shared.ready.append(ReadTile(entry: entry, image: image, validity: validCount < valid.count ? valid : nil))
                        shared.condition.broadcast()
                        shared.condition.unlock()
                    }
                } catch {
                    shared.fail(error)
                }
            }
        }
        for _ in 0..<concurrency.tilesInFlight {
            start {
                defer { finished() }
                while true {
                    shared.condition.lock()
                    while shared.ready.isEmpty, shared.readersLeft > 0, !shared.stopping { shared.condition.wait() }
                    guard !shared.stopping, !shared.ready.isEmpty else {
                        shared.condition.unlock()
                        return
                    }
                    let next = shared.ready.removeFirst()
                    shared.condition.broadcast()  // the reader may read the next tile
                    shared.condition.unlock()
                    do {
                        let features = try Parallel.withWorkers(concurrency.coresPerTile) {
                            try rethrowing("tile \(next.entry.id)") { try model.model.encode(next.image, precision: precision) }
                        }
                        try store.writeFeatures(features, validity: next.validity, for: next.entry)
                        record(next.entry.id, .encoded)
                    } catch {
                        shared.fail(error)
                        return
                    }
                }
            }
        }

        // Report as tiles finish, until every thread has stopped.
        shared.condition.lock()
        while true {
            while shared.outcomes.isEmpty, shared.running > 0 { shared.condition.wait() }
            let batch = shared.outcomes
            shared.outcomes.removeAll()
            let done = shared.running == 0
            shared.condition.unlock()
            for (id, outcome) in batch { report(id, outcome) }
            shared.condition.lock()
            if done, shared.outcomes.isEmpty { break }
        }
        let failure = shared.failure
        shared.condition.unlock()
        if let failure { throw failure }
    }

    /// Starts a thread with the main thread's stack size (the encoder's recursion is shallow, but
    /// Foundation's default for secondary threads is small).
    private static func start(_ body: @escaping @Sendable () -> Void) {
        let thread = Thread(block: body)
        thread.stackSize = 8 << 20
        thread.start()
    }
}
