"""End-to-end figures, each beside its peer measured in the same run.

* Throughput of one TCP download through `portless forward`, through OpenSSH
  `ssh -L` (sshd on loopback), and over direct loopback TCP, in MB/s.
* Session start latency: `portless shell` from process start to the first
  byte of shell output, and `portless exec T -- true`, against `ssh host true`.

Run as root from the project root: `python bench/bench_sessions.py [--mb 512]`.
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.harness import (
    PORTLESS,
    SSHD_USER,
    Server,
    Sshd,
    free_port,
    read_until,
    start_node,
    wait_for,
)

CHUNK = bytes(1024 * 1024)


def source_server(total: int) -> tuple[socket.socket, int]:
    """A TCP server that sends `total` bytes to every connection, then closes it."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=send_all, args=(conn,), daemon=True).start()

    def send_all(conn: socket.socket) -> None:
        with conn:
            left = total
            while left > 0:
                n = min(left, len(CHUNK))
                conn.sendall(CHUNK[:n])
                left -= n

    threading.Thread(target=serve, daemon=True).start()
    return srv, int(srv.getsockname()[1])


def download(port: int, total: int) -> float:
    """Seconds to receive `total` bytes from 127.0.0.1:port."""
    sock = wait_for(lambda: _try_connect(port), 30, f"port {port}")
    start = time.perf_counter()
    got = 0
    buf = bytearray(1 << 20)
    with sock:
        while got < total:
            n = sock.recv_into(buf)
            if not n:
                break
            got += n
    elapsed = time.perf_counter() - start
    if got != total:
        raise RuntimeError(f"received {got} of {total} bytes")
    return elapsed


def _try_connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection(("127.0.0.1", port), timeout=30)
    except OSError:
        return None


def best_rate(measure: Callable[[], float], total: int, runs: int) -> float:
    return max(total / measure() / 1e6 for _ in range(runs))


BANNER = re.compile(rb"Starting session with SessionId: \S+\r?\n")


def first_byte_latency(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from spawning `argv` in a pty to the first byte the remote shell sends.

    The client's own "Starting session" line does not count: only what follows it.
    """
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    start = time.perf_counter()
    seen = b""
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                raise RuntimeError(f"no shell output within 30 s: {seen!r}")
            seen += os.read(fd, 1024)
            banner = BANNER.search(seen)
            if banner and len(seen) > banner.end():
                return time.perf_counter() - start
    finally:
        os.write(fd, b"exit\r")
        os.kill(pid, 15)
        os.waitpid(pid, 0)
        os.close(fd)


def timed_run(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=512, help="bytes per download, in MiB")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    total = args.mb * 1024 * 1024
    tmp = Path(tempfile.mkdtemp(prefix="portless-bench-"))

    server = Server(tmp / "server", free_port())
    server.start()
    sshd = Sshd(tmp / "sshd", free_port())
    sshd.start()
    agent = start_node(server, tmp / "agent")
    env = server.env()
    src, src_port = source_server(total)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        direct = best_rate(lambda: download(src_port, total), total, args.runs)

        ssh_port = free_port()
        ssh_l = subprocess.Popen(
            ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "-i", str(sshd.client_key), "-p", str(sshd.port), "-N",
             "-o", "ExitOnForwardFailure=yes",
             "-L", f"{ssh_port}:127.0.0.1:{src_port}", f"{SSHD_USER}@127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=open(tmp / "ssh-L.log", "wb"))  # noqa: SIM115
        procs.append(ssh_l)
        ssh_rate = best_rate(lambda: download(ssh_port, total), total, args.runs)

        fwd = subprocess.Popen([*PORTLESS, "forward", f"0:localhost:{src_port}",
                                "--target", agent.instance_id],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        procs.append(fwd)
        out = read_until(fwd, rb"Port (\d+) opened", 30)
        fwd_port = int(re.search(rb"Port (\d+) opened", out).group(1))  # type: ignore[union-attr]
        portless_rate = best_rate(lambda: download(fwd_port, total), total, args.runs)

        ssh_cmd = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "BatchMode=yes", "-i", str(sshd.client_key), "-p", str(sshd.port),
                   f"{SSHD_USER}@127.0.0.1", "true"]
        ssh_true = statistics.median(timed_run(ssh_cmd, env) for _ in range(5))
        exec_true = statistics.median(
            timed_run([*PORTLESS, "exec", agent.instance_id, "--", "true"], env) for _ in range(5))
        shell_first = statistics.median(
            first_byte_latency([*PORTLESS, "shell", agent.instance_id], env) for _ in range(5))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        src.close()
        agent.stop()
        sshd.stop()
        server.stop()

    print(f"download of {args.mb} MiB, best of {args.runs}:")
    print(f"  direct loopback TCP   {direct:8.0f} MB/s")
    print(f"  ssh -L                {ssh_rate:8.0f} MB/s")
    print(f"  portless forward      {portless_rate:8.0f} MB/s   "
          f"= {portless_rate / ssh_rate:.2f}x ssh -L, {portless_rate / direct:.2f}x direct")
    print("session start, median of 5:")
    print(f"  ssh host true                      {ssh_true * 1000:7.1f} ms")
    print(f"  portless exec T -- true            {exec_true * 1000:7.1f} ms   "
          f"= {exec_true / ssh_true:.2f}x ssh")
    print(f"  portless shell T, to first byte    {shell_first * 1000:7.1f} ms   "
          f"= {shell_first / ssh_true:.2f}x ssh")


if __name__ == "__main__":
    main()
