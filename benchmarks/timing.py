"""The timing loop shared by the framework processes (torch_step.py, ort_step.py): one warm-up
step, then the median over `repeats` loops of `steps` steps; prints JSON with the seconds per step
and the process's peak RSS. Standard library only: it also runs inside the ORT venv."""
import json
import statistics
import time


def peak_rss() -> int:
    """This process's peak resident set (VmHWM), in bytes. Not getrusage's ru_maxrss: Linux carries
    that over exec from the forking parent, so a child of a big process would report the parent."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def report(step, steps: int, repeats: int) -> None:
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t0) / steps)
    print(json.dumps({"seconds": statistics.median(times),
                      "peak_rss": peak_rss()}))
