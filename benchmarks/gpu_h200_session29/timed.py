"""Run a command with a deadline; write its wall time, exit code and peak RSS (children) to
``$R/NAME.json`` and its output to ``$R/NAME.log``.

Usage: ``python timed.py NAME LIMIT_S -- CMD ...`` (as gpu.sh calls it on the device machine).
"""

import json
import os
import subprocess
import sys
import time


def main() -> int:
    name, limit, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[4:]
    out = os.environ["R"]
    if limit < 5:
        print(f"[{name}] skipped: no time left", flush=True)
        return 0
    print(f"[{name}] start (limit {limit:.0f} s): {' '.join(cmd)}", flush=True)
    with open(f"{out}/{name}.log", "w") as f:
        t = time.monotonic()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid != 0:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - t > limit:
                p.kill()
                _, _, usage = os.wait4(p.pid, 0)
                rc = "timeout"
                break
            time.sleep(0.2)
        wall = time.monotonic() - t
    rec = {"name": name, "cmd": cmd, "rc": rc, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}
    with open(f"{out}/{name}.json", "w") as f:
        json.dump(rec, f, indent=1)
    print(f"[{name}] rc={rc} wall={wall:.1f}s rss={rec['peak_rss_mib']:.0f}MiB", flush=True)
    os.system(f"tail -n 6 {out}/{name}.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
