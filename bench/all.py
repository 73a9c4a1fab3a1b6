"""`make bench`: run every benchmark and print their results merged into one JSON object."""

import json
import subprocess
import sys
from pathlib import Path

# bench/peers.py (PostgreSQL, the `bench` extra) and bench/scale.py (minutes of set-up) have
# their own targets: make bench-peers, make bench-scale.
BENCHES = [
    "provision.py",
    "revocation.py",
    "hot_run.py",
    "archive.py",
    "audit_cost.py",
    "queue.py",
]


def main() -> None:
    merged: dict[str, object] = {"benches": []}
    for script in BENCHES:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).parent / script)],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"bench/{script} failed:\n{out.stderr}")
        result = json.loads(out.stdout)
        merged["benches"].append(result.pop("bench"))  # type: ignore[attr-defined]
        merged.update(result)
    print(json.dumps(merged, indent=2))


if __name__ == "__main__":
    main()
