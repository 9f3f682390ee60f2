import XCTest
@testable import SAM2

final class SAM2SmokeTests: XCTestCase {
    func testModuleLoads() {}
}
