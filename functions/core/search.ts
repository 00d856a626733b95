/**
 * How `q` (LIST's search) compares text: both the stored from/to/subject and the query are folded
 * the same way, and the query is then found as a substring. Unicode normalization first (NFKC), so
 * that text typed one way finds text written another: `é` composed or as `e` + U+0301 (macOS writes
 * the second in file names), full-width `ＡＢＣ` and `ABC`, half-width `ﾃｽﾄ` and `テスト`; then lower case.
 * Both index adapters (SQLite, DynamoDB) store their folded copies with this, and fold `q` with it.
 */
export function foldForSearch(text: string): string {
  return text.normalize('NFKC').toLowerCase();
}
