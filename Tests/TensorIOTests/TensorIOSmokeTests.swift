import XCTest
@testable import TensorIO

final class TensorIOSmokeTests: XCTestCase {
    func testModuleLoads() {}
}
