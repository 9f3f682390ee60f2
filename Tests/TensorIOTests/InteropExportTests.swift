import Foundation
import Kernels
import XCTest
@testable import TensorIO

/// Opt-in checks against outside files, skipped unless the environment names them:
/// - `TENSORIO_EXPORT_DIR`: write sample `.npy`/`.safetensors` files there for Python to verify.
/// - `TENSORIO_BIG_CHECKPOINT`: a large real checkpoint (e.g. sam2.1_hiera_tiny.pt) to open and
///   decode completely, reporting the time taken (with `TENSORIO_EXPORT_DIR` also set, its first and
///   last tensors are written there as `<name>.npy`).
final class InteropExportTests: XCTestCase {
    func testExportForPython() throws {
        guard let dir = ProcessInfo.processInfo.environment["TENSORIO_EXPORT_DIR"] else {
            throw XCTSkip("set TENSORIO_EXPORT_DIR to export files for Python-side checks")
        }
        let base = URL(fileURLWithPath: dir)
        let t = Tensor(shape: [3, 4, 5], scalars: (0..<60).map { Float($0) * 0.37 - 9 })
        try NumPy.write(t, to: base.appendingPathComponent("swift_f4.npy"))
        try NumPy.write(Tensor(shape: [], scalars: [1.25]), to: base.appendingPathComponent("swift_scalar.npy"))
        try NumPy.write(Tensor(shape: [7], scalars: [1, 2, 3, 4, 5, 6, 7]), to: base.appendingPathComponent("swift_1d.npy"))
        try NumPy.writeUInt8([0, 1, 2, 255], shape: [2, 2], to: base.appendingPathComponent("swift_u1.npy"))
        let tensors: [(name: String, tensor: Tensor)] = [("a", t), ("b.c", Tensor(shape: [2], scalars: [0.1, 65520]))]
        try SafetensorsWriter.write(tensors, dtype: .float32, metadata: ["format": "pt"], to: base.appendingPathComponent("swift_f32.safetensors"))
        try SafetensorsWriter.write(tensors, dtype: .float16, metadata: [:], to: base.appendingPathComponent("swift_f16.safetensors"))
    }

    func testBigCheckpoint() throws {
        guard let path = ProcessInfo.processInfo.environment["TENSORIO_BIG_CHECKPOINT"] else {
            throw XCTSkip("set TENSORIO_BIG_CHECKPOINT to time a large checkpoint")
        }
        var start = Date()
        let archive = try TensorArchives.open(URL(fileURLWithPath: path))
        let openTime = Date().timeIntervalSince(start)
        start = Date()
        var elements = 0
        for name in archive.tensorNames { elements += try archive.tensor(named: name).count }
        let decodeTime = Date().timeIntervalSince(start)
        print("TensorIO: \(archive.tensorNames.count) tensors, \(elements) elements; open \(openTime) s, decode \(decodeTime) s")
        XCTAssertLessThan(openTime, 1.0)
        // With TENSORIO_EXPORT_DIR also set, dump the first and last tensors for comparison in Python.
        if let dir = ProcessInfo.processInfo.environment["TENSORIO_EXPORT_DIR"],
           let first = archive.tensorNames.first, let last = archive.tensorNames.last {
            for name in [first, last] {
                try NumPy.write(archive.tensor(named: name), to: URL(fileURLWithPath: dir).appendingPathComponent("\(name).npy"))
            }
        }
    }
}
