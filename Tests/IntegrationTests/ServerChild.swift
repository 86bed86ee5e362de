import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A `coordinator serve` child process on a free port (the binary from `COORDINATOR_TEST_BINARY`,
/// set by `make test`, else the debug build).
final class ServerChild: @unchecked Sendable {
    // @unchecked Sendable: set up once in `start`, then only read.
    let process = Process()
    let dataDirectory = NSTemporaryDirectory() + "coordinator-child-\(UUID().uuidString)"
    private(set) var baseURL = ""

    static func binary() -> String {
        if let path = ProcessInfo.processInfo.environment["COORDINATOR_TEST_BINARY"], !path.isEmpty { return path }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.path + "/.build/debug/coordinator"
    }

    static func start(arguments: [String], environment: [String: String] = [:]) throws -> ServerChild {
        let child = ServerChild()
        child.process.executableURL = URL(fileURLWithPath: binary())
        child.process.arguments = ["serve", "--port", "0", "--data-dir", child.dataDirectory] + arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COORDINATOR_") }
        env["COORDINATOR_LOG_LEVEL"] = "error"
        env.merge(environment) { $1 }
        child.process.environment = env
        let out = Pipe()
        child.process.standardOutput = out
        child.process.standardError = FileHandle.nullDevice
        try child.process.run()
        var buffer = Data()
        while true {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            let text = String(decoding: buffer, as: UTF8.self)
            if let range = text.range(of: "listening on "), let end = text[range.upperBound...].firstIndex(of: "\n") {
                child.baseURL = String(text[range.upperBound..<end])
                return child
            }
        }
        child.stop()
        throw ClusterTestFailure("coordinator did not start: \(String(decoding: buffer, as: UTF8.self))")
    }

    /// SIGKILL (a crash: nothing is drained or released) and wait.
    func kill9() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }
}

func httpPOST(_ url: String, body: String) async throws -> (Int, String) {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = "POST"
    request.httpBody = Data(body.utf8)
    request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    request.timeoutInterval = 10
    let (data, response) = try await URLSession.shared.data(for: request)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
}

func httpGET(_ url: String) async throws -> (Int, String) {
    var request = URLRequest(url: URL(string: url)!)
    request.timeoutInterval = 10
    let (data, response) = try await URLSession.shared.data(for: request)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
}
