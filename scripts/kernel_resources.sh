#!/usr/bin/env bash
# Per-kernel resource usage from ptxas (no GPU needed): registers, spills, static shared memory and stack for
# every kernel of every .cu file, for one architecture (default sm_90). This is the check the CUDA emulator
# cannot make: a launch fails ("too many resources requested") when registers x threads per block exceed the
# SM's 65536 registers; spills cost bandwidth. Recompiles each .cu file of build/ (nvcc build) with -Xptxas=-v
# into a temporary object; build/ itself is not touched.
# Usage: scripts/kernel_resources.sh [sm_XX]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-sm_90}
[ -f build/compile_commands.json ] || bash scripts/build.sh
python3 - "$arch" <<'PY'
import json, re, shlex, subprocess, sys, tempfile, os
arch = sys.argv[1]
cmds = [e for e in json.load(open("build/compile_commands.json")) if e["file"].endswith(".cu")]
if not cmds:
    sys.exit("kernel_resources: build/ has no .cu files (configured without nvcc)")
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for e in cmds:
        args = shlex.split(e["command"])
        args[args.index("-o") + 1] = os.path.join(tmp, "k.o")
        args.insert(1, "-Xptxas=-v")
        r = subprocess.run(args, cwd=e["directory"], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"kernel_resources: nvcc failed on {e['file']}:\n{r.stderr}")
        name = None
        for line in (r.stdout + r.stderr).splitlines():
            m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+)'", line)
            if m:
                name = m.group(1) if m.group(2) == arch else None
                frame = spill = ""
                continue
            if name is None:
                continue
            m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores", line)
            if m:
                frame, spill = m.group(1), m.group(2)
            m = re.search(r"Used (\d+) registers.*?(?:, (\d+) bytes smem)?$", line)
            if m and "registers" in line:
                smem = re.search(r"(\d+) bytes smem", line)
                rows.append((os.path.relpath(e["file"]), name, int(m.group(1)), int(smem.group(1)) if smem else 0,
                             int(frame or 0), int(spill or 0)))
                name = None
names = subprocess.run(["c++filt"], input="\n".join(r[1] for r in rows), capture_output=True, text=True).stdout.split("\n")
print(f"{'file':34s} {'regs':>4s} {'smem':>6s} {'stack':>5s} {'spill':>5s}  kernel ({arch})")
for r, n in zip(rows, names):
    short = re.sub(r"kvb::codecs::|\(anonymous namespace\)::", "", n)
    print(f"{r[0]:34s} {r[2]:4d} {r[3]:6d} {r[4]:5d} {r[5]:5d}  {short[:110]}")
worst = max(rows, key=lambda r: r[2])
print(f"{len(rows)} kernels; most registers {worst[2]} (x 1024 threads = {worst[2] * 1024} of 65536); "
      f"spilling: {sum(1 for r in rows if r[5] > 0)}")
PY
