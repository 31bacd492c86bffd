"""The README's performance tables are generated from the committed benchmark
results (docs/results/bench/*.json) by bench.readme_tables: no benchmark runs
here, only the generation."""

import pytest

from bench import readme_tables
from bench.tables import compare_table, order_table


def test_readme_tables_are_generated_from_the_committed_json():
    with open(readme_tables.README) as f:
        text = f.read()
    assert readme_tables.update(text) == text, "run: python -m bench.readme_tables"


def test_committed_results_record_their_provenance():
    for name in ("compare.json", "order.json", "aggregate.json"):
        meta = readme_tables.load(name)["meta"]
        for key in ("command", "commit", "versions", "date", "cpu", "cpus", "load_average_start",
                    "load_average_end"):
            assert meta.get(key), (name, key)
        assert meta["command"].startswith("python -m bench.")
        assert {"python", "torch", "crypten", "pgkernels"} <= set(meta["versions"])
    for name in ("compare.json", "order.json", "aggregate.json"):
        for row in readme_tables.load(name)["rows"]:
            assert row["checked"] and row["reps"] >= 3 and len(row["times"]) == row["reps"], (name, row)


def test_a_missing_marker_is_an_error():
    with pytest.raises(ValueError, match="bench:compare"):
        readme_tables.update("no tables here\n")


def _row(impl, provider, op, n, seconds, rounds=7):
    return dict(impl=impl, provider=provider, op=op, n=n, seconds=seconds, rounds=rounds,
                bytes_sent=13.25 * n, dealer_bytes=40.0 * n)


def test_speedup_is_against_the_faster_crypten_provider():
    rows = []
    for op in ("ltz", "relu", "where"):
        rows += [_row("pgkernels", "pgk-dealer", op, 1000, 0.01), _row("crypten", "TFP", op, 1000, 0.08),
                 _row("crypten", "TTP", op, 1000, 0.05 if op == "ltz" else 0.5)]
    table = {r["op"]: r for r in compare_table(rows)}
    assert table["ltz"]["fastest CrypTen"] == "TTP" and table["ltz"]["speedup vs fastest"] == "5.0x"
    assert table["relu"]["fastest CrypTen"] == "TFP" and table["relu"]["speedup vs fastest"] == "8.0x"


def test_order_table_takes_the_fastest_provider_and_method():
    base = dict(op="median", n=5, d=1000, rounds=9, bytes_sent=1e5)
    rows = [dict(base, impl="pgkernels", provider="pgk-dealer", method="auto:rank", seconds=0.01, plain_s=1e-4),
            dict(base, impl="crypten", provider="TFP", method="network", seconds=0.3),
            dict(base, impl="crypten", provider="TTP", method="network", seconds=0.2)]
    (row,) = order_table(rows)
    assert row["CrypTen method"] == "network (TTP)" and row["speedup"] == "20.0x" and row["pgk method"] == "rank"
