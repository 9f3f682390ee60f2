import Foundation
import GeoIO
import GeoSegment
import Hummingbird
import NIOCore

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
            let listing = try await objects.listing()
            let epsg = epsg
            // Joined off the cooperative pool: with many large objects this is megabytes.
            let body = try await offload {
                GeoJSON.collection(listing.fragments.map { .raw($0) }, epsg: epsg, extra: [
                    "objects": .integer(listing.objects), "next_object_id": .integer(listing.nextObjectID),
                ]).serialized()
            }
            return Response(status: .ok, headers: [.contentType: "application/geo+json", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        router.post("/api/objects") { request, _ in
            let parsed = try SegmentRequest.parse(try await readBody(request, limit: maxBodyBytes))
            let (result, _) = try await segment(parsed, segmenter: segmenter, objects: objects)
            let (record, features) = try await objects.commit(result, className: parsed.className)
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
