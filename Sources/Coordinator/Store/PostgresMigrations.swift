import PostgresClient

/// One step of the PostgreSQL schema: statements run in one transaction, in order (each is sent on
/// its own: the extended query protocol takes one statement at a time).
struct PostgresMigration: Sendable {
    var version: Int64
    var statements: [String]
}

/// The PostgreSQL schema, as versioned migrations, and the migrator.
///
/// Times are `BIGINT` milliseconds since 1970 (as in SQLite: exact round trips, and the audit
/// table's month partitions are plain integer ranges). Text columns that are ordered or compared
/// byte-wise in SQLite use `COLLATE "C"` so that both stores order names the same way.
enum PostgresMigrations {
    /// Advisory-lock keys (`pg_advisory_xact_lock(classID, objectID)`), fixed for every node.
    enum LockKey {
        /// "Coor": the namespace of every lock this store takes.
        static let classID: Int32 = 0x436F_6F72
        /// Held by the migrating transaction.
        static let migrations: Int32 = 1
        /// Held by each audit append transaction, from before its `nextval` to its commit.
        static let auditAppend: Int32 = 2
        /// Held while partitions are created or renamed.
        static let partitions: Int32 = 3
    }

    /// The newest version this build knows.
    static var latestVersion: Int64 { all.map(\.version).max() ?? 0 }

    static let all: [PostgresMigration] = [
        PostgresMigration(
            version: 1,
            statements: [
                """
                CREATE TABLE tokens (
                    id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
                    secret_hash BYTEA NOT NULL UNIQUE,
                    subject TEXT NOT NULL,
                    policy TEXT NOT NULL,
                    created_at BIGINT NOT NULL,
                    expires_at BIGINT,
                    revoked_at BIGINT,
                    inserted BIGINT GENERATED ALWAYS AS IDENTITY
                )
                """,
                "CREATE INDEX tokens_by_age ON tokens (created_at, inserted)",
                """
                CREATE TABLE documents (
                    kind TEXT COLLATE "C" NOT NULL,
                    name TEXT COLLATE "C" NOT NULL,
                    json TEXT NOT NULL,
                    updated_at BIGINT NOT NULL,
                    PRIMARY KEY (kind, name)
                )
                """,
                """
                CREATE TABLE settings (
                    key TEXT COLLATE "C" NOT NULL PRIMARY KEY,
                    value TEXT NOT NULL
                )
                """,
                // Audit sequence numbers; only taken under the audit-append lock.
                "CREATE SEQUENCE audit_seq AS BIGINT MINVALUE 1 NO CYCLE",
                // Idempotency across partitions (a unique index on the partitioned table would have to
                // include recorded_at) and across detached partitions. `digest` is SHA-256 of the
                // content compared by `sameContent`.
                """
                CREATE TABLE audit_ids (
                    event_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
                    seq BIGINT NOT NULL UNIQUE,
                    digest BYTEA NOT NULL,
                    recorded_at BIGINT NOT NULL
                )
                """,
                // Range-partitioned by month of recorded_at. No DEFAULT partition: PostgreSQL refuses
                // DETACH PARTITION … CONCURRENTLY while one exists; a missing month is created on demand
                // by the append instead.
                """
                CREATE TABLE audit_events (
                    seq BIGINT NOT NULL,
                    event_id TEXT NOT NULL,
                    actor TEXT NOT NULL,
                    action TEXT NOT NULL,
                    resource TEXT NOT NULL,
                    outcome TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    recorded_at BIGINT NOT NULL,
                    node_id TEXT NOT NULL,
                    PRIMARY KEY (seq, recorded_at)
                ) PARTITION BY RANGE (recorded_at)
                """,
                auditAppendFunction,
            ]),
        // Change feed: every change of a policy, breaker configuration or token is announced with
        // NOTIFY on `changeChannel` when its transaction commits, whoever made it (a node, or an
        // operator with psql). Nodes LISTEN on the primary and reload what changed.
        PostgresMigration(
            version: 2,
            statements: [
                """
                CREATE FUNCTION coordinator_notify_document() RETURNS trigger LANGUAGE plpgsql AS $body$
                BEGIN
                    IF TG_OP = 'DELETE' THEN
                        PERFORM pg_notify('\(changeChannel)', 'document:' || OLD.kind || ':' || OLD.name);
                        RETURN OLD;
                    END IF;
                    IF TG_OP = 'UPDATE' AND OLD.json IS NOT DISTINCT FROM NEW.json THEN
                        RETURN NEW;
                    END IF;
                    PERFORM pg_notify('\(changeChannel)', 'document:' || NEW.kind || ':' || NEW.name);
                    RETURN NEW;
                END
                $body$
                """,
                """
                CREATE TRIGGER documents_notify AFTER INSERT OR UPDATE OR DELETE ON documents
                FOR EACH ROW EXECUTE FUNCTION coordinator_notify_document()
                """,
                """
                CREATE FUNCTION coordinator_notify_token() RETURNS trigger LANGUAGE plpgsql AS $body$
                BEGIN
                    IF TG_OP = 'INSERT' THEN
                        PERFORM pg_notify('\(changeChannel)', 'token_created:' || encode(NEW.secret_hash, 'hex'));
                    ELSIF TG_OP = 'DELETE' THEN
                        PERFORM pg_notify('\(changeChannel)', 'token_revoked:' || OLD.id || ':' || encode(OLD.secret_hash, 'hex'));
                        RETURN OLD;
                    ELSIF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
                        PERFORM pg_notify('\(changeChannel)', 'token_revoked:' || OLD.id || ':' || encode(OLD.secret_hash, 'hex'));
                    ELSIF OLD IS DISTINCT FROM NEW THEN
                        PERFORM pg_notify('\(changeChannel)', 'token_changed:' || OLD.id || ':' || encode(OLD.secret_hash, 'hex'));
                    END IF;
                    RETURN NEW;
                END
                $body$
                """,
                """
                CREATE TRIGGER tokens_notify AFTER INSERT OR UPDATE OR DELETE ON tokens
                FOR EACH ROW EXECUTE FUNCTION coordinator_notify_token()
                """,
            ]),
    ]

    /// The channel the change feed NOTIFYs on. Payloads: `document:<kind>:<name>` (a policy or breaker
    /// configuration was written or deleted), `token_created:<secret SHA-256 hex>`,
    /// `token_revoked:<id>:<hex>` (revoked or deleted) and `token_changed:<id>:<hex>` (any other edit of
    /// a token row): every node drops what it cached of that token, in memory and in Redis.
    static let changeChannel = "coordinator_changes"

    /// Appends a batch of audit events in one statement (so one round trip, and the lock is held
    /// only from inside the statement to its commit). Takes the audit-append advisory lock first, so
    /// the queries after it see every append committed before (each statement of a volatile
    /// PL/pgSQL function takes a new snapshot under READ COMMITTED) and seqs are drawn in commit
    /// order. Existing ids report their stored seq and digest; new ones draw seqs in input order and
    /// go into `audit_ids` and `audit_events`. Ids must be unique within a batch.
    static let auditAppendFunction = """
        CREATE FUNCTION audit_append(
            ids text[], actors text[], actions text[], resources text[], outcomes text[], details text[],
            recorded bigint[], nodes text[], digests bytea[]
        ) RETURNS TABLE (r_ord bigint, r_seq bigint, r_existed boolean, r_digest text)
        LANGUAGE plpgsql VOLATILE AS $body$
        BEGIN
            PERFORM pg_advisory_xact_lock(\(LockKey.classID), \(LockKey.auditAppend));
            RETURN QUERY
            WITH input AS (
                SELECT * FROM unnest(ids, actors, actions, resources, outcomes, details, recorded, nodes, digests)
                    WITH ORDINALITY AS i(event_id, actor, action, resource, outcome, detail, recorded_at, node_id,
                                         digest, ord)
            ),
            existing AS (
                SELECT i.ord, a.seq, a.digest FROM input i JOIN audit_ids a ON a.event_id = i.event_id
            ),
            fresh AS (
                SELECT f.*, nextval('audit_seq') AS seq
                FROM (SELECT i.* FROM input i
                      WHERE NOT EXISTS (SELECT 1 FROM audit_ids a WHERE a.event_id = i.event_id)
                      ORDER BY i.ord) f
            ),
            new_ids AS (
                INSERT INTO audit_ids(event_id, seq, digest, recorded_at)
                SELECT f.event_id, f.seq, f.digest, f.recorded_at FROM fresh f
            ),
            new_events AS (
                INSERT INTO audit_events(seq, event_id, actor, action, resource, outcome, detail, recorded_at, node_id)
                SELECT f.seq, f.event_id, f.actor, f.action, f.resource, f.outcome, f.detail, f.recorded_at, f.node_id
                FROM fresh f
            )
            SELECT f.ord, f.seq, false, encode(f.digest, 'hex') FROM fresh f
            UNION ALL
            SELECT e.ord, e.seq, true, encode(e.digest, 'hex') FROM existing e;
        END
        $body$
        """

    /// Brings the database to `migrations`' newest version in one transaction holding the migrations
    /// advisory lock: one caller migrates, concurrent callers wait for it and then find nothing to
    /// do. Returns the versions this call applied.
    ///
    /// Fails with `StoreError.unusable` when the database's version is newer than the newest of
    /// `migrations`.
    static func migrate(_ connection: PostgresConnection, _ migrations: [PostgresMigration]) async throws -> [Int64] {
        let latest = migrations.map(\.version).max() ?? 0
        return try await connection.inTransaction {
            _ = try await connection.boundedQuery(
                "SELECT pg_advisory_xact_lock($1, $2)", [String(LockKey.classID), String(LockKey.migrations)])
            _ = try await connection.boundedQuery(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version BIGINT NOT NULL PRIMARY KEY,
                    applied_at BIGINT NOT NULL
                )
                """)
            let rows = try await connection.boundedQuery("SELECT COALESCE(max(version), 0)::text FROM schema_migrations")
            guard let text = rows.first?.first ?? nil, let current = Int64(text) else {
                throw StoreError(.backend, "unreadable schema_migrations version: \(rows)")
            }
            if current > latest {
                throw StoreError(
                    .unusable,
                    "the database schema version \(current) is newer than this build's \(latest); "
                        + "upgrade the coordinator")
            }
            var applied: [Int64] = []
            for migration in migrations.sorted(by: { $0.version < $1.version }) where migration.version > current {
                for statement in migration.statements {
                    _ = try await connection.boundedQuery(statement)
                }
                _ = try await connection.boundedQuery(
                    """
                    INSERT INTO schema_migrations(version, applied_at)
                    VALUES ($1, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                    """, [String(migration.version)])
                applied.append(migration.version)
            }
            return applied
        }
    }
}

extension PostgresConnection {
    /// Runs `body` between `BEGIN` and `COMMIT` on this connection; on failure sends `ROLLBACK`
    /// (best effort) and rethrows.
    func inTransaction<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        _ = try await query("BEGIN")
        do {
            let value = try await body()
            _ = try await query("COMMIT")
            return value
        } catch {
            _ = try? await query("ROLLBACK")
            throw error
        }
    }
}
