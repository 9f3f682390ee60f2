import XCTest
@testable import GeoIO

final class GeoIOSmokeTests: XCTestCase {
    func testModuleLoads() {}
}
