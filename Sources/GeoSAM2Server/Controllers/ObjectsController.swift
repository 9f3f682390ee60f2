import Foundation
import GeoIO
import GeoSegment
import Hummingbird

/// The committed objects:
/// - `GET /api/objects`: all of them (GeoJSON, store CRS), read from the output GeoPackage;
/// - `POST /api/objects`: segment a prompt (same body as `/api/segment`) and save the result;
/// - `GET /api/objects/{id}`, `DELETE /api/objects/{id}`; `DELETE /api/objects/last` (undo);
/// - `GET /api/export.gpkg`, `GET /api/export.geojson` (RFC 7946): downloads.
struct ObjectsController<Context: RequestContext> {
    let segmenter: Segmenter
    let objects: ObjectRepository
    let maxBodyBytes: Int
    let outputName: String

    var epsg: Int? { segmenter.store.manifest.source.epsg }

    func addRoutes(to router: Router<Context>) {
        refuseOtherMethods(on: router, "/api/objects", allowed: [.get, .post])
        refuseOtherMethods(on: router, "/api/objects/last", allowed: [.delete])
        refuseOtherMethods(on: router, "/api/objects/{id}", allowed: [.get, .delete])
        refuseOtherMethods(on: router, "/api/export.gpkg", allowed: [.get])
        refuseOtherMethods(on: router, "/api/export.geojson", allowed: [.get])
        router.get("/api/objects") { _, _ in
            let features = try await objects.features()
            let summary = try await objects.summary()
            return jsonResponse(GeoJSON.collection(features.map { GeoJSON.feature($0) }, epsg: epsg, extra: [
                "objects": .integer(summary.objects), "next_object_id": .integer(summary.nextObjectID),
            ]), contentType: "application/geo+json")
        }
        router.post("/api/objects") { request, _ in
            let parsed = try SegmentRequest.parse(try await readBody(request, limit: maxBodyBytes))
            let (result, _) = try await segment(parsed, segmenter: segmenter, objects: objects)
            let (record, features) = try await objects.commit(result)
            return jsonResponse(collection(result, features: features, epsg: epsg, dropping: [],
                                                   extra: ["object_id": .integer(record.objectID)]),
                                    status: .created, contentType: "application/geo+json")
        }
        router.delete("/api/objects/last") { _, _ in
            guard let (id, count) = try await objects.deleteLast() else {
                throw GeoSAM2ServerError.notFound("there is no saved object to undo")
            }
            return try jsonResponse(Deleted(deleted: id, features: count))
        }
        router.get("/api/objects/{id}") { _, context in
            let id = try objectID(context)
            let features = try await objects.features(objectID: id)
            guard !features.isEmpty else { throw GeoSAM2ServerError.notFound("there is no object \(id)") }
            return jsonResponse(GeoJSON.collection(features.map { GeoJSON.feature($0) }, epsg: epsg,
                                                       extra: ["object_id": .integer(id)]),
                                    contentType: "application/geo+json")
        }
        router.delete("/api/objects/{id}") { _, context in
            let id = try objectID(context)
            let count = try await objects.delete(objectID: id)
            guard count > 0 else { throw GeoSAM2ServerError.notFound("there is no object \(id)") }
            return try jsonResponse(Deleted(deleted: id, features: count))
        }
        router.get("/api/export.gpkg") { _, _ in
            download(try await objects.geoPackage(), contentType: "application/geopackage+sqlite3", fileName: outputName + ".gpkg")
        }
        router.get("/api/export.geojson") { _, _ in
            download(try await objects.geoJSON(), contentType: "application/geo+json", fileName: outputName + ".geojson")
        }
    }

    struct Deleted: Codable {
        var deleted: Int
        var features: Int
    }

    private func objectID(_ context: Context) throws -> Int {
        guard let text = context.parameters.get("id"), text.count <= 12, let id = Int(text), id > 0 else {
            throw GeoSAM2ServerError.badRequest("an object id is a positive integer")
        }
        return id
    }
}
