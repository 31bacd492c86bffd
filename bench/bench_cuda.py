"""pgkernels on GPU shares vs its CPU path vs CrypTen on CUDA shares, in one run.

    python -m bench.bench_cuda [--out bench/results/cuda.json] [--scale 1] [--skip-cpu] [--skip-crypten]

Two compute parties plus the dealer on one host; with ``device="cuda"`` both
parties and the dealer share the one GPU (messages through host memory over
gloo). Cases (issue 18's acceptance list):

* ``ltz`` and ``relu`` on 1e7 elements: pgkernels GPU, pgkernels CPU, and
  CrypTen's ``x < 0`` / ``x.relu()`` on CUDA shares (with the pgkernels dealer
  as CrypTen's provider, and under CrypTen's TFP);
* ``relu`` on 1e5 elements (Piranha's published 2PC figure: 0.152 s);
* the Gram matrix of 50 x 1e5 (``pgkernels.gram``), GPU and CPU;
* the coordinate-wise median of 10 x 1e5 and Krum with n = 50, d = 1e5, f = 5,
  GPU and CPU.

Every case: one warm call checked against plaintext, then at least 3 timed
calls (the GPU is synchronised at the end of each); the median at party 0 is
reported. A case that fails is recorded with its error and the run goes on.
Speedups are computed against the CPU path and against CrypTen's faster
provider for the same op and size, in the same run.
"""

import argparse
import sys

import pgkernels

from .common import close, measure, start_run, write_results

PIRANHA_RELU_1E5_S = 0.152  # Piranha (Watson et al. 2022), 2PC ReLU on 1e5 elements


def _cases(scale):
    """The acceptance cases, sizes divided by ``scale`` (1: the real run)."""
    n_big, d, n_relu = 10**7 // scale, 10**5 // scale, 10**5 // scale
    return [("ltz", n_big), ("relu", n_big), ("relu", n_relu), ("gram", (50, d)), ("median", (10, d)),
            ("krum", (50, d))]


def _data(shape, seed):
    import torch

    g = torch.Generator().manual_seed(seed)
    # on CrypTen's 16-bit grid, so that plaintext is exact
    return torch.round(torch.randn(shape, generator=g, dtype=torch.float64) * 10 * 2**16) / 2**16


def _sync(dev):
    import torch

    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _pgk_session(cases, device):
    import crypten
    import torch

    from pgkernels.defenses.robust import krum

    rows = []
    for op, size in cases:
        shape = (size,) if isinstance(size, int) else size
        xp = _data(shape, sum(shape))
        if op in ("gram", "krum"):
            xp = xp / 64  # keep squared norms of 1e5-entry rows inside the fixed-point range
            xp = torch.round(xp * 2**16) / 2**16
        x = crypten.cryptensor(xp, device=device)
        if op == "ltz":
            fn, want, tol = (lambda: pgkernels.ltz(x)), (xp < 0).double(), 0
        elif op == "relu":
            fn, want, tol = (lambda: pgkernels.relu(x)), xp.clamp(min=0), 2**-16
        elif op == "gram":
            fn, want, tol = (lambda: pgkernels.gram(x)), xp @ xp.T, 1e-2
        elif op == "median":
            fn, want, tol = ((lambda: pgkernels.median(x, dim=0, lower=True)),
                             torch.quantile(xp, 0.5, dim=0, interpolation="lower"), 0)
        else:
            fn, want, tol = (lambda: krum(x, 5)), None, None

        def timed(fn=fn):
            out = fn()
            _sync(device)
            return out

        def check(out, want=want, tol=tol, op=op):
            if want is not None:
                close(pgkernels.decode(out).cpu(), want, tol, op)

        row = dict(impl="pgkernels", device=device, op=op, n=int(torch.tensor(shape).prod()), shape=list(shape))
        try:
            row.update(measure(timed, 3, check=check))
        except Exception as e:  # recorded: the other cases still run
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        rows.append(row)
        print(f"[bench] {row['impl']} {device} {op} {shape}: {row.get('seconds', row.get('error'))}",
              file=sys.stderr, flush=True)
    return rows


def _crypten_session(cases, device, provider):
    import crypten

    rows = []
    for op, size in cases:
        if op not in ("ltz", "relu"):
            continue
        xp = _data((size,), size)
        x = crypten.cryptensor(xp, device=device)
        fn, want, tol = ((lambda: x < 0), (xp < 0).double(), 0) if op == "ltz" else \
            ((lambda: x.relu()), xp.clamp(min=0), 2e-3)

        def timed(fn=fn):
            out = fn()
            _sync(device)
            return out

        def check(out, want=want, tol=tol, op=op):
            close(out.get_plain_text().cpu(), want, tol, op)

        row = dict(impl="crypten", provider=provider, device=device, op=op, n=size, shape=[size])
        try:
            row.update(measure(timed, 3, check=check))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
        rows.append(row)
        print(f"[bench] crypten/{provider} {device} {op} {size}: {row.get('seconds', row.get('error'))}",
              file=sys.stderr, flush=True)
    return rows


def _table(rows):
    def best(impl, op, n, device):
        got = [r["seconds"] for r in rows if r["impl"] == impl and r["op"] == op and r["n"] == n
               and r["device"] == device and "seconds" in r]
        return min(got) if got else None

    table = []
    for r in rows:
        if r["impl"] != "pgkernels" or not r["device"].startswith("cuda"):
            continue
        op, n = r["op"], r["n"]
        gpu = r.get("seconds")
        cpu = best("pgkernels", op, n, "cpu")
        ct = best("crypten", op, n, r["device"])
        row = {"op": op, "shape": "x".join(map(str, r["shape"])), "gpu ms": gpu and round(gpu * 1e3, 2),
               "cpu ms": cpu and round(cpu * 1e3, 2), "crypten cuda ms": ct and round(ct * 1e3, 2),
               "vs cpu": gpu and cpu and round(cpu / gpu, 1), "vs crypten": gpu and ct and round(ct / gpu, 1)}
        if op == "relu" and n == 10**5 and gpu:  # Piranha's size
            row["vs piranha 0.152 s"] = round(PIRANHA_RELU_1E5_S / gpu, 2)
        if "error" in r:
            row["error"] = r["error"][:120]
        table.append(row)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results/cuda.json")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scale", type=int, default=1, help="divide every size by this (10: a quick run, "
                                                          "1000: a smoke test)")
    ap.add_argument("--skip-cpu", action="store_true", help="no CPU-path rows")
    ap.add_argument("--skip-crypten", action="store_true", help="no CrypTen rows")
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args(argv)
    start_run()
    cases = _cases(a.scale)
    rows = []
    meta = {"parties": 2, "device": a.device, "scale": a.scale,
            "note": "seconds: median at party 0 of >= 3 timed calls after one warm call checked against "
                    "plaintext (GPU synchronised after each call); both parties and the dealer on one GPU, "
                    "messages through host memory over gloo; vs cpu: pgkernels' CPU path in the same run "
                    "(1 thread per party); vs crypten: CrypTen's op on CUDA shares, fastest provider"}

    def stage(what, fn, fail_row):
        # results are written after every stage, so a run cut short keeps what it measured
        print(f"[bench] {what}", file=sys.stderr, flush=True)
        try:
            rows.extend(fn())
        except Exception as e:
            rows.append(dict(fail_row, error=f"{type(e).__name__}: {e}"[:500]))
        for r in rows:
            if "seconds" in r:
                r["ms"] = round(r["seconds"] * 1e3, 2)
        text = write_results(a.out, dict(meta, stages_done=what), rows, _table(rows))
        print(f"[bench] wrote {a.out}", file=sys.stderr, flush=True)
        return text

    text = stage(f"pgkernels on {a.device}",
                 lambda: pgkernels.launch(_pgk_session, args=(cases, a.device), device=a.device,
                                          timeout=a.timeout)[0],
                 dict(impl="pgkernels", device=a.device, op="*", n=0, shape=[0]))
    if not a.skip_cpu:
        text = stage("pgkernels on the CPU",
                     lambda: pgkernels.launch(_pgk_session, args=(cases, "cpu"), device="cpu",
                                              timeout=a.timeout)[0],
                     dict(impl="pgkernels", device="cpu", op="*", n=0, shape=[0]))
    if not a.skip_crypten:
        import warnings

        for provider, kw in (("pgk-dealer", {}), ("TFP", dict(dealer="tfp", insecure=True))):
            def run(provider=provider, kw=kw):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return pgkernels.launch(_crypten_session, args=(cases, a.device, provider), device=a.device,
                                            timeout=a.timeout, **kw)[0]

            text = stage(f"CrypTen on {a.device} ({provider})", run,
                         dict(impl="crypten", provider=provider, device=a.device, op="*", n=0, shape=[0]))
    print(text)


if __name__ == "__main__":
    main()
