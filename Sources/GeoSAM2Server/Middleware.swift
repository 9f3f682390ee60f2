import Foundation
import GeoIO
import GeoSegment
import Hummingbird
import Logging
import NIOCore

/// Turns every error into `{"error": "…"}` with a fitting status: 4xx for what the client can
/// fix (``GeoSAM2ServerError``, Hummingbird's HTTP errors, refusals from the domain layer),
/// 500 for the rest.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch where Self.isStorageFull(error) {
            // A full disk: nothing was saved (the transaction rolled back), the client may retry later.
            return Self.response(.init(code: 507, reasonPhrase: "Insufficient Storage"), "\(error)")
        } catch let error as GeoSAM2ServerError {
            return Self.response(error.status, error.description)
        } catch let error as GeoSegmentError {
            // The domain refuses what the data cannot do: a click outside the raster, prompts
            // spanning tiles, a tile not encoded, an unknown CRS.
            return Self.response(.unprocessableContent, error.description)
        } catch is NIOTooManyBytesError {
            return Self.response(.contentTooLarge, "the request body is too large")
        } catch let error as any HTTPResponseError {
            let message: String
            switch error.status {
            case .notFound: message = "not found: \(request.uri.path)"
            case .methodNotAllowed: message = "\(request.method) is not allowed on \(request.uri.path)"
            case .badRequest: message = (error as? HTTPError)?.body ?? "invalid path \(request.uri.path)"
            default: message = (error as? HTTPError)?.body ?? error.status.reasonPhrase
            }
            return Self.response(error.status, message)
        } catch {
            context.logger.error("\(request.method) \(request.uri.path): \(error)")
            return Self.response(.internalServerError, "internal error: \(error)")
        }
    }

    /// Whether an error is the disk being full, in the words of errno or of SQLite.
    static func isStorageFull(_ error: any Error) -> Bool {
        let text = "\(error)"
        return text.contains("No space left on device") || text.contains("database or disk is full")
    }

    static func response(_ status: HTTPResponse.Status, _ message: String) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        let body = (try? encoder.encode(["error": message])) ?? Data(#"{"error":"error"}"#.utf8)
        return Response(status: status, headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// On a loopback-only server, refuses requests whose Host is not a loopback name, so that a web
/// page elsewhere cannot reach the API through DNS rebinding.
struct LoopbackHostMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let host = request.head.authority, !Loopback.isLoopback(authority: host) {
            throw GeoSAM2ServerError(.forbidden, "this server only answers requests addressed to localhost, not \(host)")
        }
        return try await next(request, context)
    }
}

/// Loopback names and addresses.
public enum Loopback {
    /// Whether `host[:port]` names this machine's loopback interface.
    public static func isLoopback(authority: String) -> Bool {
        var host = authority.lowercased()
        if host.hasPrefix("[") {
            host = String(host.dropFirst().prefix { $0 != "]" })
        } else if let colon = host.lastIndex(of: ":") {
            host = String(host[..<colon])
        }
        return isLoopback(host: host)
    }

    /// Whether a host name or address is this machine's loopback interface.
    public static func isLoopback(host: String) -> Bool {
        let h = host.lowercased()
        if h == "localhost" || h == "::1" || h.hasSuffix(".localhost") { return true }
        let parts = h.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }
}

/// Security headers on every response: no MIME sniffing, no referrer, and a content security
/// policy that lets the page run only its own scripts.
struct SecurityHeadersMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.xContentTypeOptions] = "nosniff"
        if let referrerPolicy = HTTPFields.Element.Name("Referrer-Policy") { response.headers[referrerPolicy] = "no-referrer" }
        response.headers[.contentSecurityPolicy] =
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
        return response
    }
}

/// Runs blocking work (GDAL, the SAM2 decoder) on a Dispatch thread instead of Swift
/// concurrency's cooperative pool, which must never block.
func offload<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        DispatchQueue.global(qos: .userInitiated).async {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// Answers 405 (with `Allow`) for the methods a path does not take, instead of the router's 404.
func refuseOtherMethods<Context: RequestContext>(on router: Router<Context>, _ path: RouterPath, allowed: [HTTPRequest.Method]) {
    let all: [HTTPRequest.Method] = [.get, .head, .post, .put, .patch, .delete, .options]
    let allow = allowed.map(\.rawValue).joined(separator: ", ")
    for method in all where !allowed.contains(method) && !(method == .head && allowed.contains(.get)) {
        router.on(path, method: method) { request, _ -> Response in
            var response = JSONErrorMiddleware<Context>.response(.methodNotAllowed, "\(request.method) is not allowed on \(request.uri.path); use \(allow)")
            response.headers[.allow] = allow
            return response
        }
    }
}

/// A JSON response.
func jsonResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok, contentType: String = "application/json; charset=utf-8") throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    let data = try encoder.encode(value)
    return Response(status: status, headers: [.contentType: contentType, .cacheControl: "no-store"],
                    body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

/// A JSON response of a ``JSONValue`` (serialized without `JSONEncoder`).
func jsonResponse(_ value: JSONValue, status: HTTPResponse.Status = .ok, contentType: String = "application/json; charset=utf-8") -> Response {
    Response(status: status, headers: [.contentType: contentType, .cacheControl: "no-store"],
             body: .init(byteBuffer: ByteBuffer(string: value.serialized())))
}

/// A file download.
func download(_ data: Data, contentType: String, fileName: String) -> Response {
    Response(status: .ok,
             headers: [.contentType: contentType, .contentDisposition: "attachment; filename=\"\(fileName)\"", .cacheControl: "no-store"],
             body: .init(byteBuffer: ByteBuffer(bytes: data)))
}
