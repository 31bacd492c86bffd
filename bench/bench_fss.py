"""The FSS comparison: DCF throughput per core vs sycret, and ltz on many elements.

    python -m bench.bench_fss [--kernel-n 262144] [--ltz-n 1e6] [--sycret-python /tmp/venv-sycret/bin/python]
                              [--out bench/results/fss.json]

Two parts, in one run:

* DCF kernels on one core (torch and OpenMP at one thread): key generation
  and evaluation per second at 32 and 64 input bits, and the key bytes per
  element (a party's root seed plus the correction words), side by side with
  sycret's DCF (``sycret.LeFactory``: 32-bit inputs, keys from its keygen,
  ``n_threads=1``), run in its own virtual environment through a subprocess
  (sycret is not a dependency of pgkernels). Best of ``--reps`` runs each.
* ``ltz`` on ``--ltz-n`` elements, 2 parties over loopback: ``method="fss"``
  with its keys asked for online (the dealer's key generation and the 1.5 KB
  per element of keys on the critical path), the same with the keys
  prefetched (the online phase only: one opening plus local evaluation),
  ``method="tree"`` (the default comparison), and CrypTen's ``x < 0`` under
  its TFP and TTP providers. Rounds, bytes and median time; and a projection
  to higher latencies, ``measured + rounds * latency``, which is the cost
  model, not a measurement (the simulated link is a separate tool).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import pgkernels

from .common import close, measure, provenance, run_crypten, start_run, write_results

SYCRET_PY = "/tmp/venv-sycret/bin/python"

# Runs in sycret's virtual environment: keygen and eval per second, one thread.
_SYCRET_SCRIPT = r"""
import json, sys, time
import numpy as np
import sycret
n, reps = int(sys.argv[1]), int(sys.argv[2])
le = sycret.LeFactory(n_threads=1)
gen, ev = [], []
for _ in range(reps):
    t = time.perf_counter(); k0, k1 = le.keygen(n); gen.append(time.perf_counter() - t)
    x = np.random.randint(0, 2**31, size=n, dtype=np.int64).astype(le.x_type)
    t = time.perf_counter(); le.eval(0, x, k0, n_threads=1); ev.append(time.perf_counter() - t)
print(json.dumps({"version": getattr(sycret, "__version__", None) or __import__("importlib.metadata").metadata.version("sycret"),
                  "bits": 8 * le.N, "key_bytes": int(le.key_len), "n": n,
                  "gen_per_s": n / min(gen), "eval_per_s": n / min(ev)}))
"""


def sycret_rows(python, n, reps):
    if not os.path.exists(python):
        return None, f"sycret skipped: no interpreter at {python} (python3 -m venv /tmp/venv-sycret && " \
                     "/tmp/venv-sycret/bin/pip install sycret numpy)"
    env = dict(os.environ, OMP_NUM_THREADS="1", RAYON_NUM_THREADS="1")
    try:
        out = subprocess.run([python, "-c", _SYCRET_SCRIPT, str(n), str(reps)], capture_output=True, text=True,
                             timeout=1200, env=env, check=True)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        return None, f"sycret failed: {getattr(e, 'stderr', '') or e}"
    return json.loads(out.stdout.strip().splitlines()[-1]), None


def kernel_rows(n, reps):
    """pgkernels' DCF gen/eval per second on one core, at 32 and 64 bits."""
    import torch

    from pgkernels import ops

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(1)

    def rand(m):
        return torch.randint(-(2**63), 2**63 - 1, (m,), generator=g, dtype=torch.long)

    rows = []
    for bits in (32, 64):
        alpha, x = rand(n), rand(n)
        s0, s1 = rand(2 * n), rand(2 * n)
        gen, ev = [], []
        for _ in range(reps):
            t = time.perf_counter()
            cw = ops.dcf_gen(alpha, None, None, s0, s1, bits)
            gen.append(time.perf_counter() - t)
            t = time.perf_counter()
            y0 = ops.dcf_eval(x, s0, cw, bits, 0)
            ev.append(time.perf_counter() - t)
        y1 = ops.dcf_eval(x, s1, cw, bits, 1)
        top = (1 << bits) - 1 if bits < 64 else -1
        xl, al = x & top, alpha & top
        want = (xl < al) if bits < 64 else ((xl ^ (-(2**63))) < (al ^ (-(2**63))))  # unsigned
        if not torch.equal(y0 + y1, want.long()):
            raise AssertionError(f"dcf at {bits} bits disagrees with plaintext")
        rows.append(dict(impl="pgkernels", isa=ops.dcf_isa(), bits=bits, n=n,
                         key_bytes=8 * (ops.dcf_cw_words(bits) + 2), gen_per_s=n / min(gen),
                         eval_per_s=n / min(ev)))
    return rows


def _data(n):
    import torch

    g = torch.Generator().manual_seed(n)
    return torch.round(torch.randn(n, generator=g, dtype=torch.float64) * 10 * 2**16) / 2**16


def _time(fn, reps, before=None):
    """:func:`bench.common.measure` (median seconds at party 0 of ``reps``
    calls, ``before()`` untimed ahead of each; rounds and bytes of one call),
    and the warm call's result."""
    warm = []
    row = measure(fn, reps, check=warm.append, before=before)
    row.pop("checked")
    return warm[0], row


def _pgk_session(n, reps):
    import crypten

    from pgkernels.runtime.session import dealer_client

    xp = _data(n)
    x = crypten.cryptensor(xp)
    want = (xp < 0).double()
    client = dealer_client()

    def prefetch():
        client.prefetch_fss(n, 64)
        client._ahead[1].wait()  # the keys are here: what follows is the online phase

    rows = []
    for name, fn, before in [("fss (keys online)", lambda: pgkernels.ltz(x, method="fss"), None),
                             ("fss (keys prefetched)", lambda: pgkernels.ltz(x, method="fss"), prefetch),
                             ("tree", lambda: pgkernels.ltz(x, method="tree"), None)]:
        out, row = _time(fn, reps, before)
        close(pgkernels.decode(out), want, 0, name)
        del out
        rows.append(dict(impl="pgkernels", provider="pgk-dealer", method=name, n=n, **row))
    return rows


def _crypten_session(n, reps):
    import crypten

    xp = _data(n)
    x = crypten.cryptensor(xp)
    out, row = _time(lambda: x < 0, reps)
    close(out.get_plain_text(), (xp < 0).double(), 0, "crypten x < 0")
    return [dict(impl="crypten", method="x < 0", n=n, **row)]


LATENCIES = (3e-4, 1e-2, 5e-2)


def ltz_table(rows):
    table = []
    online = next((r for r in rows if r.get("method") == "fss (keys online)"), None)
    for r in rows:
        n = r["n"]
        name = r["method"] if r["impl"] == "pgkernels" else f"CrypTen x < 0 ({r['provider']})"
        row = {"method": name, "n": n, "rounds": r["rounds"], "bytes/elem": round(r["bytes_sent"] / n, 2),
               "dealer bytes/elem": round(r["dealer_bytes"] / n, 1), "ms (loopback)": round(r["seconds"] * 1e3, 1)}
        if r.get("method") == "fss (keys prefetched)" and online:
            # the keys travelled before the clock started: the same bytes, offline
            row["dealer bytes/elem"] = f"{round(online['dealer_bytes'] / n, 1)} (offline)"
        for lat in LATENCIES[1:]:
            row[f"ms at {lat * 1e3:g} ms (model)"] = round((r["seconds"] + r["rounds"] * lat) * 1e3, 1)
        table.append(row)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel-n", type=int, default=1 << 18)
    ap.add_argument("--ltz-n", type=float, default=1e6)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--ltz-reps", type=int, default=3)
    ap.add_argument("--sycret-python", default=SYCRET_PY)
    ap.add_argument("--providers", nargs="*", default=["TFP", "TTP"])
    ap.add_argument("--out", default="bench/results/fss.json")
    a = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    start_run()

    print(f"[bench] DCF kernels, one core, n = {a.kernel_n}", file=sys.stderr)
    kernels = kernel_rows(a.kernel_n, a.reps)
    syc, why = sycret_rows(a.sycret_python, a.kernel_n, a.reps)
    notes = [why] if why else []
    if syc:
        kernels.append(dict(impl="sycret", isa="(its own AES-NI)", bits=syc["bits"], n=syc["n"],
                            key_bytes=syc["key_bytes"], gen_per_s=syc["gen_per_s"], eval_per_s=syc["eval_per_s"],
                            version=syc["version"]))
    ktable = []
    ref = next((k for k in kernels if k["impl"] == "sycret"), None)
    for k in kernels:
        row = {"impl": k["impl"], "isa": k["isa"], "bits": k["bits"], "key bytes/elem": k["key_bytes"],
               "gen/s per core": round(k["gen_per_s"]), "eval/s per core": round(k["eval_per_s"])}
        if ref and k["impl"] == "pgkernels" and k["bits"] == ref["bits"]:
            row["gen vs sycret"] = f"{k['gen_per_s'] / ref['gen_per_s']:.1f}x"
            row["eval vs sycret"] = f"{k['eval_per_s'] / ref['eval_per_s']:.1f}x"
            row["key vs sycret"] = f"{k['key_bytes'] / ref['key_bytes']:.2f}x"
        ktable.append(row)

    n = int(a.ltz_n)
    print(f"[bench] ltz on {n} elements: pgkernels (fss, tree)", file=sys.stderr)
    rows = pgkernels.launch(_pgk_session, args=(n, a.ltz_reps), timeout=3600)[0]
    rows += run_crypten(_crypten_session, (n, a.ltz_reps), a.providers)
    ltable = ltz_table(rows)

    meta = {"parties": 2, "kernels": kernels, "kernel_table": ktable, "notes": notes + [
        "kernels: best of reps at one thread; key bytes per element include the party's 16-byte root seed "
        "(drawn from its PRG stream in the protocol, so the dealer sends 16 bytes less per element)",
        "ltz: median at party 0 after one warm call checked against plaintext; rounds include online round "
        "trips to the dealer; bytes sent per compute party per element; dealer bytes: received by both "
        "parties together; 'ms at L (model)' = measured + rounds * L, a projection, not a measurement"]}
    text = write_results(a.out, meta, rows, ltable)
    from .tables import fmt_table

    print(fmt_table(ktable, list(dict.fromkeys(c for r in ktable for c in r))))
    print(text)
    print(f"[bench] wrote {a.out}", file=sys.stderr)
    _ = provenance  # recorded by write_results


if __name__ == "__main__":
    main()
