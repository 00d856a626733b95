/**
 * What every benchmark reports. A measurement is one row of the table and one key of
 * `bench/results.json`; `ratio` is `value / reference.value` so that every figure is read against
 * something measured in the same run on the same machine, not against a number from elsewhere.
 */

export interface Reference {
  readonly label: string;
  readonly value: number;
  readonly unit: string;
}

export interface Measurement {
  /** Key in results.json, `<benchmark>.<what>`; stable across runs so history can be diffed. */
  readonly name: string;
  /** What the table shows in its first column. */
  readonly label: string;
  /** null when not measured (then `note` says why). */
  readonly value: number | null;
  readonly unit: string;
  readonly reference: Reference | null;
  readonly ratio: number | null;
  /** The target in words (`≥ 2,000 msg/s`), or '' for a reference row. */
  readonly target: string;
  /** null when there is no target or nothing was measured. */
  readonly meets: boolean | null;
  readonly note?: string;
}

export interface BenchContext {
  /** A fresh directory for this benchmark's files; removed after the run. */
  readonly workDir: string;
  /** Measurements already taken in this run (the cost model reads the others'). */
  readonly earlier: ReadonlyMap<string, Measurement>;
  /** Progress lines for the terminal (stderr), so stdout stays the table. */
  log(line: string): void;
}

export interface Benchmark {
  readonly name: string;
  readonly title: string;
  run(ctx: BenchContext): Promise<Measurement[]>;
}

/** A row for something that could not be measured in this run; never a failure of the run. */
export function notMeasured(
  name: string,
  label: string,
  unit: string,
  target: string,
  why: string,
): Measurement {
  return {
    name,
    label,
    value: null,
    unit,
    reference: null,
    ratio: null,
    target,
    meets: null,
    note: `not measured: ${why}`,
  };
}

/** Builds a row with its ratio computed from the reference. */
export function measured(fields: {
  name: string;
  label: string;
  value: number;
  unit: string;
  reference?: Reference | null;
  target?: string;
  meets?: boolean | null;
  note?: string;
}): Measurement {
  const reference = fields.reference ?? null;
  const ratio = reference !== null && reference.value !== 0 ? fields.value / reference.value : null;
  return {
    name: fields.name,
    label: fields.label,
    value: fields.value,
    unit: fields.unit,
    reference,
    ratio,
    target: fields.target ?? '',
    meets: fields.meets ?? null,
    ...(fields.note === undefined ? {} : { note: fields.note }),
  };
}
