/// PostgreSQL's ISO text forms of timestamps (DateStyle `ISO`, which every
/// connection of this package uses) and of `bytea`. Pure functions, no
/// Foundation formatters (locale- and thread-independent).
enum PostgresTimestampText {
    static let microsecondsPerDay: Int64 = 86_400_000_000

    /// Floor division (rounds towards negative infinity).
    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (astronomical
    /// years: 0 is 1 BC). Howard Hinnant's `days_from_civil`.
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = floorDivide(y, 400)
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// Inverse of `daysFromCivil`.
    static func civilFromDays(_ days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = floorDivide(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }

    /// `YYYY-MM-DD HH:MM:SS[.ffffff]+00` (with ` BC` for years before 1 AD).
    static func format(microsecondsSince1970 us: Int64) -> String {
        let days = floorDivide(us, microsecondsPerDay)
        var rest = us - days * microsecondsPerDay
        let (year, month, day) = civilFromDays(days)
        let hour = rest / 3_600_000_000
        rest -= hour * 3_600_000_000
        let minute = rest / 60_000_000
        rest -= minute * 60_000_000
        let second = rest / 1_000_000
        let fraction = rest - second * 1_000_000
        let bc = year <= 0
        let displayYear = bc ? 1 - year : year
        var s = pad(displayYear, 4) + "-" + pad(month, 2) + "-" + pad(day, 2) + " "
        s += pad(hour, 2) + ":" + pad(minute, 2) + ":" + pad(second, 2)
        if fraction != 0 { // as the server prints it: no trailing zeros
            var digits = Substring(pad(fraction, 6))
            while digits.last == "0" { digits.removeLast() }
            s += "." + digits
        }
        s += "+00"
        if bc { s += " BC" }
        return s
    }

    private static func pad(_ value: Int64, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }

    enum ParseError: Error, Equatable {
        case malformed
        case infinite
    }

    /// Parses the ISO output of `timestamptz`, `timestamp` and `date`:
    /// `YYYY-MM-DD[( |T)HH:MM[:SS[.f…]]][Z|±HH[:MM[:SS]]|±HHMM][ BC]`, a year
    /// of 4+ digits. A value without an offset is read as UTC. Fractions
    /// beyond microseconds are rounded. `infinity` / `-infinity` throw
    /// `.infinite`.
    static func parse(_ text: String) throws(ParseError) -> Int64 {
        if text == "infinity" || text == "-infinity" { throw .infinite }
        var scanner = ByteScanner(Array(text.utf8))
        var bc = false
        if scanner.bytes.count > 3, scanner.bytes.suffix(3).elementsEqual(" BC".utf8) {
            bc = true
            scanner.bytes.removeLast(3)
        }
        guard let yearDigits = scanner.digits(min: 4, max: 9), scanner.take("-"),
              let month = scanner.digits(min: 2, max: 2), scanner.take("-"),
              let day = scanner.digits(min: 2, max: 2)
        else { throw .malformed }
        var year = yearDigits
        if bc {
            guard year >= 1 else { throw .malformed }
            year = 1 - year
        }
        guard (1...12).contains(month), day >= 1, day <= daysInMonth(year: year, month: month) else { throw .malformed }
        var micros: Int64 = 0
        var offsetSeconds: Int64 = 0
        if !scanner.atEnd {
            guard scanner.take(" ") || scanner.take("T"),
                  let hour = scanner.digits(min: 2, max: 2), scanner.take(":"),
                  let minute = scanner.digits(min: 2, max: 2)
            else { throw .malformed }
            var second: Int64 = 0
            if scanner.take(":") {
                guard let s = scanner.digits(min: 2, max: 2) else { throw .malformed }
                second = s
            }
            var fraction: Int64 = 0
            if scanner.take(".") {
                guard let (value, count) = scanner.fractionDigits() else { throw .malformed }
                fraction = value
                if count < 6 {
                    for _ in count..<6 { fraction *= 10 }
                }
            }
            guard hour <= 24, minute <= 59, second <= 60, hour < 24 || (minute == 0 && second == 0 && fraction == 0)
            else { throw .malformed }
            micros = ((hour * 60 + minute) * 60 + second) * 1_000_000 + fraction
            if scanner.take("Z") {
                offsetSeconds = 0
            } else if let sign = scanner.sign() {
                guard let offsetHours = scanner.digits(min: 2, max: 2) else { throw .malformed }
                var offsetMinutes: Int64 = 0, offsetSecs: Int64 = 0
                if scanner.take(":") {
                    guard let m = scanner.digits(min: 2, max: 2) else { throw .malformed }
                    offsetMinutes = m
                    if scanner.take(":") {
                        guard let s = scanner.digits(min: 2, max: 2) else { throw .malformed }
                        offsetSecs = s
                    }
                } else if let m = scanner.digits(min: 2, max: 2) {
                    offsetMinutes = m
                }
                guard offsetHours <= 15, offsetMinutes <= 59, offsetSecs <= 59 else { throw .malformed }
                offsetSeconds = sign * (offsetHours * 3600 + offsetMinutes * 60 + offsetSecs)
            }
        }
        guard scanner.atEnd else { throw .malformed }
        let days = daysFromCivil(year: year, month: month, day: day)
        let (total, overflow) = days.multipliedReportingOverflow(by: microsecondsPerDay)
        guard !overflow else { throw .malformed }
        return total + micros - offsetSeconds * 1_000_000
    }

    static func daysInMonth(year: Int64, month: Int64) -> Int64 {
        switch month {
        case 2:
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
            return leap ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }
}

/// A tiny cursor over ASCII bytes.
struct ByteScanner {
    var bytes: [UInt8]
    var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }

    mutating func take(_ character: Unicode.Scalar) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(ascii: character) else { return false }
        index += 1
        return true
    }

    /// `+1` / `-1` for a leading sign.
    mutating func sign() -> Int64? {
        if take("+") { return 1 }
        if take("-") { return -1 }
        return nil
    }

    mutating func digits(min: Int, max: Int) -> Int64? {
        var value: Int64 = 0
        var count = 0
        while index < bytes.count, count < max, (48...57).contains(bytes[index]) {
            value = value * 10 + Int64(bytes[index] - 48)
            index += 1
            count += 1
        }
        return count >= min ? value : nil
    }

    /// Up to 6 significant fraction digits (more are rounded half-up).
    mutating func fractionDigits() -> (Int64, Int)? {
        var value: Int64 = 0
        var count = 0
        var roundUp = false
        var seen = 0
        while index < bytes.count, (48...57).contains(bytes[index]) {
            let digit = Int64(bytes[index] - 48)
            if count < 6 {
                value = value * 10 + digit
                count += 1
            } else if seen == 6 {
                roundUp = digit >= 5
            }
            seen += 1
            index += 1
        }
        guard seen > 0 else { return nil }
        return (value + (roundUp ? 1 : 0), count)
    }
}

/// `bytea` text forms: hex (`\x0a1b…`, the default `bytea_output`) and the
/// legacy escape format (`abc\\000\\\\`).
enum PostgresByteaText {
    enum ParseError: Error, Equatable {
        case malformed
    }

    static func parse(_ text: [UInt8]) throws(ParseError) -> [UInt8] {
        if text.count >= 2, text[0] == UInt8(ascii: "\\"), text[1] == UInt8(ascii: "x") {
            return try parseHex(text[2...])
        }
        return try parseEscape(text)
    }

    static func formatHex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
        out.reserveCapacity(2 + bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }

    private static func parseHex(_ hex: ArraySlice<UInt8>) throws(ParseError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(hex.count / 2)
        var high: UInt8?
        for c in hex {
            if c == 32 || c == 9 || c == 10 || c == 13 { // the server's input accepts whitespace between pairs
                guard high == nil else { throw .malformed }
                continue
            }
            guard let n = nibble(c) else { throw .malformed }
            if let h = high {
                out.append(h << 4 | n)
                high = nil
            } else {
                high = n
            }
        }
        guard high == nil else { throw .malformed }
        return out
    }

    private static func parseEscape(_ text: [UInt8]) throws(ParseError) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        var i = 0
        let backslash = UInt8(ascii: "\\")
        while i < text.count {
            let c = text[i]
            guard c == backslash else {
                out.append(c)
                i += 1
                continue
            }
            if i + 1 < text.count, text[i + 1] == backslash {
                out.append(backslash)
                i += 2
                continue
            }
            guard i + 3 < text.count,
                  (48...51).contains(text[i + 1]), (48...55).contains(text[i + 2]), (48...55).contains(text[i + 3])
            else { throw .malformed }
            out.append((text[i + 1] - 48) << 6 | (text[i + 2] - 48) << 3 | (text[i + 3] - 48))
            i += 4
        }
        return out
    }
}
