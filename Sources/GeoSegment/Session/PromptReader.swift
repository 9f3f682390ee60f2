import Foundation
import GeoIO

/// Reads batch prompts from any OGR vector: points are clicks (integer `label`: 1 foreground, the
/// default; 0 background), polygons are boxes (their envelope); features sharing an `object`
/// attribute form one object, a feature without one is an object by itself.
public enum PromptReader {
    public struct NamedObject: Sendable {
        /// The `object` attribute, or `#FID` for a feature that is an object by itself.
        public var name: String
        public var prompt: ObjectPrompt
        /// The `class` attribute of the object's features, if one has it.
        public var className: String?
    }

    ///
    /// - Parameter target: the store's CRS. Geometries in another CRS are reprojected into it
    ///   vertex by vertex before a polygon's envelope is taken (the envelope of the reprojected
    ///   polygon, not the reprojected envelope, which would be larger); nil leaves them as they are.
    public static func read(_ path: String, layer: String? = nil, target: SpatialReference? = nil) throws -> [NamedObject] {
        try rethrowing("\(path)") {
            let dataset = try VectorDataset.open(path)
            let source: VectorLayer
            if let layer { source = try dataset.layer(named: layer) } else { source = try dataset.layer(at: 0) }
            var crs = try source.spatialReference.map { try $0.wkt }
            var reprojection: CoordinateTransformation?
            if let target, let layerSRS = source.spatialReference {
                if !layerSRS.isSame(target) {
                    reprojection = try rethrowing("cannot transform the prompts' CRS to the store's") { try CoordinateTransformation(from: layerSRS, to: target) }
                }
                crs = nil
            }
            var order: [String] = []
            var objects: [String: ObjectPrompt] = [:]
            var classes: [String: String] = [:]
            try source.forEachFeature { feature in
                let fid = feature.fid.map(String.init) ?? "?"
                guard var geometry = feature.geometry, !geometry.isEmpty else {
                    throw GeoSegmentError("feature \(fid) has no geometry")
                }
                if let reprojection {
                    geometry = try rethrowing("feature \(fid): cannot transform to the store's CRS") { try geometry.transformed(with: reprojection) }
                }
                let name: String
                switch feature.attributes["object"] {
                case .integer(let v)?: name = String(v)
                case .string(let v)? where !v.isEmpty: name = v
                case .real(let v)?: name = String(v)
                default: name = "#\(fid)"
                }
                var prompt = objects[name] ?? ObjectPrompt(points: [], box: nil, crs: crs)
                switch geometry.type {
                case .point:
                    let label: Int
                    switch feature.attributes["label"] {
                    case nil, .null?: label = 1
                    case .integer(let v)?: label = v
                    case .real(let v)? where v == v.rounded(): label = Int(v)
                    case .string(let v)?: label = Int(v.trimmingCharacters(in: .whitespaces)) ?? -1
                    default: label = -1
                    }
                    guard label == 0 || label == 1 else {
                        throw GeoSegmentError("feature \(fid): label must be 1 (foreground) or 0 (background)")
                    }
                    let e = geometry.envelope
                    prompt.points.append(MapPoint(x: e.minX, y: e.minY, label: label))
                case .polygon, .multiPolygon:
                    guard prompt.box == nil else { throw GeoSegmentError("object \(name) has more than one box") }
                    let e = geometry.envelope
                    prompt.box = MapBox(minX: e.minX, minY: e.minY, maxX: e.maxX, maxY: e.maxY)
                default:
                    throw GeoSegmentError("feature \(fid) is a \(geometry.type.rawValue); prompts are points (clicks) or polygons (boxes)")
                }
                if case .string(let label)? = feature.attributes["class"], !label.trimmingCharacters(in: .whitespaces).isEmpty {
                    classes[name] = label.trimmingCharacters(in: .whitespaces)
                }
                if objects[name] == nil { order.append(name) }
                objects[name] = prompt
            }
            return order.compactMap { name in objects[name].map { NamedObject(name: name, prompt: $0, className: classes[name]) } }
        }
    }
}
