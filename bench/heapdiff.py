#!/usr/bin/env python3
"""
Which objects grew between two V8 heap snapshots (e.g. the two SOAK_HEAPSNAP=120,800 of bench/soak.py):
count and self size by (node type, constructor name), largest growth first.

    python3 bench/heapdiff.py first.heapsnapshot second.heapsnapshot
"""
import json, sys, collections
def load(p):
    h = json.load(open(p))
    m = h['snapshot']['meta']; nf = m['node_fields']; types = m['node_types'][0]; strings = h['strings']
    n = len(nf); N = h['nodes']
    it, iname, isz = nf.index('type'), nf.index('name'), nf.index('self_size')
    agg = collections.Counter(); sz = collections.Counter()
    for i in range(0, len(N), n):
        t = types[N[i+it]]
        name = strings[N[i+iname]] if t in ('object', 'closure', 'native') else t
        if t == 'string' or t == 'concatenated string' or t == 'sliced string': name = 'string'
        k = (t, name[:80])
        agg[k] += 1; sz[k] += N[i+isz]
    return agg, sz
a, asz = load(sys.argv[1]); b, bsz = load(sys.argv[2])
print('total self size MB', sum(asz.values())/1e6, '->', sum(bsz.values())/1e6)
d = sorted(((b[k]-a[k], bsz[k]-asz[k], k) for k in set(a)|set(b)), key=lambda x: -x[1])
for x in d[:30]: print(x[0], x[1], x[2])
print('--- by count')
for x in sorted(d, key=lambda x: -x[0])[:25]: print(x[0], x[1], x[2])
