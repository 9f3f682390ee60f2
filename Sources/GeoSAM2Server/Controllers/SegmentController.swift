import Dispatch
import Foundation
import GeoIO
import GeoSegment
import Hummingbird

/// `POST /api/segment`: prompts → polygons, without saving (the preview, and scripts).
struct SegmentController<Context: RequestContext> {
    let segmenter: Segmenter
    let objects: ObjectRepository
    let maxBodyBytes: Int

    func addRoutes(to router: Router<Context>) {
        refuseOtherMethods(on: router, "/api/segment", allowed: [.post])
        router.post("/api/segment") { request, _ in
            let start = DispatchTime.now().uptimeNanoseconds
            let parsed = try SegmentRequest.parse(try await readBody(request, limit: maxBodyBytes))
            let (result, features) = try await segment(parsed, segmenter: segmenter, objects: objects)
            var answer = collection(result, features: features, epsg: segmenter.store.manifest.source.epsg, dropping: [], extra: [:])
            // Everything but sending the answer.
            if case var .object(members) = answer {
                members["server_ms"] = .number(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
                answer = .object(members)
            }
            return jsonResponse(answer, contentType: "application/geo+json")
        }
    }
}

/// Segments off the cooperative pool; returns the result and its features as they would be saved
/// (object id 0).
func segment(_ parsed: SegmentRequest, segmenter: Segmenter, objects: ObjectRepository) async throws -> (SegmentedObject, [Feature]) {
    try await offload {
        let result = try segmenter.segment(parsed.prompt, options: parsed.options, multimask: parsed.multimask, candidate: parsed.candidate)
        let srs = try segmenter.store.manifest.source.crsWKT.map { try SpatialReference(wkt: $0) }
        var features = try VectorExporter.features(of: objects.record(result, objectID: 0), srs: srs)
        for i in features.indices { features[i].attributes["object_id"] = .null }
        return (result, features)
    }
}

/// A result as a FeatureCollection in the store's CRS, with what the decoder said at the top level.
func collection(_ result: SegmentedObject, features: [Feature], epsg: Int?, dropping: Set<String>,
                extra: [String: JSONValue]) -> JSONValue {
    var members: [String: JSONValue] = [
        "score": .number(Double(result.score)),
        "candidate": .integer(result.candidate),
        "candidate_scores": .array(result.candidateScores.map { .number(Double($0)) }),
        "tile": .string(result.tile),
        "level": .integer(result.level),
        "tiles": .array(result.tiles.map { .string($0) }),
        "encoded_on_demand": .array(result.encodedOnDemand.map { .string($0) }),
        "clipped": .bool(result.clipped),
        "decode_ms": .number(result.decodeMilliseconds),
        "polygonize_ms": .number(result.polygonizeMilliseconds),
    ]
    for (key, value) in extra { members[key] = value }
    return GeoJSON.collection(features.map { GeoJSON.feature($0, dropping: dropping) }, epsg: epsg, extra: members)
}

/// The request body, refusing more than `limit` bytes.
func readBody(_ request: Request, limit: Int) async throws -> Data {
    if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > limit {
        throw GeoSAM2ServerError(.contentTooLarge, "the request body is larger than \(limit) bytes")
    }
    do {
        let buffer = try await request.body.collect(upTo: limit)
        return Data(buffer.readableBytesView)
    } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
        throw GeoSAM2ServerError(.contentTooLarge, "the request body is larger than \(limit) bytes")
    }
}
