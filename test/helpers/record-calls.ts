/** Test spies on real objects: the object keeps working, each call is written down first. */

/**
 * Wraps `methods` of `target` (on the object itself) so that each call is pushed to `calls` as
 * `<name>.<method>`, then runs the real method: e.g. every write a command makes to a store.
 */
export function recordCalls<T extends object>(
  calls: string[],
  target: T,
  name: string,
  methods: readonly (keyof T)[],
): void {
  for (const m of methods) {
    const real = target[m] as (...args: unknown[]) => unknown;
    Object.assign(target, {
      [m]: (...args: unknown[]) => {
        calls.push(`${name}.${String(m)}`);
        return real.apply(target, args);
      },
    });
  }
}
