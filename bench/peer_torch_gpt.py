#!/usr/bin/python3
"""kbit's GPT against the same GPT in PyTorch, on the CPU with 2 threads.

  /usr/bin/python3 bench/peer_torch_gpt.py [--config CONFIG] [--seconds S]
      [--rounds R] [--steps N] [--skip-train] [--build DIR] [--work DIR]

What it does, in order (the first line printed is the command itself):
  1. Reads the model, batch, optimizer and schedule from a kbit config
     (default configs/gpt_small_8bit.yaml; defaults of keys the file leaves
     out come from `build/train --help`), so both sides build one model.
  2. Gives PyTorch its best threading: it re-runs itself as a child process
     under each setting (default; OMP_WAIT_POLICY=PASSIVE; the OpenMP build
     of OpenBLAS through LD_LIBRARY_PATH, so torch's GEMMs and its own loops
     share one libgomp pool), times a few steps of each, prints all three
     and keeps the fastest. Every setting names OpenBLAS' kernels for the
     CPU's vector width (OPENBLAS_CORETYPE, see openblas_core), since
     OpenBLAS 0.3.21 runs SSE3 kernels on CPUs it does not know.
  3. Throughput: R rounds, each a PyTorch timing (best setting) followed by
     `build/bench_gpt` with the same shape; medians of both, ratio kbit/torch.
  4. Equal wall time on the prepared KJV split (scripts/prepare_kjv.sh):
     PyTorch trains S seconds with kbit's schedule; kbit runs `build/train
     CONFIG --set train.max_seconds=S`. Both report the mean cross-entropy
     over the whole validation split in non-overlapping windows of T bytes.
     The torch run is written as a run folder (metrics.csv, summary.json)
     next to kbit's, so experiments/compare.py can draw the two.

Cost, measured on 2 cores with gpt_small_8bit: steps 2 and 3 (5 rounds)
about 5 minutes together, step 4 2 x S seconds plus about a minute of
validation. The machine should be otherwise idle: every number is a timing.
The busy-core figure printed with each timing is the CPU use of other
processes during it (from /proc/stat); above about 0.15 cores the timing
is disturbed. Exit code 2 for a bad command line, config or missing files.

Both sides see the same model shape, batch, optimizer and schedule; they
differ in initial weights and batch order (torch's generator against
kbit's Philox stream), and torch skips kbit's periodic evaluations, which
count against kbit's time budget.
"""

import argparse
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENBLAS_OMP = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
THREADS = 2


def openblas_core():
    """OPENBLAS_CORETYPE for this CPU: OpenBLAS 0.3.21 does not know some
    newer CPUs (Xeon family 6 model 207) and falls back to its SSE3 Prescott
    kernels, several times slower; naming the kernels of the CPU's vector
    width gives torch's GEMMs their real speed (kbit's bench_gemm does the
    same for its OpenBLAS peer). Kept as set when the user set it."""
    if os.environ.get("OPENBLAS_CORETYPE"):
        return os.environ["OPENBLAS_CORETYPE"]
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln.split(":", 1)[1].split() for ln in f
                          if ln.startswith("flags")), [])
    except OSError:
        return ""
    if "avx512f" in flags:
        return "SkylakeX"
    return "Haswell" if "avx2" in flags else ""


_CORE_TYPE = openblas_core()
CORE = {"OPENBLAS_CORETYPE": _CORE_TYPE} if _CORE_TYPE else {}
# name -> environment additions of each threading setting
SETTINGS = {
    "default": dict(CORE),
    "passive": dict(CORE, OMP_WAIT_POLICY="PASSIVE"),
    "blas-omp": dict(CORE, LD_LIBRARY_PATH=OPENBLAS_OMP),
}
WARMUP_STEPS = 3     # untimed steps before a timing (allocations, caches)
PROBE_STEPS = 8      # timed steps per setting in the threading probe
PROBE_ROUNDS = 2     # interleaved probe rounds over the three settings
VAL_BATCH = 64       # validation windows per forward pass
LOSS_WINDOW = 20     # final train loss: mean of this many last steps
METRICS_HEADER = ("step,tokens,train_loss,val_loss,lr,ms_per_step,"
                  "tokens_per_s,elapsed_s")


class UsageError(Exception):
    """Bad input from the command line or a file: exit code 2."""


# ---------------------------------------------------------------- config

def kbit_defaults(train_bin):
    """{key: default} from `train --help` ("  key  doc; default VALUE")."""
    if not os.access(train_bin, os.X_OK):
        raise UsageError(f"{train_bin} is missing; build it first "
                         f"(./test or cmake --build build)")
    p = subprocess.run([train_bin, "--help"], capture_output=True, text=True)
    import yaml
    found = {}
    for line in (p.stdout + p.stderr).splitlines():
        m = re.match(r"^  ([a-z_]+\.[a-z_0-9.]+|seed|name)\s.*; default (.*)$",
                     line)
        if m and m.group(2) != "(see below)":
            try:
                found[m.group(1)] = yaml.safe_load(m.group(2))
            except yaml.YAMLError:
                found[m.group(1)] = m.group(2)
    return found


def flatten(tree, prefix=""):
    out = {}
    for key, value in (tree or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_config(path, train_bin):
    import yaml
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such config file")
    try:
        with open(path) as f:
            tree = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: {e}") from None
    cfg = kbit_defaults(train_bin)
    cfg.update(flatten(tree))
    if cfg.get("model.type") != "gpt":
        raise UsageError(f"{path}: expected model.type gpt, got "
                         f"{cfg.get('model.type')!r}")
    for key in ("model.n_layer", "model.n_head", "model.d_model",
                "model.block_size", "train.batch_size", "optim.lr"):
        if key not in cfg:
            raise UsageError(f"{path}: {key} is neither in the file nor in "
                             f"`train --help`; is {train_bin} up to date?")
    return cfg


def shape(cfg):
    """The model and step settings both sides use."""
    return {
        "n_layer": int(cfg["model.n_layer"]),
        "n_head": int(cfg["model.n_head"]),
        "d_model": int(cfg["model.d_model"]),
        "block_size": int(cfg["model.block_size"]),
        "mlp_ratio": int(cfg.get("model.mlp_ratio", 4)),
        "stable_embedding": bool(cfg.get("model.stable_embedding", False)),
        "batch_size": int(cfg["train.batch_size"]),
        "grad_accum": int(cfg.get("train.grad_accum", 1)),
        "lr": float(cfg["optim.lr"]),
        "beta1": float(cfg.get("optim.beta1", 0.9)),
        "beta2": float(cfg.get("optim.beta2", 0.999)),
        "eps": float(cfg.get("optim.eps", 1e-8)),
        "weight_decay": float(cfg.get("optim.weight_decay", 0.0)),
        "overrides": list(cfg.get("optim.overrides") or []),
        "clip": float(cfg.get("optim.clip_grad_norm", 0.0)),
        "bits": int(cfg.get("optim.bits", 32)),
        "warmup_steps": int(cfg.get("train.warmup_steps", 0)),
        "max_steps": int(cfg.get("train.max_steps", 0)),
        "cosine": cfg.get("train.schedule", "cosine") == "cosine",
        "min_lr_ratio": float(cfg.get("train.min_lr_ratio", 0.0)),
        "log_every": int(cfg.get("train.log_every", 50)),
        "seed": int(cfg.get("seed", 0)),
    }


def corpus_folder(cfg):
    path = cfg.get("data.path") or ""
    if path:
        return path
    cache = os.environ.get("KBIT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "kbit")
    return os.path.join(cache, "kjv")


# ------------------------------------------------------- the torch model

def build_model(s):
    """The GPT of models/gpt.h in plain PyTorch (names match kbit's)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    C, H, L, T = s["d_model"], s["n_head"], s["n_layer"], s["block_size"]

    class StableTable(nn.Module):
        """Xavier-uniform table, LayerNorm after the lookup."""

        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(256, C))
            nn.init.xavier_uniform_(self.weight)
            self.norm = nn.LayerNorm(C)

        def forward(self, idx):
            return self.norm(F.embedding(idx, self.weight))

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(C, 3 * C)
            self.proj = nn.Linear(C, C)
            mask = torch.ones(T, T, dtype=torch.bool).triu(1)
            self.register_buffer("future", mask, persistent=False)

        def forward(self, x):                      # x (B, t, C)
            B, t, _ = x.shape
            D = C // H
            q, k, v = self.qkv(x).split(C, dim=2)  # each (B, t, C)
            q, k, v = (z.view(B, t, H, D).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(2, 3)) * (1.0 / math.sqrt(D))
            att = att.masked_fill(self.future[:t, :t], float("-inf"))
            y = att.softmax(dim=-1) @ v            # (B, H, t, D)
            return self.proj(y.transpose(1, 2).reshape(B, t, C))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(C, s["mlp_ratio"] * C)
            self.proj = nn.Linear(s["mlp_ratio"] * C, C)

        def forward(self, x):
            return self.proj(F.gelu(self.fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn = nn.LayerNorm(C), Attention()
            self.ln_2, self.mlp = nn.LayerNorm(C), Mlp()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = StableTable() if s["stable_embedding"] else \
                nn.Embedding(256, C)
            self.wpe = nn.Embedding(T, C)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)
            residual_std = 0.02 / math.sqrt(2 * L)
            for name, p in self.named_parameters():
                if name.endswith(".bias") or ".ln_" in name or \
                        name.startswith("ln_f") or "wte.norm" in name:
                    continue  # biases 0, LayerNorm 1/0 (torch's own init)
                if name == "wte.weight" and s["stable_embedding"]:
                    continue  # keeps its Xavier init
                std = residual_std if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            for name, p in self.named_parameters():
                if name.endswith(".bias"):
                    nn.init.zeros_(p)

        def forward(self, idx):                    # idx (B, t) int64
            t = idx.shape[1]
            pos = torch.arange(t, device=idx.device)
            x = self.wte(idx) + self.wpe(pos)
            for block in self.h:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.t()  # (B, t, 256)

        def loss(self, idx, targets):
            logits = self.forward(idx)
            return F.cross_entropy(logits.reshape(-1, 256),
                                   targets.reshape(-1))

    return GPT()


def weight_decay_of(name, s):
    """kbit's rule: optim.weight_decay, then each matching override."""
    import fnmatch
    wd = s["weight_decay"]
    for entry in s["overrides"]:
        if isinstance(entry, dict) and "weight_decay" in entry and \
                fnmatch.fnmatchcase(name, str(entry.get("pattern", ""))):
            wd = float(entry["weight_decay"])
    return wd


def make_optimizer(model, s):
    import torch
    groups = {}
    for name, p in model.named_parameters():
        groups.setdefault(weight_decay_of(name, s), []).append(p)
    param_groups = [{"params": ps, "weight_decay": wd}
                    for wd, ps in groups.items()]
    kwargs = {"lr": s["lr"], "betas": (s["beta1"], s["beta2"]),
              "eps": s["eps"]}
    try:
        return torch.optim.AdamW(param_groups, foreach=True, **kwargs)
    except TypeError:  # a torch without foreach
        return torch.optim.AdamW(param_groups, **kwargs)


def lr_at(step, s, total):
    """trainer/schedule.cpp: linear warmup, then cosine to min_lr_ratio."""
    peak, warm = s["lr"], s["warmup_steps"]
    if step < warm:
        return peak * (step + 1) / warm
    if not s["cosine"]:
        return peak
    low = peak * s["min_lr_ratio"]
    t = min(1.0, (step - warm) / max(1, total - warm))
    return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * t))


def train_step(model, opt, batches, s):
    """One optimizer step over grad_accum micro-batches; the mean loss."""
    import torch
    total = 0.0
    for idx, targets in batches:
        loss = model.loss(idx, targets) / len(batches)
        loss.backward()
        total += loss.item()
    if s["clip"] > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), s["clip"])
    opt.step()
    opt.zero_grad(set_to_none=True)
    return total


# ------------------------------------------------------ child processes

def blas_loaded():
    """Folders of the BLAS libraries mapped into this process
    (openblas-pthread or openblas-openmp on Debian)."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            if "blas" in os.path.basename(path):
                libs.add(os.path.basename(os.path.dirname(
                    os.path.realpath(path))))
    return sorted(libs)


def random_batches(s, gen):
    import torch
    B, T = s["batch_size"], s["block_size"]
    out = []
    for _ in range(s["grad_accum"]):
        w = torch.randint(0, 256, (B, T + 1), generator=gen)
        out.append((w[:, :-1].contiguous(), w[:, 1:].contiguous()))
    return out


def child_timing(s, steps):
    """Times `steps` training steps on random bytes, as bench_gpt does:
    one micro-batch, no clipping."""
    import torch
    s = dict(s, grad_accum=1, clip=0.0)
    gen = torch.Generator().manual_seed(s["seed"])
    torch.manual_seed(s["seed"])
    model = build_model(s)
    opt = make_optimizer(model, s)
    ms = []
    for i in range(WARMUP_STEPS + steps):
        batches = random_batches(s, gen)
        t0 = time.perf_counter()
        train_step(model, opt, batches, s)
        if i >= WARMUP_STEPS:
            ms.append(1e3 * (time.perf_counter() - t0))
    tokens = s["batch_size"] * s["block_size"] * s["grad_accum"]
    median = statistics.median(ms)
    return {"ms_per_step": median, "tokens_per_s": tokens / median * 1e3,
            "params": sum(p.numel() for p in model.parameters())}


def read_split(path, T):
    """(train, val) bytes as data/text.cpp splits them: a folder's
    train.txt and val.txt, or a file's last tenth from the first line
    start at or after 90% of its bytes."""
    if os.path.isdir(path):
        names = [os.path.join(path, n) for n in ("train.txt", "val.txt")]
    else:
        names = [path]
    for name in names:
        if not os.path.isfile(name):
            raise UsageError(f"{name} is missing; prepare the corpus with "
                             f"scripts/prepare_kjv.sh")
    data = [open(name, "rb").read() for name in names]
    if len(data) == 1:
        whole = data[0]
        cut = len(whole) - int(len(whole) * 0.1)
        start = whole.find(b"\n", max(cut - 1, 0))
        cut = start + 1 if 0 <= start < len(whole) - 1 else cut
        data = [whole[:cut], whole[cut:]]
    for part, d in zip(("train", "validation"), data):
        if len(d) < T + 1:
            raise UsageError(f"{path}: expected at least {T + 1} {part} "
                             f"bytes, got {len(d)}")
    return data


def val_loss(model, val, T):
    """Mean cross-entropy over non-overlapping T-byte windows of `val`."""
    import torch
    n = (len(val) - 1) // T
    data = torch.frombuffer(bytearray(val[:n * T + 1]), dtype=torch.uint8)
    data = data.long()
    total = 0.0
    with torch.no_grad():
        for first in range(0, n, VAL_BATCH):
            rows = range(first, min(n, first + VAL_BATCH))
            idx = torch.stack([data[r * T:r * T + T] for r in rows])
            tgt = torch.stack([data[r * T + 1:r * T + T + 1] for r in rows])
            total += model.loss(idx, tgt).item() * len(rows)
    return total / n


def child_train(s, seconds, folder, out_dir):
    """Trains `seconds` on the corpus; writes a run folder to out_dir."""
    import torch
    B, T = s["batch_size"], s["block_size"]
    train, val = read_split(folder, T)
    data = torch.frombuffer(bytearray(train), dtype=torch.uint8).long()
    gen = torch.Generator().manual_seed(s["seed"])
    torch.manual_seed(s["seed"])
    model = build_model(s)
    opt = make_optimizer(model, s)
    total = s["max_steps"] if s["max_steps"] > 0 else 10 ** 9
    tokens_per_step = B * T * s["grad_accum"]
    os.makedirs(out_dir, exist_ok=True)
    rows, losses, step = [METRICS_HEADER], [], 0
    start = time.perf_counter()
    while step < total and time.perf_counter() - start < seconds:
        lr = lr_at(step, s, total)
        for group in opt.param_groups:
            group["lr"] = lr
        batches = []
        for _ in range(s["grad_accum"]):
            at = torch.randint(0, len(train) - T, (B,), generator=gen)
            w = torch.stack([data[a:a + T + 1] for a in at.tolist()])
            batches.append((w[:, :-1], w[:, 1:]))
        t0 = time.perf_counter()
        losses.append(train_step(model, opt, batches, s))
        step += 1
        if step % s["log_every"] == 0:
            ms = 1e3 * (time.perf_counter() - t0)
            rows.append(f"{step},{step * tokens_per_step},{losses[-1]:.6f},,"
                        f"{lr:.6g},{ms:.2f},{tokens_per_step / ms * 1e3:.1f},"
                        f"{time.perf_counter() - start:.3f}")
    wall = time.perf_counter() - start
    loss = val_loss(model, val, T)
    rows.append(f"{step},{step * tokens_per_step},,{loss:.6f},,,,{wall:.3f}")
    with open(os.path.join(out_dir, "metrics.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    result = {
        "name": "torch",
        "status": "done" if step >= total else "time_limit",
        "final_train_loss": statistics.mean(losses[-LOSS_WINDOW:]),
        "final_val_loss": loss, "tokens_per_second": step * tokens_per_step
        / wall, "tokens": step * tokens_per_step, "steps": step,
        "optimizer_state_bytes": sum(
            t.numel() * t.element_size() for st in opt.state.values()
            for t in st.values() if torch.is_tensor(t)),
        "param_count": sum(p.numel() for p in model.parameters()),
        "wall_seconds": wall}
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result


def child_main(request):
    import torch
    torch.set_num_threads(THREADS)
    s = request["shape"]
    if request["task"] == "timing":
        result = child_timing(s, request["steps"])
    else:
        result = child_train(s, request["seconds"], request["corpus"],
                             request["out"])
    result.update({"torch": torch.__version__,
                   "threads": torch.get_num_threads(), "blas": blas_loaded()})
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------- parent

def busy_jiffies():
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]) - idle, sum(v[:8])


class Meter:
    """Cores used by other processes while a child ran."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.busy0 = busy_jiffies()[0]
        self.own0 = os.times()
        return self

    def __exit__(self, *exc):
        hz = os.sysconf("SC_CLK_TCK")
        wall = time.perf_counter() - self.t0
        own = os.times()
        own_s = (own.children_user - self.own0.children_user +
                 own.children_system - self.own0.children_system)
        busy_s = (busy_jiffies()[0] - self.busy0) / hz
        self.others = max(0.0, (busy_s - own_s) / max(wall, 1e-9))
        return False


def run_child(request, setting):
    env = dict(os.environ)
    for key in ("OMP_WAIT_POLICY", "OMP_PROC_BIND"):
        env.pop(key, None)
    env["OMP_NUM_THREADS"] = str(THREADS)
    for key, value in SETTINGS[setting].items():
        if key == "LD_LIBRARY_PATH" and env.get(key):
            value = value + ":" + env[key]
        env[key] = value
    cmd = [sys.executable, os.path.abspath(__file__), "--child",
           json.dumps(request)]
    with Meter() as meter:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[7:])
            result["others"] = meter.others
            return result
    sys.stderr.write(p.stdout + p.stderr)
    code = 2 if "UsageError" in p.stderr else 1
    raise SystemExit(code)


def run_kbit_bench(build, s, steps):
    """bench_gpt's tokens/s; its --steps counts its 3 warm-up steps."""
    cmd = [os.path.join(build, "bench_gpt"), "--layers", str(s["n_layer"]),
           "--d", str(s["d_model"]), "--heads", str(s["n_head"]),
           "--ctx", str(s["block_size"]), "--batch", str(s["batch_size"]),
           "--steps", str(steps + WARMUP_STEPS), "--bits", str(s["bits"])]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    with Meter() as meter:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    text = p.stdout + p.stderr
    found = re.findall(r"([0-9][0-9,]*\.?[0-9]*)\s*tok(?:ens)?/s", text)
    if p.returncode != 0 or not found:
        sys.stderr.write(text)
        raise SystemExit(f"peer_torch_gpt: {shlex.join(cmd)} failed (exit "
                         f"{p.returncode}) or printed no tokens/s")
    return float(found[-1].replace(",", "")), meter.others, shlex.join(cmd)


def describe(s):
    return (f"L{s['n_layer']} d{s['d_model']} h{s['n_head']} "
            f"T{s['block_size']} B{s['batch_size']}"
            + (f" x{s['grad_accum']} accum" if s["grad_accum"] > 1 else "")
            + f", AdamW lr {s['lr']:g} betas {s['beta1']:g}/{s['beta2']:g} "
              f"wd {s['weight_decay']:g}, clip {s['clip']:g}, warmup "
              f"{s['warmup_steps']} then "
            + ("cosine" if s["cosine"] else "constant")
            + f" over {s['max_steps']} steps to x{s['min_lr_ratio']:g}")


def probe_settings(s):
    """Times each threading setting PROBE_ROUNDS times, interleaved (a
    busy moment then hurts one round, not one setting); keeps the setting
    with the highest best round."""
    print(f"\n## PyTorch threading ({THREADS} threads; {PROBE_ROUNDS} "
          f"interleaved rounds of {PROBE_STEPS} timed steps per setting, "
          f"random bytes)")
    print("| setting | environment | BLAS loaded | round | ms/step | "
          "tokens/s | other load (cores) |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    best_tps, info = {}, {}
    for rnd in range(PROBE_ROUNDS):
        for name, env in SETTINGS.items():
            r = run_child({"task": "timing", "shape": s,
                           "steps": PROBE_STEPS}, name)
            best_tps[name] = max(best_tps.get(name, 0.0), r["tokens_per_s"])
            info[name] = r
            env_text = " ".join(f"{k}={v}" for k, v in env.items()) or \
                f"OMP_NUM_THREADS={THREADS} only"
            print(f"| {name} | {env_text} | {', '.join(r['blas']) or '-'} | "
                  f"{rnd + 1} | {r['ms_per_step']:.1f} | "
                  f"{r['tokens_per_s']:,.0f} | {r['others']:.2f} |",
                  flush=True)
    best = max(best_tps, key=best_tps.get)
    print("best round per setting: " + ", ".join(
        f"{k} {v:,.0f} tokens/s" for k, v in best_tps.items()))
    first = info[best]
    print(f"best setting: {best} (torch {first['torch']}, "
          f"torch.get_num_threads() = {first['threads']}, "
          f"{first['params']:,} parameters)")
    return best


def throughput(s, best, build, rounds, steps):
    print(f"\n## Throughput: {rounds} alternating rounds, {steps} timed "
          f"steps each after {WARMUP_STEPS} warm-up steps (random bytes, one "
          f"micro-batch of B x T, no clipping; kbit with "
          f"{s['bits']}-bit states, torch 32-bit)")
    print("| round | torch tokens/s | torch other load | kbit tokens/s | "
          "kbit other load |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    torch_tps, kbit_tps, cmd = [], [], ""
    for i in range(rounds):
        r = run_child({"task": "timing", "shape": s, "steps": steps}, best)
        k, k_load, cmd = run_kbit_bench(build, s, steps)
        torch_tps.append(r["tokens_per_s"])
        kbit_tps.append(k)
        print(f"| {i + 1} | {r['tokens_per_s']:,.0f} | {r['others']:.2f} | "
              f"{k:,.0f} | {k_load:.2f} |", flush=True)
    t, k = statistics.median(torch_tps), statistics.median(kbit_tps)
    print(f"kbit command: {cmd}")
    print(f"median tokens/s: torch ({best}) {t:,.0f}, kbit {k:,.0f}; "
          f"kbit/torch = {k / t:.2f}")


def equal_time(s, best, cfg_path, build, seconds, corpus, work):
    print(f"\n## Equal wall time: {seconds:g} s each on {corpus}")
    torch_dir = os.path.join(work, "torch")
    kbit_dir = os.path.join(work, "kbit")
    r = run_child({"task": "train", "shape": s, "seconds": seconds,
                   "corpus": corpus, "out": torch_dir}, best)
    print(f"torch: {r['steps']} steps, {r['tokens']:,} tokens, "
          f"{r['tokens_per_second']:,.0f} tokens/s, val loss "
          f"{r['final_val_loss']:.4f} (other load {r['others']:.2f} cores)",
          flush=True)
    cmd = [os.path.join(build, "train"), cfg_path, "--set",
           f"train.max_seconds={seconds:g}", "--out", kbit_dir]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    with Meter() as meter:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    summary = os.path.join(kbit_dir, "summary.json")
    if p.returncode != 0 or not os.path.isfile(summary):
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"peer_torch_gpt: {shlex.join(cmd)} failed "
                         f"(exit {p.returncode})")
    with open(summary) as f:
        k = json.load(f)
    print(f"kbit:  {shlex.join(cmd)}")
    print(f"kbit:  {k.get('steps')} steps, {k.get('tokens', 0):,} tokens, "
          f"{k.get('tokens_per_second', 0):,.0f} tokens/s, val loss "
          f"{k.get('final_val_loss', float('nan')):.4f} (other load "
          f"{meter.others:.2f} cores)")
    kv, tv = k.get("final_val_loss"), r["final_val_loss"]
    lower = "kbit" if kv is not None and kv < tv else "torch"
    kv_text = "none" if kv is None else f"{kv:.4f}"
    print(f"lower validation loss: {lower} (kbit {kv_text}, torch {tv:.4f}); "
          f"curves: experiments/compare.py {kbit_dir} {torch_dir}")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config",
                   default=os.path.join(ROOT, "configs/gpt_small_8bit.yaml"))
    p.add_argument("--seconds", type=float, default=300.0,
                   help="wall time of each equal-time run (default 300)")
    p.add_argument("--rounds", type=int, default=5,
                   help="alternating throughput rounds (default 5)")
    p.add_argument("--steps", type=int, default=10,
                   help="timed steps per throughput round (default 10)")
    p.add_argument("--skip-train", action="store_true",
                   help="only the threading probe and the throughput rounds")
    p.add_argument("--build", default=os.path.join(ROOT, "build"),
                   help="kbit's build folder (bench_gpt, train)")
    p.add_argument("--work", default="",
                   help="folder for the two runs (default: a new /tmp one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0

    print("$ " + shlex.join([sys.executable] + sys.argv), flush=True)
    if args.rounds < 1 or args.steps < 1 or args.seconds <= 0:
        raise UsageError("expected --rounds >= 1, --steps >= 1 and "
                         "--seconds > 0")
    tools = ["bench_gpt"] + ([] if args.skip_train else ["train"])
    missing = [t for t in tools
               if not os.access(os.path.join(args.build, t), os.X_OK)]
    if missing:  # fail before minutes of timing, not after
        raise UsageError(f"missing {', '.join(missing)} in {args.build}; "
                         f"build with: cmake --build {args.build} --target "
                         f"{' '.join(tools)}")
    import torch
    print(f"torch {torch.__version__} from {os.path.dirname(torch.__file__)}"
          f", {THREADS} threads (torch.set_num_threads({THREADS}), "
          f"OMP_NUM_THREADS={THREADS})")
    cfg = load_config(args.config, os.path.join(args.build, "train"))
    s = shape(cfg)
    print(f"config {args.config}: {describe(s)}")
    corpus = corpus_folder(cfg)
    if not args.skip_train:
        read_split(corpus, s["block_size"])  # fail before any timing
    best = probe_settings(s)
    throughput(s, best, args.build, args.rounds, args.steps)
    if not args.skip_train:
        work = args.work or tempfile.mkdtemp(prefix="peer_torch_gpt_")
        equal_time(s, best, args.config, args.build, args.seconds, corpus,
                   work)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except UsageError as e:
        print(f"peer_torch_gpt: UsageError: {e}", file=sys.stderr)
        sys.exit(2)
