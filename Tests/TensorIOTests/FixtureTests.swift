import Foundation
import Kernels
import XCTest
@testable import TensorIO

/// Files written by the real PyTorch, safetensors and numpy (tools/parity/make_tensorio_fixtures.py),
/// compared element by element with the values the same script recorded.
final class FixtureTests: XCTestCase {
    func check(_ archive: any TensorArchive, _ expected: Fixtures.ExpectedFile, file: String, exactOrder: Bool = true) throws {
        let tensors = try XCTUnwrap(expected.tensors, file)
        if exactOrder, let names = expected.names {
            XCTAssertEqual(archive.tensorNames, names, file)
        } else {
            XCTAssertEqual(Set(archive.tensorNames), Set(tensors.keys), file)
        }
        for (name, e) in tensors {
            let info = try XCTUnwrap(archive.info(name), "\(file): \(name)")
            XCTAssertEqual(info.shape, e.shape, "\(file): \(name)")
            XCTAssertEqual(info.dtype, DType(rawValue: e.dtype), "\(file): \(name)")
            let t = try archive.tensor(named: name)
            XCTAssertEqual(t.shape, e.shape, "\(file): \(name)")
            XCTAssertEqual(t.toArray(), e.values.map { Float($0) }, "\(file): \(name)")
        }
    }

    func testTorchCheckpoints() throws {
        let expected = try Fixtures.expected()
        for name in ["state_dict_f32.pt", "mixed_dtypes.pt", "views.pt", "my.weird_name-v2.pt"] {
            let e = try XCTUnwrap(expected[name], name)
            let ck = try TorchCheckpoint(contentsOf: Fixtures.url(name))
            if let prefix = e.prefix { XCTAssertEqual(ck.prefix, prefix) }
            try check(ck, e, file: name)
            // Format detection reaches the same reader.
            let generic = try TensorArchives.open(Fixtures.url(name))
            XCTAssertTrue(generic is TorchCheckpoint, name)
        }
    }

    func testRealCheckpointDetails() throws {
        let ck = try TorchCheckpoint(contentsOf: Fixtures.url("state_dict_f32.pt"))
        XCTAssertEqual(ck.info("bn.num_batches_tracked"), TensorInfo(name: "bn.num_batches_tracked", dtype: .int64, shape: []))
        XCTAssertEqual(try ck.tensor(named: "bn.num_batches_tracked").toArray(), [7])
        let views = try TorchCheckpoint(contentsOf: Fixtures.url("views.pt"))
        XCTAssertEqual(try views.tensor(named: "window").toArray(), [17, 18, 25, 26, 33, 34])
        XCTAssertEqual(try views.tensor(named: "expanded").shape, [4, 3])
    }

    func testTruncatedRealCheckpointThrowsAtEveryCut() throws {
        let full = try Data(contentsOf: Fixtures.url("views.pt"))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tensorio-cut-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("views.pt")
        for cut in stride(from: 0, to: full.count, by: 7) {
            try full.prefix(cut).write(to: url)
            XCTAssertThrowsError(try TorchCheckpoint(contentsOf: url), "cut at \(cut)")
        }
    }

    func testSafetensorsFromPython() throws {
        let expected = try Fixtures.expected()
        guard let e = expected["from_python.safetensors"] else {
            throw XCTSkip("fixture generated without the safetensors package")
        }
        let f = try SafetensorsFile(contentsOf: Fixtures.url("from_python.safetensors"))
        XCTAssertEqual(f.metadata, e.metadata)
        try check(f, e, file: "from_python.safetensors", exactOrder: false)
        XCTAssertTrue(try TensorArchives.open(Fixtures.url("from_python.safetensors")) is SafetensorsFile)
    }

    func testNumPyFromNumpy() throws {
        let expected = try Fixtures.expected()
        let names = expected.keys.filter { $0.hasSuffix(".npy") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 9)
        for name in names {
            let e = try XCTUnwrap(expected[name])
            let t = try NumPy.read(Fixtures.url(name))
            XCTAssertEqual(t.shape, e.shape, name)
            XCTAssertEqual(t.toArray(), e.values?.map { Float($0) }, name)
        }
        XCTAssertThrowsError(try NumPy.read(Fixtures.url("np_fortran.npy"))) { error in
            XCTAssertTrue("\(error)".contains("Fortran"), "\(error)")
        }
    }
}
