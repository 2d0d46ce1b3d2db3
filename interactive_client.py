#!/usr/bin/env python3
"""The select and selectors sections' client: send each line typed at '>>:' and print the reply."""
import socket
import argparse, os, select, signal, sys  # for the plumbing below the lesson

def main():
    args = setup()
    client = socket.socket()
    client.settimeout(5)  # fix: a machine that does not answer: 5 s, not the system's minutes
    try:  # fix: no server, or a wrong address: one line, not a traceback
        client.connect((args.host, args.port))
    except OSError as e:
        sys.exit(f'cannot connect to {args.host}:{args.port}: {e.strerror or e}')
    while True:
        msg = input('>>:')
        if not msg: continue
        client.sendall(msg.encode())  # fix: send() may take only part of a long line
        data = recv_reply(client, len(msg.encode()))  # fix: a reply comes in pieces: all
        print(data.decode(errors='replace'))  # fix: selectors' b'_SB' may split a character

# ---- Below: what the tutorial does not teach, which the lesson above calls by name. ----------

# TCP keeps no message boundaries: a reply is whole once nothing more comes for QUIET seconds.
# A line over 1,024 bytes is answered in pieces, and on Wi-Fi a lost one comes again up to 0.5 s
# late, the last one too: its reply is whole after LATE seconds of quiet.
QUIET, LATE, FIRST = 0.2, 1, 5  # FIRST: seconds to wait for a reply to begin, or room to send

def setup():
    """Read the command line; let input() take a long line; on Windows, let Ctrl+Break stop us."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1',
                        help="the server's address, or its name (default: %(default)s)")
    parser.add_argument('--port', type=int, default=8800, help='the TCP port (default: 8800)')
    args = parser.parse_args()
    if not 1 <= args.port <= 65535:  # no server listens on port 0
        parser.error(f'argument --port: {args.port} is not a port: 1 to 65535')
    try:  # readline: input() takes a paste past a terminal's 4,095 bytes (Windows' console does)
        import readline  # noqa: F401
    except ImportError:
        pass
    if hasattr(sys.stdin, 'reconfigure'):  # not IDLE's, which have none and need none
        sys.stdout.reconfigure(errors='replace', line_buffering=True)  # watched as it happens
        sys.stdin.reconfigure(errors='replace')  # piped in, a file not UTF-8 (Big5): no traceback
    if os.name == 'nt':  # Ctrl+Break stops us as Ctrl-C does
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    return args

def recv_reply(client, sent):
    """The whole reply to `sent` bytes, however late; if the server closed, print its last words."""
    if not select.select([client], [], [], FIRST)[0]:  # a server held (see README): wait on
        print(f'(no reply within {FIRST} s: waiting on; Ctrl-C quits)', file=sys.stderr, flush=True)
        while not select.select([client], [], [], FIRST)[0]:  # FIRST: Windows' Ctrl-C gets in
            pass
    reply = b''
    try:
        while True:
            data = client.recv(65536)
            if not data:  # the server closed: as a reset, which prints what came first
                raise ConnectionResetError
            reply += data
            client.settimeout(LATE if sent > 1024 else QUIET)
    except socket.timeout:
        pass
    except ConnectionError:  # closed, or reset as our line reached it: what it said first
        if reply:  # its line ends in '\n' already: no empty line before ours on stderr
            print(reply.decode(errors='replace').rstrip('\n'))
        raise
    client.settimeout(FIRST)  # the next line's sendall(): see the end of this file
    return reply

if __name__ == '__main__':
    try:
        main()
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or the end of piped input; Ctrl-C
        if sys.stdin.isatty():
            print()  # so that the shell's prompt starts on a fresh line
    except ConnectionError:  # reset, broken pipe or closed: the server went away
        sys.exit('connection closed by server')
    except socket.timeout:  # a line of megabytes: a server stops reading while its reply waits
        sys.exit(f'line too long: the server took no more of it for {FIRST} s, as its reply waits')
