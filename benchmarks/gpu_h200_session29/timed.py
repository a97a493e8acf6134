"""Run a command with a deadline: wall time, exit code and peak RSS (children) to NAME.json."""
import json, os, subprocess, sys, time
name, limit, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[4:]
out = os.environ["R"]
if limit < 5:
    print(f"[{name}] skipped: no time left", flush=True); sys.exit(0)
print(f"[{name}] start (limit {limit:.0f} s): {' '.join(cmd)}", flush=True)
with open(f"{out}/{name}.log", "w") as f:
    t = time.monotonic()
    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=False)
    rc = None
    while rc is None:
        r = os.wait4(p.pid, os.WNOHANG)
        if r[0] != 0:
            rc, usage = os.waitstatus_to_exitcode(r[1]), r[2]; break
        if time.monotonic() - t > limit:
            p.kill(); _, st, usage = os.wait4(p.pid, 0); rc = "timeout"; break
        time.sleep(0.2)
    wall = time.monotonic() - t
rec = {"name": name, "cmd": cmd, "rc": rc, "wall_s": wall, "peak_rss_mib": usage.ru_maxrss / 1024}
json.dump(rec, open(f"{out}/{name}.json", "w"), indent=1)
print(f"[{name}] rc={rc} wall={wall:.1f}s rss={rec['peak_rss_mib']:.0f}MiB", flush=True)
os.system(f"tail -n 6 {out}/{name}.log")
