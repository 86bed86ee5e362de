import CSQLite3

/// A failure reported by SQLite or by this client, with a stable code.
///
/// Every SQLite result code is turned into a `SQLiteError` in exactly one place,
/// ``SQLiteError/init(resultCode:message:)``; nothing else in the package interprets C result codes.
public struct SQLiteError: Error, Sendable, Equatable, CustomStringConvertible {
    /// Stable, machine-readable classes of failure.
    public enum Code: String, Sendable, Equatable {
        /// A `UNIQUE` or `PRIMARY KEY` constraint was violated.
        case uniqueViolation
        /// Another constraint (`NOT NULL`, `CHECK`, `FOREIGN KEY`, …) was violated.
        case constraint
        /// The database was locked by another connection for longer than the busy timeout.
        case busy
        /// The file exists but is not an SQLite database (or is encrypted).
        case notADatabase
        /// The database file is corrupt.
        case corrupt
        /// The database file could not be opened (missing directory, permissions, …).
        case cannotOpen
        /// A write was attempted on a read-only database.
        case readOnly
        /// The operating system reported an I/O error.
        case ioError
        /// The disk (or the database size limit) is full.
        case full
        /// The connection has been closed; nothing more can run on it.
        case closed
        /// The database schema is newer than the migrations this build knows.
        case schemaTooNew
        /// A column value did not have the type the caller asked for.
        case typeMismatch
        /// The API was used incorrectly (for example a nested transaction).
        case misuse
        /// Any other SQLite failure; see ``SQLiteError/extendedResultCode`` and the message.
        case other
    }

    /// The stable class of the failure.
    public var code: Code
    /// The SQLite extended result code (`sqlite3_extended_errcode`), or the primary code SQLite
    /// documents for errors raised by this client (`SQLITE_MISUSE` for ``Code/closed``,
    /// `SQLITE_MISMATCH` for ``Code/typeMismatch``, `SQLITE_ERROR` for ``Code/schemaTooNew``).
    public var extendedResultCode: Int32
    /// A human-readable message (SQLite's `sqlite3_errmsg` when it comes from SQLite).
    public var message: String

    /// Creates an error with an explicit code.
    public init(_ code: Code, extendedResultCode: Int32, message: String) {
        self.code = code
        self.extendedResultCode = extendedResultCode
        self.message = message
    }

    /// Turns an SQLite result code into a typed error. This is the only place result codes are
    /// interpreted.
    ///
    /// - Parameters:
    ///   - resultCode: A primary or extended SQLite result code other than `SQLITE_OK`, `SQLITE_ROW`
    ///     or `SQLITE_DONE`.
    ///   - message: The message SQLite gave (`sqlite3_errmsg`), or `sqlite3_errstr` if none.
    public init(resultCode: Int32, message: String) {
        let primary = resultCode & 0xFF
        let code: Code
        switch primary {
        case SQLITE_CONSTRAINT:
            // SQLITE_CONSTRAINT_PRIMARYKEY = CONSTRAINT | 6<<8, SQLITE_CONSTRAINT_UNIQUE = CONSTRAINT | 8<<8.
            let sub = resultCode >> 8
            code = (sub == 6 || sub == 8) ? .uniqueViolation : .constraint
        case SQLITE_BUSY, SQLITE_LOCKED: code = .busy
        case SQLITE_NOTADB: code = .notADatabase
        case SQLITE_CORRUPT: code = .corrupt
        case SQLITE_CANTOPEN: code = .cannotOpen
        case SQLITE_READONLY: code = .readOnly
        case SQLITE_IOERR: code = .ioError
        case SQLITE_FULL: code = .full
        case SQLITE_MISUSE: code = .misuse
        case SQLITE_MISMATCH: code = .typeMismatch
        default: code = .other
        }
        self.init(code, extendedResultCode: resultCode, message: message)
    }

    /// The error every operation reports once the connection is closed.
    public static let closed = SQLiteError(.closed, extendedResultCode: SQLITE_MISUSE, message: "connection is closed")

    /// A text description: the code, the extended result code and the message.
    public var description: String { "sqlite \(code.rawValue) (\(extendedResultCode)): \(message)" }

    static func typeMismatch(_ message: String) -> SQLiteError {
        SQLiteError(.typeMismatch, extendedResultCode: SQLITE_MISMATCH, message: message)
    }

    static func misuse(_ message: String) -> SQLiteError {
        SQLiteError(.misuse, extendedResultCode: SQLITE_MISUSE, message: message)
    }
}
