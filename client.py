#!/usr/bin/env python3
"""The non-blocking section's client: send 'my client:<pid>' every second and print the reply."""
import argparse
import os
import select
import signal
import socket
import sys
import time


def closed(client):
    """Has the server closed the connection? Peek at what waits in the socket, without waiting."""
    readable, _, _ = select.select([client], [], [], 0)
    return bool(readable) and client.recv(1, socket.MSG_PEEK) == b''


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8800)
    args = parser.parse_args()
    if hasattr(signal, 'SIGBREAK'):  # Windows: Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    # Line by line even into a pipe or a file: a client's output is watched as it happens.
    sys.stdout.reconfigure(line_buffering=True)

    client = socket.socket()
    try:
        client.connect((args.host, args.port))
    except (OSError, OverflowError) as e:
        client.close()
        sys.exit(f'cannot connect to {args.host}:{args.port}: {getattr(e, "strerror", None) or e}')
    try:
        while True:
            msg = 'my client:%s' % os.getpid()
            print(msg)
            client.send(msg.encode())
            time.sleep(1)
            data = client.recv(1024)
            if data:
                print(data)
            # The seed printed b'' here forever, until send() raised BrokenPipeError. A server
            # that closed right after its last reply is noticed now, not a round later.
            if not data or closed(client):
                sys.exit('connection closed by server')
    except OSError:  # reset or broken pipe: the server went away
        sys.exit('connection closed by server')
    except KeyboardInterrupt:
        pass  # Ctrl-C is how this endless client is meant to stop
    finally:
        client.close()


if __name__ == '__main__':
    main()
