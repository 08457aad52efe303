"""A cached ``interp.load("smollm2-135m")`` in fresh processes, interp's default (one thread for
the load) against two threads (``INTERP_NUM_THREADS=2``, torch's default on 2 cores), alternated
so that machine noise falls on both alike: ``python -m benchmarks.load_threads [repeats]``."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

SCRIPT = """
import json, time
t0 = time.perf_counter()
import interp
t1 = time.perf_counter()
interp.load("smollm2-135m")
print(json.dumps(dict(import_s=t1 - t0, load_s=time.perf_counter() - t1)))
"""


def _one(threads: str | None) -> float:
    env = dict(os.environ)
    env.pop("INTERP_NUM_THREADS", None)
    if threads:
        env["INTERP_NUM_THREADS"] = threads
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=600,
                         env=env)
    assert "Loading weights" not in out.stderr, "a progress bar printed during load"
    return json.loads(out.stdout.strip().splitlines()[-1])["load_s"]


def main(repeats: int = 3) -> dict:
    _one(None)  # warm the file cache (and the converted checkpoint)
    one, two = [], []
    for _ in range(repeats):
        one.append(_one(None))
        two.append(_one("2"))
    res = dict(one_thread_s=statistics.median(one), two_threads_s=statistics.median(two), one=one, two=two,
               ratio=statistics.median(two) / statistics.median(one), load_average=os.getloadavg())
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
