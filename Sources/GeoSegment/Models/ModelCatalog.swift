import Foundation
import SAM2

/// Finds checkpoints: a path as given, or one of Meta's presets in the user's model cache.
public enum ModelCatalog {
    /// `$GEOSAM2_CACHE`, else `$XDG_CACHE_HOME/geosam2`, else `~/.cache/geosam2`.
    public static var cacheDirectory: URL {
        let env = ProcessInfo.processInfo.environment
        if let dir = env["GEOSAM2_CACHE"], !dir.isEmpty { return URL(fileURLWithPath: dir, isDirectory: true) }
        if let xdg = env["XDG_CACHE_HOME"], !xdg.isEmpty {
            return URL(fileURLWithPath: xdg, isDirectory: true).appendingPathComponent("geosam2", isDirectory: true)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/geosam2", isDirectory: true)
    }

    /// The preset a name refers to: `tiny`, `base_plus`, `tiny_2.0`, or Meta's file name
    /// (`sam2.1_hiera_tiny.pt`, `sam2_hiera_large`).
    public static func preset(named name: String) -> SAM2Preset? {
        if let p = SAM2Preset(rawValue: name) { return p }
        let stem = name.hasSuffix(".pt") ? String(name.dropLast(3)) : name
        return SAM2Preset.allCases.first { $0.checkpointFileName == stem + ".pt" }
    }

    /// A checkpoint file and the preset it was asked for by name, if any.
    public struct Resolved: Sendable {
        public let url: URL
        public let preset: SAM2Preset?
    }

    /// Resolves `--model`: an existing file, else a preset in the cache.
    public static func resolve(_ name: String) throws -> Resolved {
        let fm = FileManager.default
        if fm.fileExists(atPath: name) { return Resolved(url: URL(fileURLWithPath: name), preset: nil) }
        guard let preset = preset(named: name) else {
            throw GeoSegmentError("model \(name) is neither a file nor a preset (\(SAM2Preset.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        let cached = cacheDirectory.appendingPathComponent(preset.checkpointFileName)
        guard fm.fileExists(atPath: cached.path) else {
            throw GeoSegmentError("\(preset.checkpointFileName) is not in the model cache \(cacheDirectory.path); download it from \(preset.downloadURL) into that folder, or pass --model PATH")
        }
        return Resolved(url: cached, preset: preset)
    }
}

extension ModelCatalog {
    /// What became of the checkpoint file a store's manifest records.
    public enum RecordedCheckpoint: Sendable, Equatable {
        /// The file is where it was and still has the store's SHA-256.
        case usable(URL)
        /// The manifest records no path (a store from before 0.2).
        case unrecorded
        /// A one-line reason why the recorded file cannot be used (moved or changed).
        case unusable(String)

        /// The reason, when the recorded file cannot be used.
        public var problem: String? {
            if case .unusable(let reason) = self { return reason }
            return nil
        }
    }

    /// Checks the checkpoint a store was encoded with: present and byte-identical (SHA-256).
    public static func recordedCheckpoint(of manifest: StoreManifest) -> RecordedCheckpoint {
        guard let path = manifest.model.checkpointPath else { return .unrecorded }
        guard FileManager.default.fileExists(atPath: path) else {
            return .unusable("the store was encoded with \(path), which no longer exists")
        }
        guard let digest = try? FileDigest.sha256(of: URL(fileURLWithPath: path)) else {
            return .unusable("the store was encoded with \(path), which cannot be read")
        }
        guard digest == manifest.model.checkpointSHA256 else {
            return .unusable("the store was encoded with \(path), which has changed since (SHA-256 \(digest.prefix(12))…, the store's is \(manifest.model.checkpointSHA256.prefix(12))…)")
        }
        return .usable(URL(fileURLWithPath: path))
    }
}
