#!/usr/bin/env python3
"""Medians of each system and Aula / peer ratios from a compare.sh results folder
(drain/summary.txt, latency/summary.txt, append/summary.txt, whichever exist).
Usage: ratios.py RESULTS_DIR"""
import os, re, statistics, sys
from collections import defaultdict

root = sys.argv[1]

def rows(part):
    path = os.path.join(root, part, 'summary.txt')
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        if line.startswith('round='):
            out.append({k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line)})
    return out

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None

def fmt(x, unit=''):
    return 'n/a' if x is None else f'{x:,.0f}{unit}'

def ratio(a, b):
    return 'n/a' if a is None or not b else f'{a / b:.2f}'

drain = defaultdict(list)
for r in rows('drain'):
    drain[r['system']].append(r)
if drain:
    names = {'gw': 'graphile-worker 0.17.3', 'events': 'aula --issued-by-events', 'aula': 'aula (tasks without event)'}
    print('drain (medians over rounds; CPU = server + workers; WAL from the poller):')
    stats = {}
    for system, rs in drain.items():
        stats[system] = {m: med([num(r.get(m)) for r in rs]) for m in ('rate', 'cpu_us_per_task', 'wal_bytes_per_task')}
        s = stats[system]
        print(f"  {names.get(system, system):<28} {fmt(s['rate'], ' tasks/s'):>14}  {fmt(s['cpu_us_per_task'], ' us CPU/task'):>16}"
              f"  {fmt(s['wal_bytes_per_task'], ' B WAL/task'):>16}  rounds: {', '.join(r['rate'] for r in rs)}")
    if 'gw' in stats:
        for system in ('events', 'aula'):
            if system in stats:
                print(f"  ratio {names[system]} / graphile-worker: rate {ratio(stats[system]['rate'], stats['gw']['rate'])}, "
                      f"CPU per task {ratio(stats[system]['cpu_us_per_task'], stats['gw']['cpu_us_per_task'])}, "
                      f"WAL per task {ratio(stats[system]['wal_bytes_per_task'], stats['gw']['wal_bytes_per_task'])}")

lat = rows('latency')
if lat:
    path = os.path.join(root, 'latency', 'summary.txt')
    text = open(path).read()
    g50 = med([float(x) for x in re.findall(r'system=gw .*?median ([\d.]+)', text)])
    g99 = med([float(x) for x in re.findall(r'system=gw .*?p99 ([\d.]+)', text)])
    e50 = med([float(x) for x in re.findall(r'event commit -> task start \(ms\): .*?p50 ([\d.]+)', text)])
    e99 = med([float(x) for x in re.findall(r'event commit -> task start \(ms\): .*?p99 ([\d.]+)', text)])
    t50 = med([float(x) for x in re.findall(r'task insert -> task start \(ms\): .*?p50 ([\d.]+)', text)])
    t99 = med([float(x) for x in re.findall(r'task insert -> task start \(ms\): .*?p99 ([\d.]+)', text)])
    f2 = lambda x: 'n/a' if x is None else f'{x:.2f}'
    print('latency (medians over rounds, ms):')
    print(f'  graphile-worker add_job -> start   p50 {f2(g50)}  p99 {f2(g99)}')
    print(f'  aula event commit -> task start    p50 {f2(e50)}  p99 {f2(e99)}   ratio to graphile-worker p50 {ratio(e50, g50)}, p99 {ratio(e99, g99)}')
    print(f'  aula task insert -> task start     p50 {f2(t50)}  p99 {f2(t99)}')

app = defaultdict(list)
for r in rows('append'):
    app[(r['system'], r.get('clients'))].append(num(r.get('tps')))
if app:
    print('append (median tx/s):')
    for c in sorted({k[1] for k in app}, key=lambda x: int(x or 0)):
        p = med(app.get(('pgbench_select_insert', c), []))
        a = med(app.get(('aula_command_path', c), []))
        print(f'  {c:>3} clients: pgbench select+insert {fmt(p)}  aula command path {fmt(a)}  ratio {ratio(a, p)}')
