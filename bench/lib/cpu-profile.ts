/**
 * Reads a V8 `.cpuprofile` (from `node --cpu-prof`) into the two views that point at a fix:
 * self time per function and per package (npm package, node internals, or our own files).
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

export interface SelfTime {
  readonly name: string;
  readonly ms: number;
  readonly share: number;
}

function packageOf(url: string, functionName: string): string {
  if (url === '') return functionName.startsWith('(') ? functionName : '(native)';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (m?.[1] !== undefined) return m[1];
  if (url.startsWith('node:')) return 'node internals';
  const ours = /\/(functions|bench|test)\/(.*)$/.exec(url);
  if (ours?.[1] !== undefined && ours[2] !== undefined) return `${ours[1]}/${ours[2]}`;
  return url;
}

export function summarizeProfile(
  file: string,
  top = 25,
): { byFunction: SelfTime[]; byPackage: SelfTime[]; totalMs: number } {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const fn = new Map<string, number>();
  const pkg = new Map<string, number>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const node = byId.get(id);
    if (node === undefined) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    total += us;
    const shortUrl = url.replace(/^.*\/(node_modules|functions|bench)\//, '$1/');
    const key = `${functionName || '(anonymous)'} ${shortUrl}${url ? `:${lineNumber + 1}` : ''}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const p = packageOf(url, functionName);
    pkg.set(p, (pkg.get(p) ?? 0) + us);
  }
  const rank = (m: Map<string, number>) =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, share: total === 0 ? 0 : us / total }));
  return { byFunction: rank(fn), byPackage: rank(pkg), totalMs: total / 1000 };
}
