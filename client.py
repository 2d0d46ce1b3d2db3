#!/usr/bin/env python3
"""The non-blocking section's client: send 'my client:<pid>' every second and print the reply."""
import socket, os, time
import argparse, contextlib, select, signal, sys  # for the plumbing below the lesson


def main():
    args = setup()
    client = socket.socket(socket.AF_INET6 if ':' in args.host else socket.AF_INET)  # fix: IPv6
    with connecting(args):  # fix: no server is one line, not a traceback
        client.connect((args.host, args.port))
    while True:
        msg = 'my client:%s' % os.getpid()
        print(msg)
        client.send(msg.encode())
        time.sleep(1)
        data = client.recv(1024)
        if data:
            print(data)
        # fix: the chapter printed b'' here for ever, until send() raised BrokenPipeError. A server
        # that closed right after its last reply is noticed now, not a round later.
        if not data or closed(client):
            sys.exit('connection closed by server')


# ---- Below: what the tutorial does not teach, which the lesson calls by name. ------------------

def setup():
    """Read the command line; print line by line; on Windows, let Ctrl+Break stop us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1',
                        help="the server's address: IPv4, IPv6 or a name (default: %(default)s)")
    parser.add_argument('--port', type=int, default=8800,
                        help="the server's TCP port (default: %(default)s)")
    args = parser.parse_args()
    # Line by line even into a pipe or a file: a client's output is watched as it happens.
    sys.stdout.reconfigure(line_buffering=True)
    if os.name == 'nt':  # Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    return args


@contextlib.contextmanager
def connecting(args):
    """No server there: one line and exit code 1, not a traceback."""
    try:
        yield
    except (OSError, OverflowError) as e:
        sys.exit(f'cannot connect to {args.host}:{args.port}: {getattr(e, "strerror", 0) or e}')


def closed(client):
    """Has the server closed the connection? Peek at what waits in the socket, without waiting."""
    readable, _, _ = select.select([client], [], [], 0)
    return bool(readable) and client.recv(1, socket.MSG_PEEK) == b''


if __name__ == '__main__':
    try:
        main()
    except ConnectionError:  # reset or broken pipe: the server went away
        sys.exit('connection closed by server')
    except KeyboardInterrupt:  # Ctrl-C is how this endless client stops
        if sys.stdout.isatty():
            print()  # so that the shell's prompt starts on a fresh line, not after ^C
