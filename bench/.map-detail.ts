import { readFileSync, readdirSync } from 'node:fs';
const dir = process.argv[2] ?? '';
const B = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
function dec(seg: string) { const out: number[] = []; let v = 0, sh = 0; for (const ch of seg) { const d = B.indexOf(ch); v += (d & 31) << sh; if (d & 32) sh += 5; else { out.push(v & 1 ? -(v >>> 1) : v >>> 1); v = 0; sh = 0; } } return out; }
const map = JSON.parse(readFileSync(`${dir}/index.mjs.map`, 'utf8')) as { sources: string[]; mappings: string };
const lines = readFileSync(`${dir}/index.mjs`, 'utf8').split('\n');
const sizes = new Map<string, number>(); let src = 0;
map.mappings.split(';').forEach((lm, ln) => { let col = 0, st = 0; let own: string | null = null; for (const seg of lm.split(',')) { if (!seg) continue; const f = dec(seg); col += f[0] ?? 0; if (own) sizes.set(own, (sizes.get(own) ?? 0) + col - st); if (f.length >= 4) src += f[1] ?? 0; own = f.length >= 4 ? (map.sources[src] ?? '?').replace(/^.*node_modules\//, '').split('/').slice(0, Number(process.argv[3] ?? 3)).join('/') : null; st = col; } if (own) sizes.set(own, (sizes.get(own) ?? 0) + (lines[ln] ?? '').length - st); });
for (const [k, v] of [...sizes].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log((v / 1024).toFixed(0).padStart(6), 'KB', k);
