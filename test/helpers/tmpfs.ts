/**
 * A small tmpfs of its own for the suites that fill a disk (test/e2e/disk-full.test.ts). Mounting
 * needs root (or CAP_SYS_ADMIN): without it the suite is announced as not run (or fails under
 * MAIL_RELAY_FULL_TESTS=1), as a missing moto_server is.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { requireOrAnnounce } from './env.ts';

/**
 * Mounts a tmpfs of `sizeMiB` at `/tmp/<name>-<pid>` (a name per test file, so parallel files never
 * share one) and returns its path, or null (announced) where this process cannot mount.
 */
export function mountTmpfs(name: string, sizeMiB: number): string | null {
  const point = join('/tmp', `${name}-${process.pid}`);
  mkdirSync(point, { recursive: true });
  const mounted =
    process.platform === 'linux' &&
    spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m,mode=0700`, 'tmpfs', point], {
      stdio: 'ignore',
    }).status === 0;
  if (!mounted) rmSync(point, { recursive: true, force: true });
  return requireOrAnnounce(
    mounted,
    `${name}: the relay on a full disk (needs to mount a tmpfs)`,
    'run the tests as root, or in a container with CAP_SYS_ADMIN',
  )
    ? point
    : null;
}

/** Unmounts (lazily: a process that still holds a file there cannot keep it mounted) and removes it. */
export function unmountTmpfs(point: string): void {
  spawnSync('umount', ['-l', point], { stdio: 'ignore' });
  rmSync(point, { recursive: true, force: true });
}

/** Writes `path` until the file system has not one byte left. */
export function fillDisk(path: string): void {
  const fd = openSync(path, 'a');
  try {
    for (const chunk of [Buffer.alloc(1024 * 1024), Buffer.alloc(4096), Buffer.alloc(512)]) {
      try {
        for (;;) writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Deletes what `fillDisk` wrote. */
export function freeDisk(path: string): void {
  unlinkSync(path);
}
