import Foundation
import GeoIO

/// An interactive segmentation: prompts for the current object, a preview, and objects committed
/// one at a time to an output file, with undo for both.
///
/// Not thread-safe: one user drives one session (the server wraps it in an actor).
public final class SegmentationSession {
    public let segmenter: Segmenter
    /// Where committed objects are saved (GeoPackage, Shapefile, GeoJSON or FlatGeobuf); nil keeps them in memory.
    public let outputPath: String?
    public let outputLayer: String?
    public var options: PolygonOptions
    public var multimask: Bool

    /// The current object's prompts, in the store's CRS unless `crs` is set.
    public private(set) var prompt = ObjectPrompt()
    /// Commits of this session, oldest first.
    public private(set) var committed: [ObjectRecord] = []
    private var nextObjectID: Int

    public init(segmenter: Segmenter, outputPath: String?, outputLayer: String? = nil,
                options: PolygonOptions = PolygonOptions(), multimask: Bool = false) throws {
        self.segmenter = segmenter
        self.outputPath = outputPath
        self.outputLayer = outputLayer
        self.options = options
        self.multimask = multimask
        nextObjectID = try outputPath.map { try VectorExporter.nextObjectID(in: $0, layer: outputLayer) } ?? 1
    }

    public func add(_ point: MapPoint) { prompt.points.append(point) }

    public func setBox(_ box: MapBox?) { prompt.box = box }

    /// Removes the last point (or the box when there are no points).
    public func undoPrompt() {
        if !prompt.points.isEmpty { prompt.points.removeLast() } else { prompt.box = nil }
    }

    public func clear() { prompt = ObjectPrompt(points: [], box: nil, crs: prompt.crs) }

    /// The mask and polygons the current prompts give, or nil without prompts.
    public func preview() throws -> SegmentedObject? {
        guard !prompt.isEmpty else { return nil }
        return try segmenter.segment(prompt, options: options, multimask: multimask)
    }

    /// Segments the current object, saves it, and starts a new one.
    @discardableResult
    public func commit(created: Date = Date()) throws -> ObjectRecord {
        guard let result = try preview() else { throw GeoSegmentError("nothing to save: add a point or a box first") }
        guard !result.polygons.isEmpty else { throw GeoSegmentError("the mask is empty after filtering: nothing to save") }
        let m = segmenter.store.manifest
        var record = ObjectRecord(objectID: nextObjectID, result: result, source: m.source.path,
                                  model: "\(m.model.preset ?? "custom") sha256:\(m.model.checkpointSHA256)", created: created)
        if let outputPath {
            // The file gives the id (its counter only grows, see `VectorExporter.appendNew`).
            record = try VectorExporter.appendNew([record], to: outputPath, layer: outputLayer, srs: segmenter.spatialReference).first ?? record
        }
        committed.append(record)
        nextObjectID = record.objectID + 1
        clear()
        return record
    }

    /// Removes the last object committed in this session from the output; returns its id.
    @discardableResult
    public func undoCommit() throws -> Int? {
        guard let last = committed.last else { return nil }
        if let outputPath { try VectorExporter.delete(objectID: last.objectID, from: outputPath, layer: outputLayer) }
        committed.removeLast()
        return last.objectID
    }
}
