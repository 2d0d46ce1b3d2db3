#!/usr/bin/env python3
"""The non-blocking section's client: send 'my client:<pid>' every second and print the reply."""
import socket, os, time
import argparse, signal, sys  # for the plumbing below the lesson


def main():
    args = setup()
    client = socket.socket()
    client.settimeout(5)  # fix: a machine that does not answer: 5 s, not the system's minutes
    try:  # fix: no server, or a wrong address: one line, not a traceback
        client.connect((args.host, args.port))
    except OSError as e:
        sys.exit(f'cannot connect to {args.host}:{args.port}: {e.strerror or e}')
    while True:
        msg = 'my client:%s' % os.getpid()
        print(msg)
        client.send(msg.encode())
        time.sleep(1)
        print(recv(client))  # fix: the chapter printed b'' every second once the server had gone


# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

def setup():
    """Read the command line; print line by line; on Windows, let Ctrl+Break stop us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1',
                        help="the server's address, or its name (default: %(default)s)")
    parser.add_argument('--port', type=int, default=8800,
                        help="the server's TCP port (default: %(default)s)")
    args = parser.parse_args()
    if not 1 <= args.port <= 65535:  # no server listens on port 0
        parser.error(f'argument --port: {args.port} is not a port: 1 to 65535')
    # Line by line even into a pipe or a file: a client's output is watched as it happens.
    if hasattr(sys.stdout, 'reconfigure'):  # not IDLE's, which has none and needs none
        sys.stdout.reconfigure(line_buffering=True)
    if os.name == 'nt':  # Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    return args


def recv(client):
    """client.recv(1024); but if the server has gone (b''), or has said nothing for 5 s (the
    lesson's timeout), one line on stderr and exit status 1."""
    try:
        data = client.recv(1024)
    except socket.timeout:
        sys.exit('no reply within 5 s')
    if not data:
        sys.exit('connection closed by server')
    return data


if __name__ == '__main__':
    try:
        main()
    except ConnectionError:  # reset or broken pipe: the server went away
        sys.exit('connection closed by server')
    except KeyboardInterrupt:  # Ctrl-C is how this endless client stops
        if sys.stdout.isatty():
            print()  # so that the shell's prompt starts on a fresh line, not after ^C
