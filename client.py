#!/usr/bin/env python3
"""The non-blocking section's client: send 'my client:<pid>' every second and print the reply."""
import socket, os, time
import argparse, contextlib, signal, sys  # for the plumbing below the lesson


def main():
    args = setup()
    client = socket.socket()
    with connecting(client, args):  # fix: no server, or a wrong address: one line, no traceback
        client.connect((args.host, args.port))
    while True:
        msg = 'my client:%s' % os.getpid()
        print(msg)
        client.send(msg.encode())
        time.sleep(1)
        data = client.recv(1024)
        if not data: sys.exit('connection closed by server')  # fix: the chapter printed b'' on
        print(data)


# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

def setup():
    """Read the command line; print line by line; on Windows, let Ctrl+Break stop us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1',
                        help="the server's address, or its name (default: %(default)s)")
    parser.add_argument('--port', type=int, default=8800,
                        help="the server's TCP port (default: %(default)s)")
    args = parser.parse_args()
    # Line by line even into a pipe or a file: a client's output is watched as it happens.
    sys.stdout.reconfigure(line_buffering=True)
    if os.name == 'nt':  # Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    return args


@contextlib.contextmanager
def connecting(client, args):
    """No server, or a wrong address: one line and exit status 1, not a traceback; and within
    5 seconds, not the minutes the system would wait for a machine that does not answer."""
    client.settimeout(5)
    try:
        yield
    except (OSError, OverflowError) as e:
        sys.exit(f'cannot connect to {args.host}:{args.port}: {getattr(e, "strerror", 0) or e}')
    client.settimeout(None)


if __name__ == '__main__':
    try:
        main()
    except ConnectionError:  # reset or broken pipe: the server went away
        sys.exit('connection closed by server')
    except KeyboardInterrupt:  # Ctrl-C is how this endless client stops
        if sys.stdout.isatty():
            print()  # so that the shell's prompt starts on a fresh line, not after ^C
