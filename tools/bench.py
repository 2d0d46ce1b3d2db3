#!/usr/bin/env python3
"""Measure the three IO models side by side, with asyncio and threads as yardsticks."""
import argparse
import collections
import contextlib
import json
import math
import os
import pathlib
import platform
import selectors
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import time
from html import escape

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # run as a script
from tools import harness  # noqa: E402
from tools.harness import HERE, SERVERS, free_port, reply_rule, resource, usage  # noqa: E402

MSG = b'abcdefgh' * 8  # 64 bytes, one ping
BUSY = 16  # busy clients beside the idle crowd
NO_PRINT = 'select/no print'
# select_server.py with print() a no-op: what its print of every message costs (loads only).
NO_PRINT_CODE = ['-c', 'import builtins, runpy, sys; builtins.print = lambda *a, **k: None; '
                 'sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")']
# The selectors mechanisms this platform has. selectors_server.py runs on each with the same
# code: its selectors.DefaultSelector() made to return the one named.
SELECTORS = {name: name.capitalize() + 'Selector' for name in ('epoll', 'kqueue', 'devpoll',
                                                               'poll', 'select')
             if hasattr(selectors, name.capitalize() + 'Selector')}


def with_selector(name):
    return ['-c', f'import runpy, selectors, sys; selectors.DefaultSelector = selectors.'
            f'{SELECTORS[name]}; sys.argv = sys.argv[1:]; '
            'runpy.run_path(sys.argv[0], run_name="__main__")']
BATCH = 500  # connections opened at a time, within every server's listen backlog of 1024
# Servers print into a buffer, whatever this shell has set: the same cost in every run.
SERVER_ENV = {k: v for k, v in os.environ.items() if k != 'PYTHONUNBUFFERED'}
SMOKE = 'A smoke run (--quick), too short to rank the servers: `make bench` is the measurement.'

# args: what follows `python`; rule: whose reply rule it follows; script: the tutorial's script
# it runs, or None for a yardstick.
Row = collections.namedtuple('Row', 'args rule script')


def default_mechanism():
    with selectors.DefaultSelector() as sel:
        return next(name for name, cls in SELECTORS.items()
                    if isinstance(sel, getattr(selectors, cls)))


def lift_nofile():
    """Room for 10,000 connections: the soft file limit up to the hard one (macOS: 10240)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for want in (hard, 10240):
        with contextlib.suppress(ValueError, OSError):
            return resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def servers(folder=HERE):
    """name -> Row. The selectors server runs once per mechanism."""
    def script(name, *args, prefix=()):
        path = pathlib.Path(folder, name)
        return Row([*prefix, path, *args], name, path)

    default = default_mechanism()
    found = {'nonblocking': script('nonblocking_server.py'), 'select': script('select_server.py'),
             NO_PRINT: script('select_server.py', prefix=NO_PRINT_CODE)}
    for name in sorted(SELECTORS, key=lambda n: n != default):
        # The default is selectors.DefaultSelector() itself, as the tutorial has it.
        found[f'selectors/{name}'] = script('selectors_server.py', prefix=(
            [] if name == default else with_selector(name)))
    for kind in ('asyncio', 'threads'):
        found[kind] = Row([os.path.abspath(__file__), '--serve', kind], 'selectors_server.py',
                          None)
    return found


def with_compared(rows, folder):
    """The rows, each followed by itself as run from the scripts found in folder (named
    NAME@FOLDER), so that the two take turns in every phase."""
    folder = pathlib.Path(folder).resolve()  # the servers run in this folder, not ours
    there = servers(folder)
    found = {}
    for name, row in rows.items():
        found[name] = row
        if row.script and there[name].script.is_file():
            found[f'{name}@{folder.name}'] = there[name]
    return found


def original(name):
    """The row a --compare row copies: select@before -> select."""
    return name.split('@')[0]


# ---- the yardsticks -------------------------------------------------------------------------

def serve_asyncio(port):
    """The selectors reply rule, in the standard library's own event loop."""
    import asyncio  # only here: the load generator, started for every run, needs none of it

    class UpperSB(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data.upper() + b'_SB')

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(UpperSB, '127.0.0.1', port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class UpperSBHandler(socketserver.BaseRequestHandler):
    """The selectors reply rule, a thread per connection, blocking calls: what the course
    teaches before this chapter."""

    def handle(self):
        try:
            while True:
                data = self.request.recv(1024)
                if not data:
                    return
                self.request.sendall(data.upper() + b'_SB')
        except OSError:
            pass


class ThreadingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def serve(kind, port):
    if hasattr(signal, 'SIGBREAK'):  # Windows: Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    try:
        if kind == 'asyncio':
            serve_asyncio(port)
        else:
            with ThreadingServer(('127.0.0.1', port), UpperSBHandler) as server:
                server.serve_forever()
    except KeyboardInterrupt:
        pass


# ---- measuring a server from outside --------------------------------------------------------

def connect(port, n):
    """Open n connections; the kernel completes them even before the server accepts."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


def ping_all(socks, length, timeout=10):
    """Send one ping on each socket; return those that got a whole reply in time."""
    got = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            try:
                s.send(MSG)
                sel.register(s, selectors.EVENT_READ)
                got[s] = 0
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        waiting = len(got)
        while waiting and time.monotonic() < deadline:
            for key, _ in sel.select(deadline - time.monotonic()):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b''
                if not data:  # refused: a select() server closes what it cannot watch
                    got.pop(s)
                else:
                    got[s] += len(data)
                    if got[s] < length:
                        continue
                sel.unregister(s)
                waiting -= 1
    return [s for s, n in got.items() if n >= length]


def measure_idle(port, pid, seconds):
    with socket.create_connection(('127.0.0.1', port), timeout=5):
        time.sleep(0.2)
        cpu0, t0 = usage(pid)[0], time.perf_counter()
        time.sleep(seconds)
        cpu1, t1 = usage(pid)[0], time.perf_counter()
    return {'idle_cpu_pct': None if cpu0 is None else 100 * (cpu1 - cpu0) / (t1 - t0)}


def cpu_ticks(pid):
    """A process's CPU seconds, all its threads, from /proc's utime and stime: ticks of 10 ms."""
    return usage(pid)[0]


def cpu_ns(pid):
    """--compare: a process's CPU seconds as the scheduler counts them, in nanoseconds (a tick
    is 2 % of a half-second slice). It counts one thread, the first: right for the scripts,
    which have no other, not for the threads row."""
    try:
        with open(f'/proc/{pid}/schedstat') as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return cpu_ticks(pid)


def measure_load(socks, pid, seconds, length, cpu=cpu_ticks):
    """Each socket ping-pongs one 64-byte message for the given time."""
    latencies = []
    got = dict.fromkeys(socks, 0)
    sent_at = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        cpu0, t0 = cpu(pid), time.perf_counter()
        end = t0 + seconds
        for s in socks:
            sent_at[s] = time.perf_counter()
            s.send(MSG)
        now = t0
        while now < end:
            for key, _ in sel.select(end - now):
                s = key.fileobj
                data = s.recv(4096)
                if not data:
                    raise SystemExit('bench: the server closed a connection under load')
                got[s] += len(data)
                if got[s] >= length:
                    now = time.perf_counter()
                    latencies.append(now - sent_at[s])
                    got[s] = 0
                    sent_at[s] = now
                    s.send(MSG)
            now = time.perf_counter()
        cpu1, t1 = cpu(pid), time.perf_counter()
    latencies.sort()
    n = len(latencies)
    cpu = None if cpu0 is None else cpu1 - cpu0
    return {'conns': len(socks), 'round_trips': n, 'rt_per_s': n / (t1 - t0),
            'p50_ms': 1000 * latencies[n // 2] if n else None,
            'p99_ms': 1000 * latencies[min(n - 1, n * 99 // 100)] if n else None,
            'cpu_pct': None if cpu is None else 100 * cpu / (t1 - t0),
            'cpu_us_per_rt': 1e6 * cpu / n if cpu is not None and n else None}


def open_crowd(port, pid, idle, length):
    """Open up to `idle` connections, each answered once, so that we know it is held. A server
    that refuses some is kept to the largest round hundred it holds."""
    base, held = usage(pid)[1], []
    while len(held) < idle:
        batch = connect(port, min(BATCH, idle - len(held)))
        ok = ping_all(batch, length)
        for s in set(batch) - set(ok):
            s.close()
        held += ok
        if len(ok) < len(batch):
            break  # the server's wall
    most = len(held)
    if most < idle:
        for s in held[most // 100 * 100:]:
            s.close()
        held = held[:most // 100 * 100]
        time.sleep(0.2)  # let the server finish with the refused ones
    rss = usage(pid)[1]
    return held, {'idle': len(held), 'asked': idle, 'most': most,
                  'kib_per_conn': (rss - base) / len(held) if held and base else None}


def pin(pid):
    """--compare: the server on one core, this load on another, each staying there (Linux, two
    cores or more), so that two rows differ by their code, not by where the scheduler put them.
    Not for the other rows: it would hold the threads yardstick to one core of two."""
    cores = sorted(getattr(os, 'sched_getaffinity', lambda _: ())(0))
    if len(cores) >= 2:
        os.sched_setaffinity(pid, cores[:1])
        os.sched_setaffinity(0, cores[1:2])


def load_main(args):
    """The load generator: one phase against one running server, JSON on stdout."""
    port, pid, length = args.port, args.pid, args.length
    if args.pin:
        pin(pid)
    kind, _, count = args.phase.partition(':')
    if kind == 'idle':
        result = measure_idle(port, pid, args.seconds)
    else:
        busy = connect(port, BUSY if kind == 'crowd' else int(count))
        if len(ping_all(busy, length)) < len(busy):  # each accepted and answered once
            raise SystemExit(f'bench: the {args.server} server did not answer every client')
        crowd, result = open_crowd(port, pid, int(count), length) if kind == 'crowd' else ([], {})
        result.update(measure_load(busy, pid, args.seconds, length,
                                   cpu=cpu_ns if args.pin else cpu_ticks))
        for s in busy + crowd:
            s.close()
    json.dump(result, sys.stdout)


# ---- running the whole benchmark ------------------------------------------------------------

def run_phase(name, row, phase, seconds, pinned=False):
    """Start a fresh server, drive one phase from a separate process, stop the server."""
    port = free_port()
    with tempfile.TemporaryFile() as err:
        server = harness.start([*row.args, '--port', port], env=SERVER_ENV,
                               stdout=subprocess.DEVNULL, stderr=err)
        try:
            if not harness.wait_until_accepting(server, port, timeout=10):
                err.seek(0)
                said = err.read().decode(errors='replace').strip().splitlines()[-1:]
                raise SystemExit(f'bench: the {name} server did not start' +
                                 ''.join(f': {line}' for line in said))
            load = subprocess.run(
                [sys.executable, os.path.abspath(__file__), '--load', phase, '--server', name,
                 '--port', str(port), '--pid', str(server.pid), '--seconds', str(seconds),
                 '--length', str(len(reply_rule(row.rule, MSG))), *['--pin'] * pinned],
                stdout=subprocess.PIPE, timeout=300)
            if load.returncode:
                raise SystemExit(f'bench: the load generator failed against the {name} server')
            return json.loads(load.stdout)
        finally:
            try:  # Ctrl-C, as at a terminal. Threads winding down 10,000 handlers take 10 s or
                harness.interrupt(server, timeout=1)  # more, and the figures are in: kill them.
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


Run = collections.namedtuple('Run', 'name phase what seconds slice')


def plan(args):
    """Every run in order. First each server's idle CPU; then each load and crowd in short
    slices, the servers taking turns, in order and then in reverse, so that a row and its
    --compare row are each measured first as often as the other."""
    full = [name for name in args.rows if original(name) != NO_PRINT]
    runs = [Run(name, 'idle', 'idle CPU', args.idle_seconds, None) for name in full]
    phases = [(f'load:{n}', f'{n} connection{"s" * (n != 1)}', list(args.rows))
              for n in args.conns]
    # 16 busy clients beside 0 idle ones is the load of 16: measure it once.
    phases += [(f'crowd:{n}', f'{BUSY} busy beside {n:,} idle', full) for n in args.idle
               if n or BUSY not in args.conns]
    for phase, what, names in phases:
        for i in range(args.slices):
            runs += [Run(name, phase, what, args.seconds, i)
                     for name in (names if i % 2 == 0 else names[::-1])]
    return runs


def run_all(args, progress):
    slices = {}
    compared = {original(name) for name in args.rows if '@' in name}
    for run in plan(args):
        with progress.step(run):
            result = run_phase(run.name, args.rows[run.name], run.phase, run.seconds,
                               pinned=original(run.name) in compared)
        slices.setdefault((run.name, run.phase), []).append(result)
    # Of each phase's slices, keep the whole slice whose CPU per round trip is the median: a
    # noisy moment on a shared machine then moves one slice, not the result, and a row never
    # mixes slices.
    picked = {key: median_slice(found) for key, found in slices.items() if key[1] != 'idle'}
    results = {name: {} for name in args.rows}
    for name, r in results.items():
        # --compare's figure: the least CPU per round trip of any slice (see print_compared).
        r['cpu_us_per_rt_least'] = {phase: least_per_rt(found) for (row, phase), found in
                                    slices.items() if row == name and phase != 'idle'}
        r.update(slices.get((name, 'idle'), [{}])[0])
        r['loads'] = [picked[name, f'load:{n}'] for n in args.conns]
        if (name, 'idle') in slices:
            r['crowd'] = [picked.get((name, f'crowd:{n}')) or
                          dict(picked[name, f'load:{BUSY}'], idle=0, asked=0) for n in args.idle]
    return results


def least_per_rt(slices):
    found = [s['cpu_us_per_rt'] for s in slices if s['round_trips']]
    return None if not found or None in found else min(found)


def median_slice(slices):
    key = 'cpu_us_per_rt' if None not in [s['cpu_us_per_rt'] for s in slices] else 'rt_per_s'
    ranked = sorted(slices, key=lambda s: s[key] if s[key] is not None else float('inf'))
    return ranked[(len(ranked) - 1) // 2]


class Progress:
    """Which run of how many, the time gone and an estimate of the time left, on stderr: one
    line rewritten in place at a terminal, a plain line a run elsewhere (a pipe, CI)."""

    def __init__(self, runs, slices, stream=sys.stderr):
        self.left, self.slices, self.stream = list(runs), slices, stream
        self.total, self.tty = len(runs), stream.isatty()
        self.done = []  # (run, seconds it took)
        self.t0, self.shown = time.monotonic(), 0

    def guess(self, run):
        """Seconds a run will take: what the same run took in an earlier slice, or else a rough
        model, scaled by how far off it has been so far."""
        same = [took for r, took in self.done if r[:2] == run[:2]]
        if same:
            return sum(same) / len(same)
        modelled = sum(model(r) for r, _ in self.done)
        return model(run) * (sum(took for _, took in self.done) / modelled if self.done else 1)

    @contextlib.contextmanager
    def step(self, run):
        number = self.total - len(self.left) + 1
        part = ('' if run.slice is None or self.slices == 1 else
                f', slice {run.slice + 1}/{self.slices}')
        left = sum(self.guess(r) for r in self.left)
        # The times first: a narrow terminal cuts the end of the line.
        self.say(f'bench {number}/{self.total} ({clock(time.monotonic() - self.t0)} gone, '
                 f'about {clock(left)} left): {run.name}: {run.what}{part}')
        t = time.monotonic()
        yield
        self.done.append((run, time.monotonic() - t))
        self.left.remove(run)

    def say(self, line):
        if not self.tty:
            print(line, file=self.stream, flush=True)
            return
        line = line[:shutil.get_terminal_size().columns - 1]
        self.stream.write(f'\r{line:<{self.shown}}')  # spaces cover what a longer line left
        self.stream.flush()
        self.shown = len(line)

    def end(self, line=None):
        """A last line, if any, and the cursor on a fresh line for whatever comes next."""
        if line:
            self.say(line)
        if self.tty and self.shown:
            self.stream.write('\n')
            self.shown = 0


def model(run):
    """A first guess at the seconds a run takes: a server and a load generator to start, and a
    crowd to open and close, which grows faster than the crowd: 10,000 took 12 s more a run on a
    2-core machine (2026-12-02), 1,000 under half a second more."""
    kind, _, n = run.phase.partition(':')
    return run.seconds + 0.3 + ((int(n) / 1000) ** 2 * 0.12 if kind == 'crowd' else 0)


def clock(seconds):
    return f'{int(seconds) // 60}:{int(seconds) % 60:02}'


# ---- the report -----------------------------------------------------------------------------

def fmt(value, spec):
    return '-' if value is None else format(value, spec)


def spins(r):
    return (r.get('idle_cpu_pct') or 0) > 50


def cpu_cells(r, run, ref):
    """CPU µs/rt and × asyncio; a server that spins burns a core whatever it does."""
    us = run['cpu_us_per_rt']
    if not run['round_trips']:
        return f'{"failed":>9} {"-":>9}'
    if spins(r):
        return f'{"spins":>9} {"-":>9}'
    return f'{fmt(us, ".1f"):>9} {fmt(us and ref and us / ref, ".2f"):>9}'


def print_tables(results, args):
    ref = results.get('asyncio', {})
    w = max(16, *map(len, results))  # the name column: as wide as --compare's names need
    print('Idle, and memory per idle connection (the server process\'s own, not the kernel\'s '
          'socket buffers)')
    counts = [n for n in args.idle if n]
    print(f'{"server":{w}} {"idle CPU %":>10} ' + ' '.join(f'{f"KiB/conn at {n:,}":>22}'
                                                           for n in counts) + '  most clients')
    crowds = {name: r for name, r in results.items() if 'crowd' in r}
    for name, r in crowds.items():
        cells = []
        for run in r['crowd']:
            if run['asked']:
                held = f' ({run["idle"]:,} held)' if run['idle'] < run['asked'] else ''
                cells.append(f'{fmt(run.get("kib_per_conn"), ".2f") + held:>22}')
        top = r['crowd'][-1]
        most = f'{top.get("most", 0) + BUSY:,}' + ('+' if top['idle'] >= top['asked'] else '')
        print(f'{name:{w}} {fmt(r.get("idle_cpu_pct"), ".1f"):>10} {" ".join(cells)}  {most:>12}')

    print()
    print('Busy connections, each sending 64 bytes and waiting for the reply')
    print(f'{"server":{w}} {"conns":>5} {"round trips/s":>13} {"p50 ms":>7} {"p99 ms":>7} '
          f'{"CPU %":>6} {"CPU µs/rt":>9} {"× asyncio":>9}')
    for name, r in results.items():
        for i, run in enumerate(r['loads']):
            base = ref['loads'][i]['cpu_us_per_rt'] if ref else None
            print(f'{name:{w}} {run["conns"]:>5} {run["rt_per_s"]:>13.0f} '
                  f'{fmt(run["p50_ms"], ".3f"):>7} {fmt(run["p99_ms"], ".3f"):>7} '
                  f'{fmt(run["cpu_pct"], ".0f"):>6} {cpu_cells(r, run, base)}')

    print()
    print(f'The crowd: {BUSY} busy connections beside idle ones held open')
    print(f'{"server":{w}} {"idle":>13} {"round trips/s":>13} {"p50 ms":>7} {"p99 ms":>7} '
          f'{"CPU µs/rt":>9} {"× asyncio":>9} {"× own at 0":>10}')
    for name, r in crowds.items():
        own = r['crowd'][0]['cpu_us_per_rt']
        for i, run in enumerate(r['crowd']):
            base = ref['crowd'][i]['cpu_us_per_rt'] if ref else None
            idle = f'{run["idle"]:,}' + (' (wall)' if run['idle'] < run['asked'] else '')
            us = run['cpu_us_per_rt']
            print(f'{name:{w}} {idle:>13} {run["rt_per_s"]:>13.0f} '
                  f'{fmt(run["p50_ms"], ".3f"):>7} {fmt(run["p99_ms"], ".3f"):>7} '
                  f'{cpu_cells(r, run, base)} {fmt(us and own and us / own, ".2f"):>10}')
    print()
    print_chart(crowds, w)
    if args.compare:
        print()
        print_compared(results, args, w)


def print_compared(results, args, w):
    """--compare: each row's CPU per round trip over its copy's, phase by phase, the figure to
    judge a change by. Of each row's slices it takes the one that cost least: on a shared
    machine the other tenants only ever add to a slice's CPU (beside a busy neighbour a slice
    cost up to twice the cheapest), so the cheapest is the nearest to what the code itself
    costs, as with timeit's min(). With the server pinned and its CPU counted in nanoseconds,
    --compare . gave 0.998 to 1.010 (20 slices of 0.5 s, 16 and 128 connections, two runs) on
    a quiet day, where the median slice, unpinned, in ticks, gave 0.88 to 1.11; on a noisy day,
    0.87 to 1.06. So run --compare . the same day, to see what a change must go past."""
    pairs = [(name, there) for there in results for name in results if
             '@' in there and original(there) == name]
    phases = [(f'load:{n}', f'{n} conns') for n in args.conns] + [
        (f'crowd:{n}', f'{n:,} idle') for n in args.idle if n]
    phases = [(key, head) for key, head in phases
              if any(key in results[name]['cpu_us_per_rt_least'] for name, _ in pairs)]
    print(f'CPU µs per round trip, this folder\'s script over the one in {args.compare}: the '
          f'cheapest of {args.slices} slices\nover the cheapest of {args.slices}, each server '
          f'pinned to one core and the load to another')
    print(f'{"server":{w}} ' + ' '.join(f'{head:>10}' for _, head in phases))
    for name, there in pairs:
        here, then = results[name]['cpu_us_per_rt_least'], results[there]['cpu_us_per_rt_least']
        print(f'{name:{w}} ' + ' '.join(
            f'{fmt(here.get(key) and then.get(key) and here[key] / then[key], ".3f"):>10}'
            for key, _ in phases))


def print_chart(results, w, width=50):
    """One bar per server and idle count: CPU µs per round trip, in Unicode blocks."""
    ref = results.get('asyncio', {}).get('crowd', [{}])[0].get('cpu_us_per_rt')
    values = [run['cpu_us_per_rt'] for r in results.values() if not spins(r)
              for run in r['crowd'] if run['cpu_us_per_rt']]
    if not values:
        return
    top = 4 * ref if ref else max(values)  # bars past four times asyncio's are cut
    print(f'CPU µs per round trip, {BUSY} busy clients beside idle ones. Scale: the full width '
          f'is {top:.1f} µs, one █ is {top / width:.2f} µs; a bar ending in ▶ is cut.')
    for name, r in results.items():
        for i, run in enumerate(r['crowd']):
            us = run['cpu_us_per_rt']
            wall = ' (its wall)' if run['idle'] < run['asked'] else ''
            label = f'{name if i == 0 else "":{w}} {run["idle"]:>6,} idle{wall:11} '
            if us is None:
                print(label + ('failed' if not run['round_trips'] else '-'))
                continue
            eighths = round(min(us, top) / top * width * 8)
            bar = '█' * (eighths // 8) + ' ▏▎▍▌▋▊▉'[eighths % 8].strip()
            note = ' (spins: a whole core, whatever it does)' if spins(r) and i == 0 else ''
            print(f'{label}{bar}{"▶" if us > top else ""} {us:,.1f}{note}')


# ---- the crowd, drawn ---------------------------------------------------------------------

# Told apart by colour (Okabe and Ito's, for colour-blind eyes), and in greyscale by the markers
# and the dashes: name -> (colour, dashes, marker).
STYLES = {'nonblocking': ('#888888', '10 5', 'cross'), 'select': ('#d55e00', '', 'circle'),
          'selectors/select': ('#cc79a7', '2 3', 'diamond'),
          'selectors/poll': ('#e69f00', '7 3', 'triangle'),
          'selectors/epoll': ('#0072b2', '', 'square'),
          'selectors/kqueue': ('#0072b2', '', 'square'),
          'selectors/devpoll': ('#56b4e9', '7 3', 'square'),
          'asyncio': ('#009e73', '12 3 3 3', 'down'), 'threads': ('#000000', '4 2', 'plus')}
MARKERS = {  # each about 10 px across, centred on (0, 0)
    'circle': '<circle id="circle" r="4.5"/>',
    'square': '<rect id="square" x="-4" y="-4" width="8" height="8"/>',
    'diamond': '<path id="diamond" d="M0-6L5 0L0 6L-5 0Z"/>',
    'triangle': '<path id="triangle" d="M0-6L5.5 3.5H-5.5Z"/>',
    'down': '<path id="down" d="M0 6L5.5-3.5H-5.5Z"/>',
    'plus': '<path id="plus" d="M-2-6H2V-2H6V2H2V6H-2V2H-6V-2H-2Z"/>',
    'cross': '<path id="cross" d="M-2-6H2V-2H6V2H2V6H-2V2H-6V-2H-2Z" transform="rotate(45)"/>'}
WIDTH, HEIGHT = 960, 620
LEFT, RIGHT, TOP, BOTTOM = 80, 680, 78, 510  # the plot area


def log_axis(values, lo_px, hi_px):
    """The 1-2-5 ticks around the values, and a function from value to pixel on a log scale."""
    ticks = [m * 10 ** e for e in range(-1, 8) for m in (1, 2, 5)]
    lo = max([t for t in ticks if t <= min(values) / 1.15] or ticks[:1])
    hi = min([t for t in ticks if t >= max(values) * 1.15] or ticks[-1:])
    span = math.log10(hi) - math.log10(lo)
    return ([t for t in ticks if lo <= t <= hi],
            lambda v: lo_px + (hi_px - lo_px) * (math.log10(v) - math.log10(lo)) / span)


def crowd_svg(results, args, date):
    """The crowd as a chart in the manner of libevent's benchmark: connections held across, CPU
    per round trip up the side, both on log scales, a line for each server."""
    series = {}
    for name, r in results.items():
        points = [(run['idle'] + BUSY, run['cpu_us_per_rt'], run)
                  for run in r.get('crowd', []) if run['cpu_us_per_rt']]
        if points:
            series[name] = sorted(points, key=lambda p: p[0])
    xs = [p[0] for points in series.values() for p in points] or [BUSY]
    ys = [p[1] for points in series.values() for p in points] or [1, 100]
    xticks, x = log_axis(xs, LEFT, RIGHT)
    yticks, y = log_axis(ys, BOTTOM, TOP)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" '
           'font-size="13">',
           f'<defs>{"".join(MARKERS.values())}</defs>',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="32" font-size="20" font-weight="bold">What a crowd of idle '
           'connections costs each server</text>',
           f'<text x="{LEFT}" y="56" fill="#444">{BUSY} busy clients each send 64 bytes and '
           'wait for the reply; the other connections are held open, idle. Lower is better.'
           '</text>']
    for t in xticks:
        out.append(f'<line x1="{x(t):.1f}" y1="{TOP}" x2="{x(t):.1f}" y2="{BOTTOM}" '
                   f'stroke="#e4e4e4"/><text x="{x(t):.1f}" y="{BOTTOM + 18}" '
                   f'text-anchor="middle">{t:,}</text>')
    for t in yticks:
        out.append(f'<line x1="{LEFT}" y1="{y(t):.1f}" x2="{RIGHT}" y2="{y(t):.1f}" '
                   f'stroke="#e4e4e4"/><text x="{LEFT - 6}" y="{y(t) + 4:.1f}" '
                   f'text-anchor="end">{t:,}</text>')
    out += [f'<rect x="{LEFT}" y="{TOP}" width="{RIGHT - LEFT}" height="{BOTTOM - TOP}" '
            'fill="none" stroke="#888"/>',
            f'<text x="{(LEFT + RIGHT) / 2}" y="{BOTTOM + 42}" text-anchor="middle">'
            f'connections held: {BUSY} busy and the idle crowd (log scale)</text>',
            f'<text transform="translate(22 {(TOP + BOTTOM) / 2}) rotate(-90)" '
            'text-anchor="middle">server CPU µs per round trip (log scale)</text>']
    legend, walls = [], False
    for name, points in series.items():
        colour, dashes, marker = STYLES.get(original(name), ('#56b4e9', '1 3', 'circle'))
        label = name
        if spins(results[name]):
            colour, label = '#888888', f'{name} (spins a whole core)'
        if '@' in name:  # a --compare row: its own row's look, dotted
            dashes = '1 3'
        look = f'stroke="{colour}" stroke-width="2" stroke-dasharray="{dashes}" fill="none"'
        line = ' '.join(f'{x(px):.1f},{y(py):.1f}' for px, py, _ in points)
        out.append(f'<g class="series" data-server="{escape(name)}">'
                   f'<polyline points="{line}" {look}/>')
        for px, py, run in points:
            wall = run['idle'] < run['asked']
            walls |= wall
            tip = (f'{name}: {run["idle"]:,} idle' + (f' of {run["asked"]:,} asked' * wall) +
                   f', {py:,.1f} µs per round trip')
            out.append(f'<use href="#{marker}" class="point" data-idle="{run["asked"]}" '
                       f'data-held="{run["idle"]}" x="{x(px):.1f}" y="{y(py):.1f}" '
                       f'fill="{"white" if wall else colour}" stroke="{colour}" '
                       f'stroke-width="1.5"><title>{escape(tip)}</title></use>')
        out.append('</g>')
        legend.append((-points[-1][1], look, marker, colour, label))
    # The legend in the order the lines end, top to bottom.
    keys = []
    for i, (_, look, marker, colour, label) in enumerate(sorted(legend)):
        ly = TOP + 10 + 26 * i
        keys.append(f'<line x1="{RIGHT + 20}" y1="{ly}" x2="{RIGHT + 64}" y2="{ly}" {look}/>'
                    f'<use href="#{marker}" x="{RIGHT + 42}" y="{ly}" fill="{colour}" '
                    f'stroke="{colour}" stroke-width="1.5"/><text x="{RIGHT + 72}" '
                    f'y="{ly + 4}">{escape(label)}</text>')
    notes = []
    if walls:
        notes += ['A hollow marker: the server\'s wall.', 'It held fewer connections than asked',
                  '(select() watches no descriptor past', '1,023), and is drawn where it held.']
    if not series:
        notes += ['No CPU figures: they come from /proc.']
    ny = TOP + 26 * len(legend) + 20
    keys += [f'<text x="{RIGHT + 20}" y="{ny + 17 * i}" fill="#444" font-size="12">'
             f'{escape(note)}</text>' for i, note in enumerate(notes)]
    out.append(f'<g class="legend">{"".join(keys)}</g>')
    each = (f'the median of {args.slices} slices of {args.seconds:g} s.' if args.slices > 1
            else f'one slice of {args.seconds:g} s. {SMOKE}')
    for dy, words in ((-32, f'Measured by bench.py on {date}: {machine()}.'),
                      (-14, f'Each point is {each}')):
        out.append(f'<text x="{LEFT}" y="{HEIGHT + dy}" fill="#444" font-size="12">'
                   f'{escape(words)}</text>')
    out.append('</svg>')
    return '\n'.join(out) + '\n'


def machine():
    return (f'{platform.system()} {platform.machine()}, {os.cpu_count()} cores, '
            f'Python {platform.python_version()}')


def numbers(text, least):
    try:
        values = [int(n) for n in text.split(',')]
    except ValueError:
        return None
    return values if values and min(values) >= least else None


def main():
    known = servers()
    parser = argparse.ArgumentParser(
        description=__doc__, epilog='Progress goes to stderr, the tables (or JSON) to stdout.')
    parser.add_argument('--servers', default=','.join(known),
                        help='comma-separated, from: %(default)s')
    parser.add_argument('--conns', default='1,16', help='busy connection counts for the load')
    parser.add_argument('--idle', default='0,100,1000,10000',
                        help=f'idle connections held beside {BUSY} busy ones (the crowd); '
                             '%(default)s by default')
    parser.add_argument('--seconds', type=float, default=1.0,
                        help='seconds of load per count and slice')
    parser.add_argument('--slices', type=int, default=3,
                        help='slices per count, the servers taking turns; each row is the median '
                             'slice (default: 3). More slices, less noise: for --compare')
    parser.add_argument('--quick', action='store_true',
                        help=f'a smoke run, too short to rank the servers: --conns {BUSY} '
                             '--idle 0,300 --seconds 0.5, one slice')
    parser.add_argument('--json', action='store_true', help='print JSON instead of tables')
    parser.add_argument('--svg', metavar='PATH',
                        help='also draw the crowd as a chart, an SVG file at PATH (make bench: '
                             'crowd.svg)')
    parser.add_argument('--compare', metavar='DIR',
                        help='also run the server scripts found in DIR (a git worktree of an '
                             'earlier commit, an edited copy) as rows NAME@DIRNAME, each taking '
                             'turns with its own row slice by slice, in every phase: the idle '
                             'CPU, the loads and the crowd (--idle 0 skips the crowd). '
                             '--servers chooses the rows; --compare . shows the noise')
    # Internal: the yardstick servers, and the load generator in its own process.
    parser.add_argument('--serve', choices=['asyncio', 'threads'], help=argparse.SUPPRESS)
    parser.add_argument('--load', dest='phase', help=argparse.SUPPRESS)
    parser.add_argument('--server', help=argparse.SUPPRESS)
    for hidden in ('--port', '--pid', '--length'):
        parser.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    parser.add_argument('--pin', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()

    if resource:  # room for 10,000 connections, in us and in the servers we start
        lift_nofile()
    if args.serve:
        return serve(args.serve, args.port)
    if args.phase:
        try:
            return load_main(args)
        except KeyboardInterrupt:  # Ctrl-C reaches us too; bench.py itself says so
            sys.exit(130)

    names = args.servers.split(',')
    bad = [s for s in names if s not in known]
    if bad:
        parser.error(f'unknown server {bad[0]!r}; choose from {",".join(known)}')
    args.rows = {name: known[name] for name in names}
    if args.compare:
        args.rows = with_compared(args.rows, args.compare)
        if len(args.rows) == len(names):
            parser.error(f'--compare: {args.compare} has none of the scripts that '
                         f'{",".join(names)} run: {", ".join(SERVERS)}')
    for option, quick in (('idle', '0,300'), ('conns', str(BUSY)), ('seconds', 0.5)):
        if args.quick and getattr(args, option) == parser.get_default(option):
            setattr(args, option, quick)
    args.conns, args.idle = numbers(args.conns, 1), numbers(args.idle, 0)
    if not args.conns or args.idle is None or args.seconds <= 0:
        parser.error('--conns takes positive whole numbers separated by commas, --idle whole '
                     'numbers, and --seconds a positive number')
    args.idle = sorted(set(args.idle) | {0})  # the crowd is compared with no crowd
    args.idle_seconds = 0.5 if args.quick else 1
    if args.quick and args.slices == parser.get_default('slices'):
        args.slices = 1
    if args.slices < 1:
        parser.error('--slices takes a whole number, 1 or more')
    if resource:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile != resource.RLIM_INFINITY and max(args.idle) > nofile - 100:
            parser.error(f'--idle {max(args.idle)} needs more descriptors than the '
                         f'{nofile} this system allows a process')

    if args.quick:
        print(f'bench: {SMOKE[0].lower()}{SMOKE[1:]}', file=sys.stderr, flush=True)
    progress = Progress(plan(args), args.slices)
    try:
        results = run_all(args, progress)
    except KeyboardInterrupt:
        progress.end()
        sys.exit('bench: interrupted')
    except BaseException:
        progress.end()
        raise
    progress.end(f'bench: {progress.total} runs in {clock(time.monotonic() - progress.t0)}')
    date = time.strftime('%Y-%m-%d')
    if args.svg:
        with open(args.svg, 'w', encoding='utf-8') as f:
            f.write(crowd_svg(results, args, date))
        print(f'bench: the crowd, drawn: {args.svg}', file=sys.stderr)
    if args.json:
        json.dump({'date': date, 'machine': machine(), 'quick': args.quick, 'results': results},
                  sys.stdout, indent=1)
        print()
    else:
        if args.quick:
            print(SMOKE)
        print(f'{date}, {machine()}')
        print_tables(results, args)


if __name__ == '__main__':
    main()
