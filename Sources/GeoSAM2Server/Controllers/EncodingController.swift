import Foundation
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
            do {
                onDemand.focus(onMapBox: try segmenter.toStoreCRS(view.box, from: view.crs))
            } catch {
                throw GeoSAM2ServerError.unprocessable("\(error)")
            }
            return jsonResponse(.object(["on_demand": .bool(true)]))
        }
    }

    /// The encoding report: per level, tiles and how many are finished; the tile in progress with
    /// an estimate of its progress (from this run's mean time per tile of its level).
    func report() -> JSONValue {
        let status = segmenter.onDemand?.status() ?? OnDemandEncoder.Status(filesOf: segmenter.store)
        let current: JSONValue = status.current.map { c in
            .object([
                "tile": .string(c.tile), "level": .integer(c.level), "reason": .string(c.reason.rawValue),
                "elapsed_s": .number(c.elapsed), "expected_s": c.expected.map { .number($0) } ?? .null,
                // An estimate: the encoder does not report from inside a tile.
                "progress": c.expected.map { .number(min(0.99, c.elapsed / max($0, 1e-3))) } ?? .null,
            ])
        } ?? .null
        return .object([
            "on_demand": .bool(segmenter.onDemand != nil), "complete": .bool(status.complete), "idle": .bool(status.idle),
            "tiles": .integer(status.tiles), "finished": .integer(status.finished), "encoded": .integer(status.encoded),
            "levels": .array(status.levels.map {
                .object(["level": .integer($0.level), "tiles": .integer($0.tiles), "finished": .integer($0.finished)])
            }),
            "current": current, "queued": .array(status.queued.map { .string($0) }),
            "failed": .object(status.failed.mapValues { .string($0) }),
        ])
    }
}
