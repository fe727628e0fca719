#!/usr/bin/python3
"""experiments/compare.py on two made-up gpt run folders.

Checks the Markdown table cell by cell (losses, percent differences against
the first run, state MB and ratio, tokens/s, wall time), that a PNG is
written, and that a folder without metrics.csv or with a wrong header is
refused with exit code 2. Prints "test_compare: ok" and exits 0 only when
every check passed; run by tests/experiments/test_compare.cpp.

  /usr/bin/python3 tests/python/test_compare.py [--keep DIR]

--keep DIR writes the runs and the PNG to DIR and leaves them there.
"""

import json
import math
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
COMPARE = os.path.join(ROOT, "experiments", "compare.py")
HEADER = "step,tokens,train_loss,val_loss,lr,ms_per_step,tokens_per_s," \
         "elapsed_s"
TOKENS_PER_STEP = 4096


def write_run(folder, name, bits, scale, state_bytes, tokens_per_s, wall):
    """A run whose losses are `scale` times a made-up decaying curve."""
    os.makedirs(folder)
    rng = random.Random(bits)
    rows = [HEADER]
    for step in range(10, 1001, 10):
        tokens = step * TOKENS_PER_STEP
        loss = scale * (1.4 + 4.1 * math.exp(-step / 120.0))
        noisy = loss * (1 + 0.03 * (rng.random() - 0.5))
        rows.append(f"{step},{tokens},{noisy:.5f},,1e-3,80.0,"
                    f"{tokens_per_s},{step * 0.08:.2f}")
        if step % 100 == 0:
            rows.append(f"{step},{tokens},,{loss * 1.02:.5f},,,,"
                        f"{step * 0.08:.2f}")
    with open(os.path.join(folder, "metrics.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    summary = {"name": name, "status": "done",
               "final_train_loss": round(scale * 1.5, 6),
               "final_val_loss": round(scale * 1.55, 6),
               "tokens_per_second": tokens_per_s,
               "optimizer_state_bytes": state_bytes,
               "param_count": 600000, "wall_seconds": wall}
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(folder, "resolved.yaml"), "w") as f:
        f.write(f"name: {name}\nmodel:\n  type: gpt\noptim:\n"
                f"  name: adamw\n  bits: {bits}\n  lr: 0.002\n")


def run(args):
    p = subprocess.run([sys.executable, COMPARE] + args, capture_output=True,
                       text=True)
    return p.returncode, p.stdout, p.stderr


class Checks:
    def __init__(self):
        self.failed = 0

    def check(self, ok, what):
        if not ok:
            self.failed += 1
            print(f"test_compare: FAILED: {what}", file=sys.stderr)


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def check_table(c, out):
    lines = [l for l in out.splitlines() if l.startswith("|")]
    c.check(len(lines) == 4, f"expected 4 table lines, got {len(lines)}:\n"
            + out)
    if len(lines) != 4:
        return
    head = cells(lines[0])
    c.check(head[0] == "run" and "val vs first" in head and
            "optimizer state (MB)" in head and "tokens/s" in head,
            f"header: {head}")
    a, b = cells(lines[2]), cells(lines[3])
    c.check(a == ["gpt32 (32-bit adamw)", "1.5000", "1.5500", "+0.00%",
                  "+0.00%", "1.000", "1.000", "5,000", "600 s (10m00s)"],
            f"first row: {a}")
    # b's losses are 1.004 x a's: +0.40%; 260000 / 1000000 state bytes.
    c.check(b == ["gpt8 (8-bit adamw)", "1.5060", "1.5562", "+0.40%",
                  "+0.40%", "0.260", "0.260", "5,200", "605 s (10m05s)"],
            f"second row: {b}")


def main():
    keep = sys.argv[2] if len(sys.argv) == 3 and sys.argv[1] == "--keep" \
        else None
    with tempfile.TemporaryDirectory() as tmp:
        base = keep or tmp
        os.makedirs(base, exist_ok=True)
        a, b = os.path.join(base, "run32"), os.path.join(base, "run8")
        for d in (a, b):
            if os.path.exists(d):
                subprocess.run(["rm", "-r", d], check=True)
        write_run(a, "gpt32", 32, 1.0, 1000000, 5000, 600.0)
        write_run(b, "gpt8", 8, 1.004, 260000, 5200, 605.0)
        png = os.path.join(base, "compare.png")
        if os.path.exists(png):
            os.remove(png)
        c = Checks()

        code, out, err = run([a, b, "--out", png])
        c.check(code == 0, f"exit {code}, stderr: {err}")
        check_table(c, out)
        c.check(os.path.isfile(png) and os.path.getsize(png) > 10000,
                f"{png} missing or tiny")
        with open(png, "rb") as f:
            c.check(f.read(8) == b"\x89PNG\r\n\x1a\n", "not a PNG")

        code, _, err = run([a, os.path.join(base, "nothing"), "--out", png])
        c.check(code == 2 and "metrics.csv and summary.json" in err,
                f"missing folder: exit {code}, stderr: {err}")
        os.remove(os.path.join(b, "metrics.csv"))
        code, _, err = run([a, b, "--out", png])
        c.check(code == 2 and "metrics.csv is missing" in err,
                f"no metrics.csv: exit {code}, stderr: {err}")
        with open(os.path.join(b, "metrics.csv"), "w") as f:
            f.write("step,epoch,train_loss\n1,0.1,2.0\n")
        code, _, err = run([a, b, "--out", png])
        c.check(code == 2 and "expected the header" in err,
                f"mlp header: exit {code}, stderr: {err}")

    if c.failed:
        print(f"test_compare: {c.failed} check(s) failed", file=sys.stderr)
        return 1
    print("test_compare: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
