#!/usr/bin/env python3
"""Measure the three IO models side by side, with an asyncio Protocol server as the yardstick."""
import argparse
import asyncio
import json
import os
import platform
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time

try:
    import resource
except ImportError:  # Windows
    resource = None

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {'nonblocking': 'nonblocking_server.py', 'select': 'select_server.py',
           'selectors': 'selectors_server.py', 'asyncio': None}
MSG = b'abcdefgh' * 8  # 64 bytes, one ping
REPLY_LEN = {'nonblocking': len(b'my server'), 'select': len(MSG),
             'selectors': len(MSG) + 3, 'asyncio': len(MSG) + 3}
IDLE_CONNS = (1000, 10000)  # memory per idle connection is measured at these counts
BATCH = 250  # connections opened at a time while ramping up, well within the listen backlog


# ---- the reference server ------------------------------------------------------------------

class UpperSB(asyncio.Protocol):
    """The selectors reply rule, in the standard library's own event loop."""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data.upper() + b'_SB')


async def serve_asyncio(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(UpperSB, '127.0.0.1', port, backlog=1024)
    async with server:
        await server.serve_forever()


# ---- measuring a server from outside --------------------------------------------------------

def server_cpu(pid):
    """CPU seconds the process has used, or None where there is no /proc."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def server_rss_kib(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmRSS:'))
    except OSError:
        return None


def connect(port, n):
    """Open n connections; the kernel completes them even before the server accepts."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        socks.append(s)
    return socks


def ping_all(socks, reply_len, timeout=5):
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
                if not data:  # refused: select_server.py closes what it cannot watch
                    got.pop(s)
                else:
                    got[s] += len(data)
                    if got[s] < reply_len:
                        continue
                sel.unregister(s)
                waiting -= 1
    return [s for s, n in got.items() if n >= reply_len]


def measure_idle(port, pid, seconds):
    with socket.create_connection(('127.0.0.1', port), timeout=5):
        time.sleep(0.2)
        cpu0, t0 = server_cpu(pid), time.perf_counter()
        time.sleep(seconds)
        cpu1, t1 = server_cpu(pid), time.perf_counter()
    return {'idle_cpu_pct': None if cpu0 is None else 100 * (cpu1 - cpu0) / (t1 - t0)}


def measure_load(port, pid, conns, seconds, reply_len):
    """conns connections ping-pong one 64-byte message each for the given time."""
    socks = connect(port, conns)
    latencies = []
    got = dict.fromkeys(socks, 0)
    sent_at = {}
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        ping_all(socks, reply_len)  # warm up: every connection accepted and answered once
        cpu0, t0 = server_cpu(pid), time.perf_counter()
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
                if got[s] >= reply_len:
                    now = time.perf_counter()
                    latencies.append(now - sent_at[s])
                    got[s] = 0
                    sent_at[s] = now
                    s.send(MSG)
            now = time.perf_counter()
        cpu1, t1 = server_cpu(pid), time.perf_counter()
    for s in socks:
        s.close()
    latencies.sort()
    n = len(latencies)
    return {'conns': conns, 'round_trips': n, 'rt_per_s': n / (t1 - t0),
            'p50_ms': 1000 * latencies[n // 2] if n else None,
            'p99_ms': 1000 * latencies[min(n - 1, n * 99 // 100)] if n else None,
            'server_cpu_s': None if cpu0 is None else cpu1 - cpu0}


def measure_ramp(port, pid, most, reply_len):
    """Open idle connections up to `most`; report memory per connection and how many were held."""
    warm = connect(port, 1)
    ping_all(warm, reply_len)
    warm[0].close()
    time.sleep(0.2)
    base = server_rss_kib(pid)
    held, result = [], {}
    while len(held) < most:
        batch = connect(port, min(BATCH, most - len(held)))
        ok = ping_all(batch, reply_len)
        for s in set(batch) - set(ok):
            s.close()
        held += ok
        if len(held) in IDLE_CONNS and base is not None:
            time.sleep(0.2)
            result[f'kib_per_conn_{len(held)}'] = (server_rss_kib(pid) - base) / len(held)
        if not ok:
            break  # a whole batch refused: the wall is reached
    result['max_held'] = len(held)
    for s in held:
        s.close()
    return result


def load_main(args):
    """The load generator: one phase against one running server, JSON on stdout."""
    port, pid, reply_len = args.port, args.pid, REPLY_LEN[args.server]
    if args.phase == 'idle':
        result = measure_idle(port, pid, args.seconds)
    elif args.phase == 'ramp':
        result = measure_ramp(port, pid, args.most, reply_len)
    else:
        result = measure_load(port, pid, int(args.phase), args.seconds, reply_len)
    json.dump(result, sys.stdout)


# ---- running the whole benchmark ------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def children_cpu():
    if resource is None:
        return None
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_phase(name, phase, seconds, most):
    """Start a fresh server, drive one phase from a separate process, stop the server."""
    port = free_port()
    script = SCRIPTS[name]
    cmd = [sys.executable, os.path.join(HERE, script)] if script else \
        [sys.executable, os.path.abspath(__file__), '--serve-asyncio']
    # A shell's background job ignores SIGINT, and its children inherit that: restore it, so
    # that Ctrl-C (SIGINT below) stops the server as it would at a terminal.
    restore = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if os.name != 'nt' else None
    server = subprocess.Popen(cmd + ['--port', str(port)], preexec_fn=restore,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(('127.0.0.1', port), timeout=5).close()
                break
            except ConnectionRefusedError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f'bench: {name} server did not start')
                time.sleep(0.05)
        load = subprocess.run([sys.executable, os.path.abspath(__file__), '--load', phase,
                               '--server', name, '--port', str(port), '--pid', str(server.pid),
                               '--seconds', str(seconds), '--most', str(most)],
                              stdout=subprocess.PIPE, timeout=120)
        if load.returncode:
            raise SystemExit(f'bench: the load generator failed against the {name} server')
        result = json.loads(load.stdout)
    finally:
        before = children_cpu()
        server.send_signal(signal.SIGINT)
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if result.get('server_cpu_s', 0) is None and before is not None:
        # No /proc: take the server's whole life, start-up included, once it has exited.
        result['server_cpu_s'] = children_cpu() - before
    return result


def progress(what):
    print(f'bench: {what}', file=sys.stderr, flush=True)


def run_all(args):
    results = {name: {} for name in args.servers}
    for name in args.servers:
        progress(f'{name}: idle CPU over {args.idle_seconds} s')
        results[name].update(run_phase(name, 'idle', args.idle_seconds, 0))
    # Each load runs in short slices, the servers taking turns, and each figure is the median of
    # its slices: a noisy moment on a shared machine then moves one slice, not the result.
    slices = {name: {conns: [] for conns in args.conns} for name in args.servers}
    for conns in args.conns:
        for i in range(args.slices):
            for name in args.servers:
                progress(f'{name}: {conns} connection{"s" * (conns != 1)} for {args.seconds} s '
                         f'({i + 1}/{args.slices})')
                load = run_phase(name, str(conns), args.seconds, 0)
                cpu = load.pop('server_cpu_s')
                load['cpu_us_per_rt'] = cpu and 1e6 * cpu / load['round_trips']
                slices[name][conns].append(load)
    for name in args.servers:
        results[name]['loads'] = [
            {key: median([load[key] for load in runs]) for key in runs[0]}
            for runs in slices[name].values()]
        progress(f'{name}: idle connections, up to {args.most}')
        results[name].update(run_phase(name, 'ramp', 0, args.most))
    return results


def median(values):
    return None if None in values else statistics.median(values)


def fmt(value, spec):
    return '-' if value is None else format(value, spec)


def print_tables(results, most):
    asyncio_loads = results.get('asyncio', {}).get('loads', [])
    ref = {load['conns']: load['cpu_us_per_rt'] for load in asyncio_loads}
    print(f'{"server":12} {"idle CPU %":>10} {"KiB/conn 1k":>12} {"KiB/conn 10k":>13} '
          f'{"most clients":>13}')
    for name, r in results.items():
        print(f'{name:12} {fmt(r.get("idle_cpu_pct"), ".1f"):>10} '
              f'{fmt(r.get("kib_per_conn_1000"), ".2f"):>12} '
              f'{fmt(r.get("kib_per_conn_10000"), ".2f"):>13} '
              f'{r["max_held"]:>12}{"+" if r["max_held"] >= most else " "}')
    print()
    print(f'{"server":12} {"conns":>5} {"round trips/s":>13} {"p50 ms":>7} {"p99 ms":>7} '
          f'{"CPU µs/rt":>9} {"× asyncio":>9}')
    for name, r in results.items():
        for load in r['loads']:
            us, base = load['cpu_us_per_rt'], ref.get(load['conns'])
            print(f'{name:12} {load["conns"]:>5} {load["rt_per_s"]:>13.0f} '
                  f'{fmt(load["p50_ms"], ".3f"):>7} {fmt(load["p99_ms"], ".3f"):>7} '
                  f'{fmt(us, ".1f"):>9} {fmt(us and base and us / base, ".2f"):>9}')


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--servers', default=','.join(SCRIPTS),
                        help='comma-separated, from: %(default)s')
    parser.add_argument('--conns', default='1,16,128', help='connection counts for the load')
    parser.add_argument('--seconds', type=float, default=1.5,
                        help='seconds of load per count and slice (five slices each)')
    parser.add_argument('--quick', action='store_true', help='a short run, for a smoke check')
    parser.add_argument('--json', action='store_true', help='print JSON instead of tables')
    # Internal: the reference server, and the load generator in its own process.
    parser.add_argument('--serve-asyncio', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--load', dest='phase', help=argparse.SUPPRESS)
    for hidden in ('--server', '--port', '--pid', '--most'):
        parser.add_argument(hidden, type=str if hidden == '--server' else int,
                            help=argparse.SUPPRESS)
    args = parser.parse_args()

    if resource:  # room for 10,000 connections, in us and in the servers we start
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    if args.serve_asyncio:
        try:
            asyncio.run(serve_asyncio(args.port))
        except KeyboardInterrupt:
            pass
        return
    if args.phase:
        try:
            return load_main(args)
        except KeyboardInterrupt:  # Ctrl-C reaches us too; bench.py itself says so
            sys.exit(130)

    args.servers = args.servers.split(',')
    bad = [s for s in args.servers if s not in SCRIPTS]
    if bad:
        parser.error(f'unknown server {bad[0]!r}; choose from {",".join(SCRIPTS)}')
    try:
        args.conns = [int(c) for c in args.conns.split(',')]
    except ValueError:
        args.conns = [0]
    if min(args.conns) < 1 or args.seconds <= 0:
        parser.error('--conns takes positive whole numbers separated by commas, '
                     'and --seconds a positive number')
    args.idle_seconds, args.slices = 2, 5
    args.most = max(IDLE_CONNS)
    if resource:
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if nofile != resource.RLIM_INFINITY:
            args.most = min(args.most, nofile - 100)
    if args.quick:
        args.seconds, args.idle_seconds, args.slices = 0.7, 0.5, 1
        args.most = min(args.most, 1500)  # past select's wall at 1024
    try:
        results = run_all(args)
    except KeyboardInterrupt:
        sys.exit('bench: interrupted')
    if args.json:
        json.dump({'date': time.strftime('%Y-%m-%d'), 'machine': machine(), 'results': results},
                  sys.stdout, indent=1)
        print()
    else:
        print(f'{time.strftime("%Y-%m-%d")}, {machine()}')
        print_tables(results, args.most)


def machine():
    return (f'{platform.system()} {platform.machine()}, {os.cpu_count()} cores, '
            f'Python {platform.python_version()}')


if __name__ == '__main__':
    main()
