/**
 * Memory of another process, read from /proc so the figure is the server's own and not the
 * harness's. VmHWM is the kernel's high-water mark of the resident set: a peak that no sampling
 * interval can miss.
 */
import { readFileSync } from 'node:fs';

export interface ProcMemory {
  readonly rssBytes: number;
  readonly peakRssBytes: number;
}

function kbField(status: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (match === null || match[1] === undefined) throw new Error(`/proc status has no ${field}`);
  return Number(match[1]) * 1024;
}

export function procMemory(pid: number): ProcMemory {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rssBytes: kbField(status, 'VmRSS'), peakRssBytes: kbField(status, 'VmHWM') };
}

/** CPU seconds a process has used so far, in user and in kernel (system) mode. */
export function procCpuSplit(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticksPerSecond = 100;
  return { user: Number(fields[11]) / ticksPerSecond, system: Number(fields[12]) / ticksPerSecond };
}

/** CPU seconds (user + system) a process has used so far. */
export function procCpuSeconds(pid: number): number {
  const { user, system } = procCpuSplit(pid);
  return user + system;
}

export function hasProc(): boolean {
  try {
    readFileSync('/proc/self/status', 'utf8');
    return true;
  } catch {
    return false;
  }
}

export const MiB = 1024 * 1024;
