"""Shared by bench/peers.py and bench/scale.py: drive a server with `wrk`, read process sizes.

`wrk` (a C client) runs `bench/wrk/toolcalls.lua`, which picks a random target (Host, bearer
key, run) for every request; one JSON line comes back per run of `wrk`.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

LUA = Path(__file__).resolve().parent / "wrk" / "toolcalls.lua"


def server_shape() -> str:
    """Return gunicorn's processes x threads as the benches' servers run them (`make run`'s
    defaults, or WEB_CONCURRENCY / WEB_THREADS, which pass through to those servers)."""
    return f"{os.environ.get('WEB_CONCURRENCY', '2')} x {os.environ.get('WEB_THREADS', '8')}"


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench-peers does it)")


def wrk_command(url: str, script: Path, *, connections: int, seconds: float) -> list[str]:
    """Return the `wrk` command line every HTTP bench uses: at most 2 client threads (2 cores)."""
    return [
        "wrk",
        f"-t{min(connections, 2)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]


def write_targets(path: Path, targets: list[list[str]]) -> Path:
    """Write [host, key, run] targets as the Lua script reads them; return `path`."""
    path.write_text("".join(f"{host} {key} {run}\n" for host, key, run in targets))
    return path


def wrk(
    base: str,
    targets: Path,
    *,
    mode: str,
    connections: int,
    seconds: float,
    prefix: str = "",
    seqs: int = 1,
    body: str | None = None,
    allow_errors: bool = False,
) -> dict:
    """Drive `base` for `seconds` with `connections`; return requests, rps and latencies (ms)."""
    env = {
        **os.environ,
        "BENCH_TARGETS": str(targets),
        "BENCH_MODE": mode,
        "BENCH_PREFIX": prefix,
        "BENCH_SEQS": str(seqs),
        **({"BENCH_BODY": body} if body is not None else {}),
    }
    out = subprocess.run(
        wrk_command(base, LUA, connections=connections, seconds=seconds),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    if (raw["non_2xx"] or raw["socket_errors"]) and not allow_errors:
        # Errors are fast answers that would inflate the figure: refuse to report it.
        message = (
            f"{base} ({mode}, c={connections}): {raw['non_2xx']} non-2xx answers, "
            f"{raw['socket_errors']} socket errors of {raw['requests']} requests"
        )
        if out.stderr.strip():
            message += "; wrk's stderr:\n" + "\n".join(out.stderr.splitlines()[:5])
        elif raw["non_2xx"]:
            message += " (BENCH_SHOW_ERRORS=1 shows the non-2xx answers)"
        raise SystemExit(message)
    return {
        "requests": raw["requests"],
        "seconds": raw["duration_us"] / 1e6,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        **{f"{q}_ms": raw[f"{q}_us"] / 1000 for q in ("p50", "p90", "p99", "max")},
    }


def process_group(pgid: int) -> list[int]:
    """Return the pids of process group `pgid` (a gunicorn master started in its own session)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def rss_mib(pid: int) -> float:
    """VmRSS of `pid` in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def fd_count(pid: int) -> int:
    """Open descriptors of `pid` (needs the same user or root)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def gunicorn_workers(master_pid: int) -> list[int]:
    return [pid for pid in process_group(master_pid) if pid != master_pid]
