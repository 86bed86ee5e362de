// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Coordinator",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "coordinator", targets: ["coordinator"]),
        .library(name: "Coordinator", targets: ["Coordinator"]),
        .library(name: "CoordinatorCore", targets: ["CoordinatorCore"]),
        .library(name: "CoordinatorHTTP", targets: ["CoordinatorHTTP"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        // C libraries (system packages), one choke point each.
        // hiredis: no `pkgConfig:` on purpose — Debian's hiredis.pc adds `-D_FILE_OFFSET_BITS=64`, which
        // SwiftPM refuses with a warning; the headers live in the default include path (<hiredis/…>).
        .systemLibrary(name: "CHiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CSQLite3", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),

        // Pure logic: no I/O, no clock, no C.
        .target(name: "CoordinatorCore", swiftSettings: strict),

        .target(
            name: "SQLiteClient",
            dependencies: ["CSQLite3"],
            swiftSettings: strict
        ),
        // A dedicated OS thread per connection for blocking C calls (never the cooperative pool).
        .target(name: "ConnectionThreads", swiftSettings: strict),
        .target(name: "RedisClient", dependencies: ["CHiredis", "ConnectionThreads"], swiftSettings: strict),
        .target(name: "PostgresClient", dependencies: ["CLibPQ", "ConnectionThreads"], swiftSettings: strict),
        .target(
            name: "Coordinator",
            dependencies: [
                "CoordinatorCore",
                "SQLiteClient",
                "RedisClient",
                "PostgresClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "CoordinatorHTTP",
            dependencies: [
                "Coordinator",
                "CoordinatorCore",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            resources: [.copy("Resources/openapi.yaml")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "coordinator",
            dependencies: [
                "Coordinator",
                "CoordinatorCore",
                "CoordinatorHTTP",
                "PostgresClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),

        .testTarget(name: "RedisClientTests", dependencies: ["RedisClient"], swiftSettings: strict),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient"], swiftSettings: strict),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "RedisClient", "PostgresClient", "Coordinator", "CoordinatorCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "CoordinatorCoreTests", dependencies: ["CoordinatorCore"], swiftSettings: strict),
        .testTarget(
            name: "CoordinatorTests",
            dependencies: ["Coordinator", "CoordinatorCore", "SQLiteClient", "PostgresClient", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CoordinatorHTTPTests",
            dependencies: [
                "CoordinatorHTTP", "Coordinator", "CoordinatorCore",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
