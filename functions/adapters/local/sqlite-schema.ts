/**
 * Schema versioning shared by the local SQLite files (the mailbox index, the small-blob rows):
 * `PRAGMA user_version` says which schema a file has. An older one gets `schema` (idempotent
 * `CREATE … IF NOT EXISTS` statements) and the new version in one transaction; a newer one is
 * refused rather than misread.
 */
import type Database from 'better-sqlite3';

export function migrateSchema(
  db: Database.Database,
  what: string,
  schema: string,
  schemaVersion: number,
): void {
  const version = Number(db.pragma('user_version', { simple: true }));
  if (version > schemaVersion) {
    throw new Error(
      `${what} schema v${version} is newer than this mail-relay (v${schemaVersion}); upgrade it`,
    );
  }
  if (version < schemaVersion) {
    db.transaction(() => {
      db.exec(schema);
      db.pragma(`user_version = ${schemaVersion}`);
    }).immediate();
  }
}
