import ArgumentParser

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks (see README, \"Benchmarks\").")
    func run() async throws {}
}
