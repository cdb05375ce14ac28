"""The generated trainer as a standalone host binary: a C main times the training loop without
Python, and callgrind counts its instructions per step (deterministic, unlike time)."""
from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from pathlib import Path

from codegen.build import host_cflags
from codegen.manifest import Manifest

MAIN = r"""
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "{p}.h"

static float x[{P}_INPUT_SIZE];
static {p}_label_t y[{P}_LABEL_SIZE];

/* noinline: callgrind attributes the step's instructions to this name. */
__attribute__((noinline)) float bench_step(void) {{ return {p}_train_step(x, y); }}

static double now(void)
{{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}}

int main(int argc, char **argv)
{{
    const int steps = argc > 1 ? atoi(argv[1]) : 100, repeats = argc > 2 ? atoi(argv[2]) : 1;
    const int classes = {P}_OUTPUT_SIZE / {P}_BATCH;
    int i, r;
    float loss = 0.0f;
    unsigned state = 12345u;
    for (i = 0; i < {P}_INPUT_SIZE; ++i) {{ /* uniform in [-1, 1), like the other frameworks' batch */
        state = state * 1664525u + 1013904223u;
        x[i] = (float)(state >> 8) / 8388608.0f - 1.0f;
    }}
    for (i = 0; i < {P}_LABEL_SIZE; ++i) y[i] = ({p}_label_t)({label});
    for (r = 0; r < repeats; ++r) {{
        const double t0 = now();
        for (i = 0; i < steps; ++i) loss = bench_step();
        printf("%.9f\n", (now() - t0) / steps);
    }}
    return !(loss == loss); /* a NaN loss fails the run */
}}
"""


def build(folder: Path, manifest: Manifest) -> Path:
    """Compile the trainer with the host flags (codegen.build.host_cflags) plus the timing main."""
    p = manifest.name
    label = "i % classes" if manifest.labels.dtype == "int32" else "(i % 5) * 0.25f"
    (folder / "bench_main.c").write_text(MAIN.format(p=p, P=p.upper(), label=label))
    exe = folder / "bench"
    subprocess.run(["cc", *host_cflags(), "bench_main.c", f"{p}.c", "-lm", "-o", exe.name], cwd=folder,
                   check=True)
    return exe


def seconds_per_step(exe: Path, steps: int, repeats: int) -> float:
    """Median over `repeats` timed loops of `steps` steps."""
    out = subprocess.run([str(exe), str(steps), str(repeats)], capture_output=True, text=True, check=True).stdout
    return statistics.median(float(v) for v in out.split())


def instructions_per_step(exe: Path, steps: int = 5) -> int | None:
    """Instructions inside bench_step per call (callgrind, inclusive); None without valgrind."""
    if not shutil.which("valgrind"):
        return None
    out = exe.parent / "callgrind.out"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=bench_step",
                    str(exe), str(steps)], capture_output=True, check=True)
    total = re.search(r"^summary:\s+(\d+)", out.read_text(), re.M)
    return int(total.group(1)) // steps
