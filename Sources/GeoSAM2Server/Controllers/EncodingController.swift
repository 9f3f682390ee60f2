import Foundation
import GeoIO
import GeoSegment
import Hummingbird

/// `GET /api/encoding` (how far the store is, and the tile being encoded) and `PUT /api/view`
/// (the user's view, whose tiles encoding on demand fills first).
struct EncodingController<Context: RequestContext> {
    let segmenter: Segmenter
    let maxBodyBytes: Int

    func addRoutes(to router: Router<Context>) {
        refuseOtherMethods(on: router, "/api/encoding", allowed: [.get])
        refuseOtherMethods(on: router, "/api/view", allowed: [.put])
        router.get("/api/encoding") { _, _ in jsonResponse(report()) }
        router.put("/api/view") { request, _ in
            let view = try ViewRequest.parse(try await readBody(request, limit: maxBodyBytes))
            guard let onDemand = segmenter.onDemand else { return jsonResponse(.object(["on_demand": .bool(false)])) }
            let corners = [Coordinate(x: view.box.minX, y: view.box.minY), Coordinate(x: view.box.maxX, y: view.box.minY),
                           Coordinate(x: view.box.minX, y: view.box.maxY), Coordinate(x: view.box.maxX, y: view.box.maxY)]
            let moved: [Coordinate]
            do {
                moved = try segmenter.toStoreCRS(corners, from: view.crs)
            } catch {
                throw GeoSAM2ServerError.unprocessable("\(error)")
            }
            onDemand.focus(onMapBox: MapBox(minX: moved.map(\.x).min() ?? 0, minY: moved.map(\.y).min() ?? 0,
                                            maxX: moved.map(\.x).max() ?? 0, maxY: moved.map(\.y).max() ?? 0))
            return jsonResponse(.object(["on_demand": .bool(true)]))
        }
    }

    /// The encoding report: per level, tiles and how many are finished; the tile in progress with
    /// an estimate of its progress (from this run's mean time per tile of its level).
    func report() -> JSONValue {
        guard let status = segmenter.onDemand?.status() else {
            let store = segmenter.store
            let m = store.manifest
            var levels: [JSONValue] = []
            var finishedAll = 0, total = 0
            for (level, tiles) in [(0, m.tiles)] + (m.levels ?? []).map({ ($0.level, $0.tiles) }) {
                let finished = tiles.filter { store.state(of: $0) != .pending }.count
                levels.append(.object(["level": .integer(level), "tiles": .integer(tiles.count), "finished": .integer(finished)]))
                finishedAll += finished
                total += tiles.count
            }
            return .object([
                "on_demand": .bool(false), "complete": .bool(finishedAll == total), "idle": .bool(true), "tiles": .integer(total),
                "finished": .integer(finishedAll), "encoded": .integer(0), "levels": .array(levels), "current": .null,
                "queued": .array([]), "failed": .object([:]),
            ])
        }
        let current: JSONValue = status.current.map { c in
            .object([
                "tile": .string(c.tile), "level": .integer(c.level), "reason": .string(c.reason.rawValue),
                "elapsed_s": .number(c.elapsed), "expected_s": c.expected.map { .number($0) } ?? .null,
                // An estimate: the encoder does not report from inside a tile.
                "progress": c.expected.map { .number(min(0.99, c.elapsed / max($0, 1e-3))) } ?? .null,
            ])
        } ?? .null
        return .object([
            "on_demand": .bool(true), "complete": .bool(status.complete), "idle": .bool(status.idle), "tiles": .integer(status.tiles),
            "finished": .integer(status.finished), "encoded": .integer(status.encoded),
            "levels": .array(status.levels.map {
                .object(["level": .integer($0.level), "tiles": .integer($0.tiles), "finished": .integer($0.finished)])
            }),
            "current": current, "queued": .array(status.queued.map { .string($0) }),
            "failed": .object(status.failed.mapValues { .string($0) }),
        ])
    }
}
