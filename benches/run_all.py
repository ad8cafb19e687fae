"""`make bench`: every benchmark, each writing its table under benches/results/."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"

BENCHES = [
    ("attention.md", ["bench_attention.py"]),
    ("model.md", ["bench_model.py"]),
    ("memory.md", ["bench_memory.py", "--json", str(RESULTS / "memory.json")]),
    ("metrics.md", ["bench_metrics.py"]),
    ("data.md", ["bench_data.py"]),  # the "released" column needs opencv-python-headless (optional)
]


def main() -> int:
    RESULTS.mkdir(exist_ok=True)
    for out, cmd in BENCHES:
        print(f"== {cmd[0]}", flush=True)
        proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], capture_output=True, text=True)
        print(proc.stdout[-4000:], proc.stderr[-2000:] if proc.returncode else "", sep="", flush=True)
        if proc.returncode:
            return proc.returncode
        if out != "metrics.md":  # bench_metrics writes its own file
            (RESULTS / out).write_text(proc.stdout)
    print(f"tables in {RESULTS}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
