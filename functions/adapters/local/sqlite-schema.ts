/**
 * Schema versioning shared by the local SQLite files (the mailbox index, the small-blob rows):
 * `PRAGMA user_version` says which schema a file has. An older one gets `schema` (idempotent
 * `CREATE … IF NOT EXISTS` statements), then `upgrade` (for what those cannot say, such as a new
 * column of an existing table), and the new version, in one transaction; a newer one is refused
 * rather than misread.
 */
import type Database from 'better-sqlite3';

export function migrateSchema(
  db: Database.Database,
  what: string,
  schema: string,
  schemaVersion: number,
  upgrade?: (db: Database.Database) => void,
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
      upgrade?.(db);
      db.pragma(`user_version = ${schemaVersion}`);
    }).immediate();
  }
}

/** Adds `column` (a definition such as `size INTEGER`) to `table` unless the table has it already. */
export function addColumnIfMissing(db: Database.Database, table: string, column: string): void {
  const name = column.split(/\s/, 1)[0];
  const columns = db.pragma(`table_info(${table})`) as { name: string }[];
  if (!columns.some((c) => c.name === name)) db.exec(`ALTER TABLE ${table} ADD COLUMN ${column}`);
}
