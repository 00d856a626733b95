/**
 * The router queue's redrive setting, shared by the stack (lib/ingest.ts, which sets it) and the
 * router (router-handler.ts, which must not leave a record on its last receive untried).
 */

/** Receives before a message goes to the dead-letter queue (the router is idempotent, so retries are safe). */
export const MAX_RECEIVE_COUNT = 5;
