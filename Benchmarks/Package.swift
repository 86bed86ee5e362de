// swift-tools-version:6.1
// The benchmark suite of Coordinator, as its own package so the main build and CI never pay for it.
// Run: `cd Benchmarks && swift package --disable-sandbox benchmark` (or `make bench` at the root).
import PackageDescription

let package = Package(
    name: "CoordinatorBenchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        // Only the malloc interposer trait (allocation counts); the default traits would also pull in
        // the ARC runtime interposer, which is not needed for these metrics.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(name: "Coordinator", path: ".."),
    ],
    targets: [
        .executableTarget(
            name: "CoordinatorBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "CoordinatorCore", package: "Coordinator"),
            ],
            path: "Benchmarks/CoordinatorBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ],
    swiftLanguageModes: [.v6]
)
