import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The `coordinator` executable under test: `COORDINATOR_TEST_BINARY` (set by `make test`), else
/// the debug build next to the test bundle.
func coordinatorBinary() -> String {
    if let path = ProcessInfo.processInfo.environment["COORDINATOR_TEST_BINARY"], !path.isEmpty { return path }
    return packageRoot() + "/.build/debug/coordinator"
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs the binary to completion.
func runCoordinator(_ arguments: [String], environment: [String: String] = [:]) throws -> ProcessResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: coordinatorBinary())
    process.arguments = arguments
    var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COORDINATOR_") }
    env.merge(environment) { $1 }
    process.environment = env
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    let errData = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return ProcessResult(status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

/// A `coordinator serve` child process on a free port.
final class ServerProcess: @unchecked Sendable {
    // @unchecked Sendable: fields are set once in `start` before the object is shared.
    let process = Process()
    let dataDirectory: String
    private(set) var baseURL = ""
    private(set) var firstOutput = ""

    init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    func start(extraEnvironment: [String: String] = [:], arguments: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: coordinatorBinary())
        process.arguments = ["serve", "--port", "0", "--data-dir", dataDirectory] + arguments
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("COORDINATOR_") }
        env["COORDINATOR_LOG_LEVEL"] = "warning"
        env.merge(extraEnvironment) { $1 }
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Read until the "listening on" line (bounded: the process prints it within seconds or fails).
        var buffer = Data()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            buffer.append(chunk)
            let text = String(decoding: buffer, as: UTF8.self)
            if let range = text.range(of: "listening on ") {
                let rest = text[range.upperBound...]
                if let end = rest.firstIndex(of: "\n") {
                    baseURL = String(rest[..<end])
                    firstOutput = text
                    return
                }
            }
        }
        process.terminate()
        throw TestFailure("server did not start: \(String(decoding: buffer, as: UTF8.self))")
    }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func terminate() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// One HTTP request with URLSession; returns status and body.
func httpRequest(_ method: String, _ url: String, body: String? = nil, bearer: String? = nil, timeout: TimeInterval = 10) async throws -> (Int, String) {
    var request = URLRequest(url: URL(string: url)!)
    request.httpMethod = method
    request.timeoutInterval = timeout
    if let body {
        request.httpBody = Data(body.utf8)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
    }
    if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
    let (data, response) = try await URLSession.shared.data(for: request)
    return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
}
