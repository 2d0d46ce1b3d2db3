#!/usr/bin/env python3
"""Non-blocking IO in a busy loop, without pause: reply b'my server' to every chunk received."""
import socket
import argparse, errno, os, signal, sys, time  # for the plumbing below the lesson


def main():
    args = setup()
    server = socket.socket()
    if os.name != 'nt': server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # fix: rebind
    server.bind((args.host, args.port))
    server.listen()
    server.setblocking(False)
    con_list = []
    rm_list = []
    # The busy loop is the lesson: it never sleeps, so it burns a core even when idle.
    while True:
        if args.trace: trace(con_list)  # --trace: once a second, how many passes, who came, went
        try:
            conn, addr = server.accept()
            conn.setblocking(False)  # fix: accept() hands back a blocking socket on Linux
            con_list.append(conn)
        except BlockingIOError:
            for conn in con_list:
                try:
                    msg = conn.recv(1024)
                    if not msg: raise ConnectionResetError  # fix: b'' is a client that closed
                    conn.send(b'my server')
                except BlockingIOError: pass
                except OSError:  # fix: reset, broken pipe, a laptop gone: end this client only
                    rm_list.append(conn)
                    conn.close()
            for conn in rm_list:
                con_list.remove(conn)
            else:
                rm_list.clear()  # 刪除關閉的client
        except ConnectionError:  # fix: a client gone before we got to it (Windows: reset)
            pass
    server.close()  # the chapter's last line, never reached: the loop has no end but Ctrl-C

# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

loop = {'passes': 0, 'since': time.monotonic()}  # trace()'s memory: passes since when
names = {}  # trace()'s: conn -> 'ip:port', for each conn in con_list at the last trace line

def setup():
    """The command line; then what a class, a port in use and each platform need of us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1', help='the address to listen on; '
                        '0.0.0.0: every address, for a class (default: %(default)s)')
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    parser.add_argument('--trace', action='store_true',
                        help='say on stderr, once a second, how many passes the loop made')
    args = parser.parse_args()
    if not 1 <= args.port <= 65535:  # 0, "any free port", is one nobody could be told
        parser.error(f'argument --port: {args.port} is not a port: 1 to 65535')
    with socket.socket() as probe:  # a port in use: one line, not bind()'s traceback
        if os.name != 'nt':
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as e:
            hint = ': is another server still running?' if e.errno == errno.EADDRINUSE else ''
            sys.exit(f'cannot listen on {args.host}:{args.port}: {e.strerror}{hint}')
    if args.host == '0.0.0.0':
        print('\n'.join(students(args.port)), flush=True)
    if os.name == 'nt':
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    else:  # a client costs a descriptor: lift the soft limit (Linux 1024, macOS 256) to the hard
        import resource
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        try:  # macOS: "unlimited" means 10240
            resource.setrlimit(resource.RLIMIT_NOFILE, (
                10240 if hard == resource.RLIM_INFINITY else hard, hard))
        except (ValueError, OSError):
            pass
    return args

def students(port):
    """The students' command at each IPv4 address of ours, the default route's first."""
    found = []  # a UDP connect() sends nothing: it finds our address on the way to each of these
    for there in ('192.0.2.1', '10.0.0.1', '172.16.0.1', '192.168.0.1'):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            if probe.connect_ex((there, 9)) == 0:
                found.append(probe.getsockname()[0])
    try:
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    port = '' if port == 8800 else f' --port {port}'
    lines = []
    for ip in found:  # each once, and not loopback, link-local (169.254.) or 0.x
        line = f'students: python interactive_client.py --host {ip}{port}'
        if line not in lines and not ip.startswith(('127.', '169.254.', '0.')):
            lines.append(line)
    return lines or ['no network address found: is this machine on a network?']

def trace(con_list):
    """--trace: the loop never sleeps, so count its passes, and once a second say on stderr how
    many it made, and who came and went meanwhile."""
    loop['passes'] += 1
    seconds = time.monotonic() - loop['since']
    if seconds < 1:
        return
    new = [c for c in con_list if c not in names]
    gone = [c for c in names if c not in con_list]
    for c in new:
        names[c] = peer(c)
    came = ', '.join(names[c] for c in new) or 'none'
    went = ', '.join(names[c] for c in gone) or 'none'
    for c in gone:
        del names[c]
    print(f'{seconds:.2f} s: {loop["passes"]:,} passes, {len(con_list)} connected; '
          f'new: {came}; closed: {went}', file=sys.stderr, flush=True)
    loop['passes'] = 0
    loop['since'] = time.monotonic()

def peer(conn):
    """A connection's name in the trace: the client's ip:port, or '?' if it has gone already."""
    try:
        return '%s:%s' % conn.getpeername()[:2]
    except OSError:
        return '?'

if __name__ == '__main__':
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C: a line, not a traceback; the sockets close as we exit
        print('server stopped', file=sys.stderr)
