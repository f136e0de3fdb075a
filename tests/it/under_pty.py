#!/usr/bin/env python3
"""under_pty.py COLS TRANSCRIPT FDS [SIGINT_AT] -- PROGRAM ARGS...

Runs PROGRAM with the fds named in FDS ("2", "1,2") on a new pseudo-terminal
COLS columns wide (40 rows), the others inherited; writes everything the
terminal received to TRANSCRIPT and exits with PROGRAM's status (128+N when
a signal N ended it). With SIGINT_AT, sends SIGINT once the terminal has
shown that text (Ctrl-C in a terminal signals the foreground group).
Named so as not to shadow Python's `pty` module (the script's directory
comes first on sys.path)."""
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time

args = sys.argv[1:]
sep = args.index("--")
head, cmd = args[:sep], args[sep + 1:]
cols, transcript, fds = int(head[0]), head[1], head[2].split(",")
sigint_at = head[3].encode() if len(head) > 3 else None

master, slave = pty.openpty()
fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
kw = {}
if "1" in fds:
    kw["stdout"] = slave
if "2" in fds:
    kw["stderr"] = slave
child = subprocess.Popen(cmd, start_new_session=True, **kw)
os.close(slave)
out = b""
deadline = time.time() + 300
sent = False
while time.time() < deadline:
    ready, _, _ = select.select([master], [], [], 0.1)
    if ready:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        out += chunk
    if sigint_at is not None and not sent and sigint_at in out:
        os.killpg(child.pid, signal.SIGINT)
        sent = True
    if child.poll() is not None and not ready:
        break
else:
    child.kill()
status = child.wait()
with open(transcript, "wb") as f:
    f.write(out)
sys.exit(128 - status if status < 0 else status)
