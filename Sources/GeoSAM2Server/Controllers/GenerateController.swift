import Foundation
import GeoIO
import GeoSegment
import Hummingbird

/// "Segment everything in view":
/// - `POST /api/generate` (``GenerateRequest``): starts a job on the tiles meeting the box → 202
///   with its id; one job runs at a time (409 meanwhile);
/// - `GET /api/generate/{id}`: its progress (`running`, `done`, `failed`, `cancelled`);
/// - `GET /api/generate/{id}/objects`: the objects found (GeoJSON, store CRS, each with a
///   `generated_id`), a layer the user can save from;
/// - `POST /api/generate/{id}/save` (`{"ids": [generated ids]}`, or `{}` for all): saves them to
///   the output as new objects; `DELETE /api/generate/{id}`: cancels or forgets a job.
///
/// Jobs keep their tiles' masks beside the output (`OUT.generate-parts/`), so a later job over
/// the same tiles with the same parameters only merges.
struct GenerateController<Context: RequestContext> {
    let jobs: GenerateJobs
    let objects: ObjectRepository
    let maxBodyBytes: Int
    var epsg: Int? { jobs.segmenter.store.manifest.source.epsg }

    func addRoutes(to router: Router<Context>) {
        refuseOtherMethods(on: router, "/api/generate", allowed: [.post])
        refuseOtherMethods(on: router, "/api/generate/{id}", allowed: [.get, .delete])
        refuseOtherMethods(on: router, "/api/generate/{id}/objects", allowed: [.get])
        refuseOtherMethods(on: router, "/api/generate/{id}/save", allowed: [.post])
        router.post("/api/generate") { request, _ in
            let parsed = try GenerateRequest.parse(try await readBody(request, limit: maxBodyBytes))
            let job = try await offload { try jobs.start(parsed) }
            return jsonResponse(job.report, status: .accepted)
        }
        router.get("/api/generate/{id}") { _, context in
            jsonResponse(try jobs.job(try jobID(context)).report)
        }
        router.delete("/api/generate/{id}") { _, context in
            jsonResponse(try jobs.cancel(try jobID(context)).report)
        }
        router.get("/api/generate/{id}/objects") { _, context in
            let job = try jobs.job(try jobID(context))
            guard job.status == .done else { throw GeoSAM2ServerError(.conflict, "job \(job.id) is \(job.status.rawValue), not done") }
            let epsg = epsg
            let body = try await offload {
                let srs = try jobs.segmenter.store.manifest.source.crsWKT.map { try SpatialReference(wkt: $0) }
                var features: [JSONValue] = []
                for (i, object) in job.objects.enumerated() {
                    for var feature in try VectorExporter.features(of: objects.record(object, objectID: 0), srs: srs) {
                        feature.attributes["object_id"] = .null
                        feature.attributes["generated_id"] = .integer(i + 1)
                        feature.attributes["saved_as"] = job.saved[i + 1].map { .integer($0) } ?? .null
                        features.append(GeoJSON.feature(feature, dropping: []))
                    }
                }
                return GeoJSON.collection(features, epsg: epsg, extra: ["job": .integer(job.id), "objects": .integer(job.objects.count)])
                    .serialized()
            }
            return Response(status: .ok, headers: [.contentType: "application/geo+json", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(string: body)))
        }
        router.post("/api/generate/{id}/save") { request, context in
            let id = try jobID(context)
            let body = try JSONBody.object(try await readBody(request, limit: maxBodyBytes), keys: ["ids"])
            let job = try jobs.job(id)
            guard job.status == .done else { throw GeoSAM2ServerError(.conflict, "job \(job.id) is \(job.status.rawValue), not done") }
            var wanted = Array(1...max(job.objects.count, 1)).filter { $0 <= job.objects.count }
            if let ids = body["ids"], ids != .null {
                guard case .array(let values) = ids else { throw GeoSAM2ServerError.badRequest("ids must be a list of generated ids") }
                wanted = try values.map { v in
                    guard case .integer(let n) = v, (1...job.objects.count).contains(n) else {
                        throw GeoSAM2ServerError.badRequest("ids must be generated ids from 1 to \(job.objects.count)")
                    }
                    return n
                }
            }
            var saved: [JSONValue] = []
            for n in wanted where job.saved[n] == nil {
                let (record, _) = try await objects.commit(job.objects[n - 1])
                jobs.markSaved(job: id, generated: n, objectID: record.objectID)
                saved.append(.object(["generated_id": .integer(n), "object_id": .integer(record.objectID)]))
            }
            return jsonResponse(.object(["saved": .array(saved)]), status: .created)
        }
    }

    private func jobID(_ context: Context) throws -> Int {
        guard let text = context.parameters.get("id"), text.count <= 12, let id = Int(text), id > 0 else {
            throw GeoSAM2ServerError.badRequest("a job id is a positive integer")
        }
        return id
    }
}

/// The segment-everything jobs of one server: one runs at a time, on its own thread; the last few
/// finished ones are kept with their objects.
final class GenerateJobs: @unchecked Sendable {
    // @unchecked: `jobs` and `nextID` are guarded by `lock`; the rest is immutable.
    enum Status: String, Sendable { case running, done, failed, cancelled }

    struct Job: Sendable {
        let id: Int
        var status: Status = .running
        var total: Int
        /// The run's last report (nil before its first).
        var progress: GenerateProgress?
        var error: String?
        var objects: [SegmentedObject] = []
        var cancelRequested = false
        /// Generated id → the object id it was saved under.
        var saved: [Int: Int] = [:]
        let started = Date()
        var elapsed: Double = 0

        var report: JSONValue {
            var members: [String: JSONValue] = [
                "id": .integer(id), "status": .string(status.rawValue), "done": .integer(progress?.finished ?? 0), "total": .integer(total),
                "segmented": .integer(progress?.segmented ?? 0), "elapsed_s": .number((elapsed * 10).rounded() / 10),
                "url": .string("/api/generate/\(id)"),
            ]
            if status == .running, let eta = progress?.remainingSeconds { members["eta_s"] = .number((eta * 10).rounded() / 10) }
            if let error { members["error"] = .string(error) }
            if status == .done {
                members["objects"] = .integer(objects.count)
                members["objects_url"] = .string("/api/generate/\(id)/objects")
            }
            return .object(members)
        }
    }

    let segmenter: Segmenter
    /// Parts of all jobs, one subdirectory per parameter set.
    let partsRoot: URL
    /// The most tiles one job may cover (beyond: `geosam2 generate`).
    let maxTiles: Int
    private let lock = NSLock()
    private var jobs: [Int: Job] = [:]
    private var nextID = 1
    static let kept = 4

    init(segmenter: Segmenter, partsRoot: URL, maxTiles: Int = 64) {
        self.segmenter = segmenter
        self.partsRoot = partsRoot
        self.maxTiles = maxTiles
    }

    func start(_ request: GenerateRequest) throws -> Job {
        let generator = try RasterMaskGenerator(segmenter: segmenter, options: request.options)
        let tiles: [StoreManifest.TileEntry]
        do { tiles = try generator.tiles(meeting: request.view.box, crs: request.view.crs) } catch {
            throw GeoSAM2ServerError.unprocessable("\(error)")
        }
        guard !tiles.isEmpty else { throw GeoSAM2ServerError.unprocessable("the box meets no tile of the raster") }
        guard tiles.count <= maxTiles else {
            throw GeoSAM2ServerError.unprocessable("the box meets \(tiles.count) tiles (at most \(maxTiles) here): zoom in, or run `geosam2 generate` on the store")
        }
        let job: Job = try {
            lock.lock()
            defer { lock.unlock() }
            if let running = jobs.values.first(where: { $0.status == .running }) {
                throw GeoSAM2ServerError(.conflict, "job \(running.id) is still running; wait for it or cancel it (DELETE /api/generate/\(running.id))")
            }
            let job = Job(id: nextID, total: tiles.count)
            nextID += 1
            jobs[job.id] = job
            // Keep the newest finished jobs only (their objects are held in memory).
            let finished = jobs.values.filter { $0.status != .running }.map(\.id).sorted()
            for old in finished.dropLast(Self.kept) { jobs[old] = nil }
            return job
        }()
        let work = partsRoot.appendingPathComponent(generator.identityKey, isDirectory: true)
        let thread = Thread { [self] in
            var found: [SegmentedObject] = []
            do {
                _ = try generator.generate(workDirectory: work, bbox: request.view.box, crs: request.view.crs, polygonOptions: request.polygons,
                                           progress: { p in self.update(job.id) { $0.progress = p } },
                                           isCancelled: { self.isCancelRequested(job.id) }) { found.append($0) }
                update(job.id) { $0.status = .done; $0.objects = found }
            } catch {
                update(job.id) { $0.status = $0.cancelRequested ? .cancelled : .failed; $0.error = "\(error)" }
            }
        }
        thread.stackSize = 4 << 20
        thread.start()
        return job
    }

    private func update(_ id: Int, _ change: (inout Job) -> Void) {
        lock.lock()
        defer { lock.unlock() }
        guard var job = jobs[id] else { return }
        change(&job)
        job.elapsed = Date().timeIntervalSince(job.started)
        jobs[id] = job
    }

    private func isCancelRequested(_ id: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        return jobs[id]?.cancelRequested ?? true
    }

    func job(_ id: Int) throws -> Job {
        lock.lock()
        defer { lock.unlock() }
        guard let job = jobs[id] else { throw GeoSAM2ServerError.notFound("there is no generate job \(id)") }
        return job
    }

    /// Cancels a running job (it stops after its current tile) or forgets a finished one.
    func cancel(_ id: Int) throws -> Job {
        lock.lock()
        defer { lock.unlock() }
        guard var job = jobs[id] else { throw GeoSAM2ServerError.notFound("there is no generate job \(id)") }
        if job.status == .running {
            job.cancelRequested = true
            jobs[id] = job
        } else {
            jobs[id] = nil
        }
        return job
    }

    func markSaved(job id: Int, generated: Int, objectID: Int) {
        update(id) { $0.saved[generated] = objectID }
    }
}
