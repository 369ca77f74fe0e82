#!/usr/bin/env python3
"""The loopback limit: how many bytes a second one TCP connection over
127.0.0.1 carries between two processes on this machine, with nothing else
done to the bytes (the ceiling of a gateway's egress when its clients run on
the same machine). Prints one JSON object: the best of --repeats runs (the
limit: on a shared machine other work only ever lowers a run) and their median.

    python3 bench/loopback.py                 # 5 runs of 2 s
    python3 bench/loopback.py --seconds 1 --repeats 1
"""
import argparse
import json
import os
import socket
import statistics
import time

CHUNK = 1 << 20  # bytes per send and receive call: large, so calls cost little


def sender(port: int, seconds: float) -> None:
    buf = b"\x5a" * CHUNK
    with socket.create_connection(("127.0.0.1", port)) as s:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s.sendall(buf)


def one_run(seconds: float) -> float:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        pid = os.fork()
        if pid == 0:
            try:
                sender(port, seconds)
            finally:
                os._exit(0)
        conn, _ = listener.accept()
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        total = 0
        start = time.monotonic()
        with conn:
            while True:
                n = conn.recv_into(view)
                if n == 0:
                    break
                total += n
        elapsed = time.monotonic() - start
        os.waitpid(pid, 0)
    return total / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    runs = [one_run(args.seconds) for _ in range(args.repeats)]
    print(json.dumps({
        "bytes_per_s": max(runs),
        "gb_per_s": round(max(runs) / 1e9, 3),
        "median_gb_per_s": round(statistics.median(runs) / 1e9, 3),
        "runs_gb_per_s": [round(r / 1e9, 3) for r in runs],
    }))


if __name__ == "__main__":
    main()
