/** A day in milliseconds: retention, deletion memory and the replay window are counted in days. */
export const DAY_MS = 24 * 60 * 60 * 1000;
