/// A small, fast JSON text builder for response bodies on hot paths (Foundation's encoder costs
/// microseconds per call; these bodies are a handful of known fields).
struct JSONText {
    private(set) var text: String = "{"
    private var first = true

    init() { text.reserveCapacity(160) }

    private mutating func key(_ name: StaticString) {
        if first { first = false } else { text.append(",") }
        text.append("\"")
        text.append(name.description)
        text.append("\":")
    }

    mutating func string(_ name: StaticString, _ value: String) {
        key(name)
        JSONText.appendQuoted(value, to: &text)
    }

    mutating func string(_ name: StaticString, _ value: String?) {
        key(name)
        if let value { JSONText.appendQuoted(value, to: &text) } else { text.append("null") }
    }

    mutating func int(_ name: StaticString, _ value: Int64) {
        key(name)
        text.append(String(value))
    }

    mutating func int(_ name: StaticString, _ value: Int) { int(name, Int64(value)) }

    mutating func int(_ name: StaticString, _ value: Int64?) {
        key(name)
        if let value { text.append(String(value)) } else { text.append("null") }
    }

    mutating func double(_ name: StaticString, _ value: Double) {
        key(name)
        if value.isFinite {
            if value == value.rounded(), abs(value) < 1e15 { text.append(String(Int64(value))) } else { text.append(String(value)) }
        } else {
            text.append("null")
        }
    }

    mutating func bool(_ name: StaticString, _ value: Bool) {
        key(name)
        text.append(value ? "true" : "false")
    }

    /// Inserts already-encoded JSON.
    mutating func raw(_ name: StaticString, _ json: String) {
        key(name)
        text.append(json)
    }

    /// The finished object.
    mutating func finish() -> String {
        text.append("}")
        return text
    }

    static func quoted(_ value: String) -> String {
        var out = ""
        appendQuoted(value, to: &out)
        return out
    }

    static func appendQuoted(_ value: String, to out: inout String) {
        out.append("\"")
        var needsEscape = false
        for byte in value.utf8 where byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") {
            needsEscape = true
            break
        }
        if !needsEscape {
            out.append(value)
        } else {
            for scalar in value.unicodeScalars {
                switch scalar {
                case "\"": out.append("\\\"")
                case "\\": out.append("\\\\")
                case "\n": out.append("\\n")
                case "\r": out.append("\\r")
                case "\t": out.append("\\t")
                default:
                    if scalar.value < 0x20 {
                        let hex = String(scalar.value, radix: 16)
                        out.append("\\u" + String(repeating: "0", count: 4 - hex.count) + hex)
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
        }
        out.append("\"")
    }

    static func array(_ items: [String]) -> String {
        "[" + items.joined(separator: ",") + "]"
    }
}
