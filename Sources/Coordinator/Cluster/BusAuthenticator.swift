import Crypto
import CoordinatorCore

/// HMAC-SHA256 keyed by the cluster secret: signs every bus frame and checks received ones in
/// constant time. Nodes of one cluster share the secret; a node without it cannot forge a message.
public struct HMACBusAuthenticator: MessageAuthenticator {
    /// The key bytes (`SymmetricKey` is not `Sendable` in swift-crypto 3, so it is made per call).
    private let keyBytes: [UInt8]

    /// Creates an authenticator for `secret` (the UTF-8 bytes are the HMAC key).
    public init(secret: String) {
        self.keyBytes = Array(secret.utf8)
    }

    public func mac(_ bytes: [UInt8]) -> [UInt8] {
        Array(HMAC<SHA256>.authenticationCode(for: bytes, using: SymmetricKey(data: keyBytes)))
    }

    public func verify(_ bytes: [UInt8], mac: [UInt8]) -> Bool {
        // swift-crypto compares the codes in constant time.
        HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: bytes, using: SymmetricKey(data: keyBytes))
    }
}
