import Foundation
import GeoIO
import SAM2
import XCTest
@testable import GeoSegment

/// `geosam2 encode`, `verify` and `info` as a user runs them.
final class EncodeCommandTests: XCTestCase {
    /// The cores `encode` uses follow what the scheduler allows: an affinity mask (`taskset`, as
    /// Slurm's task binding sets one) and a cgroup CPU quota (a Kubernetes CPU limit; a real
    /// cgroup v1 `cpu` hierarchy here, when this machine lets the test make one).
    func testCoresFollowTheSchedulersAllowance() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 600, height: 500) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        func encode(_ launcher: [String], environment: [String: String] = [:]) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: launcher[0])
            process.arguments = Array(launcher.dropFirst()) + [TestSupport.executable.path, "encode", raster, "--out",
                                                               dir.appendingPathComponent("\(UUID().uuidString).geosam2").path] + TestSupport.microModelArguments
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
            let err = Pipe()
            process.standardError = err
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0, text)
            return text.split(separator: "\n").first.map(String.init) ?? ""
        }
        let cores = ProcessInfo.processInfo.activeProcessorCount
        // The line ends with the precision `auto` chose on this CPU (bf16 or fp32).
        let precision = EncoderPrecision.automatic.rawValue
        XCTAssertEqual(try encode(["/usr/bin/env"], environment: ["GEOSAM2_THREADS": "3"]),
                       "encode: 3 cores (GEOSAM2_THREADS), 3 tiles in flight × 1 core, \(precision)")
        guard cores >= 2 else { throw XCTSkip("one CPU: nothing to narrow") }
        XCTAssertEqual(try encode(["/usr/bin/taskset", "-c", "0"]), "encode: 1 core (affinity), 1 tile in flight × 1 core, \(precision)")
        XCTAssertEqual(try encode(["/usr/bin/env"], environment: ["GEOSAM2_THREADS": "2"]).hasPrefix("encode: 2 cores"), true)

        let group = "/sys/fs/cgroup/cpu/geosam2-test-\(getpid())"
        guard (try? FileManager.default.createDirectory(atPath: group, withIntermediateDirectories: false)) != nil else {
            throw XCTSkip("no writable cgroup v1 cpu hierarchy on this machine")
        }
        defer { rmdir(group) }
        try "100000".write(toFile: group + "/cpu.cfs_quota_us", atomically: false, encoding: .utf8)
        // The shell joins the cgroup, then becomes geosam2 (`exec` keeps the pid).
        let line = try encode(["/bin/sh", "-c", "echo $$ > \(group)/cgroup.procs && exec \"$0\" \"$@\""])
        XCTAssertEqual(line, "encode: 1 core (cgroup quota), 1 tile in flight × 1 core, \(precision)")
    }

    func testKilledEncodeResumesToTheSameStore() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 3000, height: 1100) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let reference = dir.appendingPathComponent("reference.geosam2"), killed = dir.appendingPathComponent("killed.geosam2")
        let done = try TestSupport.run(["encode", raster, "--out", reference.path, "--quiet"] + TestSupport.microModelArguments)
        XCTAssertEqual(done.status, 0, done.stderr)

        // Start again into another store and kill it hard once the first tile is on disk.
        let process = Process()
        process.executableURL = TestSupport.executable
        process.arguments = ["encode", raster, "--out", killed.path, "--quiet"] + TestSupport.microModelArguments
        try process.run()
        let tiles = killed.appendingPathComponent("tiles")
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: tiles.path)) ?? []
            if names.contains(where: { $0.hasSuffix(".safetensors") }) { break }
            usleep(20_000)
        }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let partial = try TestSupport.contents(of: killed)
        let finished = partial.keys.filter { $0.hasSuffix(".safetensors") }
        XCTAssertGreaterThanOrEqual(finished.count, 1)
        XCTAssertLessThan(finished.count, 6, "the run was meant to be killed midway")
        for name in finished { XCTAssertEqual(partial[name], try TestSupport.contents(of: reference)[name], "\(name) is torn") }

        let unfinished = try TestSupport.run(["verify", killed.path])
        XCTAssertNotEqual(unfinished.status, 0, "verify must fail on a store with missing tiles")
        XCTAssertTrue(unfinished.stdout.contains("missing"), unfinished.stdout)

        let resumed = try TestSupport.run(["encode", raster, "--out", killed.path] + TestSupport.microModelArguments)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stdout.contains("skipped \(finished.count) already done"), resumed.stdout)
        let a = try TestSupport.contents(of: reference), b = try TestSupport.contents(of: killed)
        XCTAssertEqual(a.keys.sorted(), b.keys.sorted(), "no temporary files left, no tile missing")
        for key in a.keys { XCTAssertEqual(a[key], b[key], "\(key) differs after resume") }
        let verified = try TestSupport.run(["verify", killed.path])
        XCTAssertEqual(verified.status, 0, verified.stdout + verified.stderr)
    }

    /// `--progress json` (the QGIS Processing algorithm reads it): one JSON object per tile on
    /// stdout, counts that only grow, then a `done` event.
    func testJSONProgressLines() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 2100, height: 600) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        // One tile in flight: progress comes in the order tiles finish, which is the order they
        // start (coarsest first) only when one tile runs at a time.
        let result = try TestSupport.run(["encode", raster, "--out", dir.appendingPathComponent("s.geosam2").path, "--progress", "json",
                                          "--tiles-in-flight", "1"] + TestSupport.microModelArguments)
        XCTAssertEqual(result.status, 0, result.stderr)
        XCTAssertEqual(result.stderr, "", "nothing but JSON, and on stdout")
        let events = try result.stdout.split(separator: "\n").map { try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        let progress = events.filter { $0["event"] as? String == "progress" }
        // Three level-0 tiles and the pyramid above them (level 1: two, level 2: one), coarsest first.
        XCTAssertEqual(progress.map { $0["done"] as? Int }, [0, 1, 2, 3, 4, 5, 6])
        XCTAssertTrue(progress.allSatisfy { $0["total"] as? Int == 6 })
        XCTAssertEqual(progress[1]["tile"] as? String, "l2_r0000_c0000")
        XCTAssertEqual(progress.last?["tile"] as? String, "r0000_c0002")
        XCTAssertEqual(events.last?["event"] as? String, "done")
        XCTAssertEqual(events.last?["complete"] as? Bool, true)
        let bad = try TestSupport.run(["encode", raster, "--progress", "xml"] + TestSupport.microModelArguments)
        XCTAssertEqual(bad.status, 1)
        XCTAssertTrue(bad.stderr.contains("--progress must be auto or json"), bad.stderr)
    }

    func testBadInputGivesOneLineErrors() throws {
        let dir = try TestSupport.temporaryDirectory()
        let raster = try TestSupport.makeRaster(at: dir.appendingPathComponent("r.tif").path, width: 200, height: 100) { b, x, y in
            TestSupport.scene(b, x, y)
        }
        let noCRS = try TestSupport.makeRaster(at: dir.appendingPathComponent("nocrs.tif").path, width: 50, height: 50, epsg: nil) { _, x, _ in Double(x) }
        let allNodata = try TestSupport.makeRaster(at: dir.appendingPathComponent("nodata.tif").path, width: 50, height: 50, nodata: 7) { _, _, _ in 7 }
        let blocker = dir.appendingPathComponent("a-file")
        try Data("x".utf8).write(to: blocker)
        let cases: [([String], String)] = [
            (["encode", dir.appendingPathComponent("missing.tif").path], "missing.tif"),
            (["encode", raster, "--bands", "5"], "band 5 does not exist"),
            (["encode", raster, "--bands", "1,2,x"], "--bands"),
            (["encode", noCRS], "no CRS"),
            (["encode", allNodata], "no valid pixels"),
            (["encode", raster, "--out", blocker.appendingPathComponent("store").path], "cannot"),
            (["encode", raster, "--dtype", "f8"], "--dtype"),
            (["encode", raster, "--shard", "3/2"], "--shard"),
            (["encode", raster, "--scale", "0"], "--scale"),
            (["verify", dir.path], "not a feature store"),
        ]
        for (arguments, expected) in cases {
            let result = try TestSupport.run(arguments + (arguments[0] == "encode" ? TestSupport.microModelArguments : []))
            XCTAssertNotEqual(result.status, 0, "\(arguments) should fail")
            let lines = result.stderr.split(separator: "\n").filter { !$0.isEmpty }
            XCTAssertEqual(lines.count, 1, "\(arguments): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains(expected), "\(arguments): \(result.stderr)")
            XCTAssertFalse(result.stderr.contains("Fatal error"), result.stderr)
        }
        // With a CRS given, the same raster encodes.
        let fixed = try TestSupport.run(["encode", noCRS, "--crs", "EPSG:32633", "--quiet"] + TestSupport.microModelArguments)
        XCTAssertEqual(fixed.status, 0, fixed.stderr)
    }

    func testSharedDataRasters() throws {
        let data = TestSupport.sharedData
        guard FileManager.default.fileExists(atPath: data.path) else {
            throw XCTSkip("../shared/data not present: the real-raster integration tests need it")
        }
        let out = try TestSupport.temporaryDirectory()
        func encode(_ name: String, _ extra: [String] = []) throws -> (Int32, String, FeatureStore?) {
            let store = out.appendingPathComponent("\(name).geosam2")
            let r = try TestSupport.run(["encode", data.appendingPathComponent(name).path, "--out", store.path, "--quiet"] + extra + TestSupport.microModelArguments)
            return (r.status, r.stderr, r.status == 0 ? try FeatureStore.open(store) : nil)
        }
        // Landsat RGB, nodata collar.
        let (s1, e1, rgb) = try encode("RGB.byte.tif")
        XCTAssertEqual(s1, 0, e1)
        XCTAssertEqual(rgb?.manifest.source.epsg, 32618)
        XCTAssertEqual(rgb?.manifest.encoding.bands.rgb, [1, 2, 3])
        XCTAssertEqual(rgb?.manifest.source.nodata, ["0.0", "0.0", "0.0"])
        // NAIP 4 bands: R,G,B by default; false colour on request.
        let (s2, e2, naip) = try encode("naip_2020_4band_utm14n.tif", ["--bands", "4,1,2"])
        XCTAssertEqual(s2, 0, e2)
        XCTAssertEqual(naip?.manifest.encoding.bands.rgb, [4, 1, 2])
        // 16-bit B,G,R,Alpha: colour interpretation gives R,G,B = 3,2,1; alpha only masks; stretched.
        let (s3, e3, rgba) = try encode("RGBA.uint16.tif")
        XCTAssertEqual(s3, 0, e3)
        XCTAssertEqual(rgba?.manifest.encoding.bands.rgb, [3, 2, 1])
        XCTAssertEqual(rgba?.manifest.encoding.stretch.ranges.count, 3)
        XCTAssertTrue(rgba?.manifest.encoding.stretch.ranges.allSatisfy { $0.high > 255 } ?? false, "16-bit values need the stretch")
        // No CRS: clear errors; a CRS given makes them usable.
        for name in ["float_nan.tif", "rotated.tif"] {
            let (status, stderr, _) = try encode(name)
            XCTAssertNotEqual(status, 0)
            XCTAssertTrue(stderr.contains("CRS"), stderr)
        }
        let (s4, e4, rotated) = try encode("rotated.tif", ["--crs", "EPSG:32618"])
        XCTAssertEqual(s4, 0, e4)
        XCTAssertEqual(rotated?.manifest.tiles.count, 1)
        // A damaged file: one line, non-zero exit, nothing half-written.
        let (s5, e5, _) = try encode("corrupt.tif")
        XCTAssertNotEqual(s5, 0)
        XCTAssertEqual(e5.split(separator: "\n").count, 1, e5)
        XCTAssertTrue(e5.contains("corrupt.tif"), e5)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("corrupt.tif.geosam2/manifest.json").path))

        let info = try TestSupport.run(["info", out.appendingPathComponent("RGB.byte.tif.geosam2").path, "--json"])
        XCTAssertEqual(info.status, 0, info.stderr)
        let json = try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any]
        XCTAssertEqual((json?["tiles"] as? [String: Int])?["done"], 1)
        XCTAssertEqual(json?["epsg"] as? Int, 32618)
    }

    /// Several rasters (a directory): one store each with one progress over all their tiles; the
    /// same rasters with --mosaic: one store of their VRT mosaic.
    func testADirectoryOfRastersEncodesOneStoreEachOrOneMosaic() throws {
        let dir = try TestSupport.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let inputs = dir.appendingPathComponent("inputs")
        try FileManager.default.createDirectory(at: inputs, withIntermediateDirectories: true)
        // Two neighbours of 900 × 700 px (2 m pixels): the second starts where the first ends.
        for (k, name) in ["west", "east"].enumerated() {
            try TestSupport.makeRaster(at: inputs.appendingPathComponent("\(name).tif").path, width: 900, height: 700,
                                       geoTransform: GeoTransform(originX: 500_000 + Double(k) * 1800, pixelWidth: 2, originY: 5_000_000,
                                                                  pixelHeight: -2)) { b, x, y in TestSupport.scene(b, x + k * 900, y) }
        }
        try Data("not a raster".utf8).write(to: inputs.appendingPathComponent("notes.txt"))
        let stores = dir.appendingPathComponent("stores").path
        let batch = try TestSupport.run(["encode", inputs.path, "--out", stores, "--progress", "json"] + TestSupport.microModelArguments)
        XCTAssertEqual(batch.status, 0, batch.stderr)
        let events = batch.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let progress = events.filter { $0["event"] as? String == "progress" }
        XCTAssertEqual(Set(progress.compactMap { $0["total"] as? Int }), [2], "one total over both rasters' tiles")
        XCTAssertEqual(progress.last?["done"] as? Int, 2)
        XCTAssertEqual(events.filter { $0["event"] as? String == "done" }.count, 2)
        for name in ["west", "east"] {
            let store = try FeatureStore.open(URL(fileURLWithPath: stores).appendingPathComponent("\(name).geosam2"))
            XCTAssertTrue(store.manifest.source.path.hasSuffix("\(name).tif"))
            XCTAssertTrue(store.manifest.complete)
        }
        let mosaic = dir.appendingPathComponent("mosaic.geosam2")
        let one = try TestSupport.run(["encode", inputs.path, "--mosaic", "--out", mosaic.path, "--quiet"] + TestSupport.microModelArguments)
        XCTAssertEqual(one.status, 0, one.stderr)
        let store = try FeatureStore.open(mosaic)
        XCTAssertEqual(store.manifest.source.width, 1800)
        XCTAssertEqual(store.manifest.source.height, 700)
        XCTAssertTrue(store.manifest.source.path.hasSuffix("mosaic.geosam2.mosaic.vrt"))
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let none = try TestSupport.run(["encode", empty.path, "--out", stores] + TestSupport.microModelArguments)
        XCTAssertNotEqual(none.status, 0)
        XCTAssertTrue(none.stderr.contains("holds no raster"), none.stderr)
    }
}
