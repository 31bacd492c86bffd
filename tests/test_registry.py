"""The rule registry (pgkernels.defenses.registry): its facts agree with the rules
themselves, with their references, with the validity check, and with the README;
and everything that names rules reads it."""

import pathlib

import numpy as np
import pytest

import pgkernels
from pgkernels.defenses import reference as R
from pgkernels.defenses import registry, validity

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_names_functions_and_parameters():
    assert registry.NAMES == ("fedavg", "median", "trimmed_mean", "norm_clip", "krum", "multi_krum", "bulyan",
                              "fltrust", "flame", "auror")
    for name, rule in registry.RULES.items():
        assert rule.mpc is getattr(pgkernels.defenses, name)
        assert rule.reference is getattr(R, name)
        # the reference takes the rule's parameters under the same names; the
        # only differences are protocol options (method) and FLAME's plaintext rng
        assert set(rule.params) - set(rule.reference_params) <= {"method"}, name
        assert set(rule.reference_params) - set(rule.params) <= {"rng"}, name
    assert registry.get("krum").params == {"num_malicious": registry.REQUIRED, "method": None}  # method: top-k protocol
    assert registry.get("trimmed_mean").params["proportiontocut"] == 0.1
    assert registry.get("fltrust").arrays == ("server_update",) and registry.get("fltrust").server_update
    assert [n for n, r in registry.RULES.items() if r.server_update] == ["fltrust"]
    assert registry.get("multi_krum").counts_clients == ("to_keep",)
    with pytest.raises(ValueError, match="unknown rule 'mean'; choose one of"):
        registry.get("mean")


def test_min_clients_and_selections():
    need = {name: [registry.get(name).min_clients(f) for f in range(4)] for name in registry.NAMES}
    assert need["krum"] == need["multi_krum"] == [3, 5, 7, 9]
    assert need["bulyan"] == [3, 7, 11, 15]
    assert need["flame"] == [1, 3, 5, 7]
    assert all(need[n] == [1] * 4 for n in ("fedavg", "median", "trimmed_mean", "norm_clip", "fltrust", "auror"))
    assert registry.get("flame").min_clients(None) == 1  # None: FLAME keeps a majority
    assert registry.get("krum").min_clients_for({"num_malicious": "x"}) == 3  # the rule's own check reports it
    assert registry.get("median").min_clients_for({"num_malicious": 5}) == 1  # takes no f
    assert registry.get("bulyan").min_clients_text == "4f + 3"
    with pytest.raises(ValueError, match="num_malicious"):
        registry.get("krum").min_clients(-1)
    # the validity module states no bounds of its own
    assert validity.RULES == registry.NAMES
    assert all(validity.min_clients(n, 2) == registry.get(n).min_clients(2) for n in registry.NAMES)
    # how each selection is read
    assert registry.get("krum").selected(np.array([0, 0, 1, 0])).tolist() == [2]
    assert registry.get("flame").selected(np.array([1, 0, 1, 1])).tolist() == [0, 2, 3]
    assert registry.get("bulyan").selected(np.eye(5)[[3, 0, 4]]).tolist() == [0, 3, 4]
    with pytest.raises(ValueError, match="selects no clients"):
        registry.get("median").selected(np.ones(3))


def test_every_rule_has_an_input_bound():
    for name in registry.NAMES:
        assert validity.input_bound(name, 10, 100) > 0


def test_aggregate_plain_matches_the_references():
    rng = np.random.default_rng(0)
    U = rng.normal(size=(9, 6))
    agg, kept = registry.get("krum").aggregate_plain(U, num_malicious=2, to_keep=99, rng=None)
    ref, i = R.krum(U, 2)
    np.testing.assert_array_equal(agg, ref)
    assert kept.tolist() == [i]
    agg, kept = registry.get("trimmed_mean").aggregate_plain(U)  # the MPC default proportiontocut=0.1
    np.testing.assert_array_equal(agg, R.trimmed_mean(U, 0.1))
    assert kept is None
    _, chosen = R.bulyan(U[:7], 1)
    assert registry.get("bulyan").aggregate_plain(U[:7], num_malicious=1)[1].tolist() == sorted(chosen)
    with pytest.raises(TypeError, match="norm_clip needs max_norm"):
        registry.get("norm_clip").aggregate_plain(U)


def test_readme_table_is_the_registry():
    assert registry.markdown() in README.read_text(), \
        "README's table of rules differs from pgkernels.defenses.registry.markdown(); paste the latter"


def test_applications_read_the_registry():
    """No application keeps its own list of rules or their bounds."""
    from pgkernels.fl import FLConfig
    from pgkernels.fl.cli import build_parser
    from pgkernels.integrations.flower import SecureRobustAggregation

    root = pathlib.Path(pgkernels.__file__).parent
    for rel in ("serving/service.py", "fl/config.py", "fl/plaintext.py", "fl/experiment.py",
                "integrations/flower.py", "integrations/flower_example.py", "defenses/validity.py"):
        src = (root / rel).read_text()
        for stale in ("AGGREGATORS", "EXTRA_INPUTS", "DEFENSE_PARAMS", "NEEDS_SERVER_UPDATE", "2 * f + 3",
                      "4 * f + 3", "2 * a.malicious + 3"):
            assert stale not in src, (rel, stale)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["fl"]
    assert next(a for a in sub._actions if a.dest == "defense").choices == list(registry.NAMES)
    assert FLConfig(defense="flame", clients=5, flame_num_malicious=2)  # 2f + 1 = 5
    with pytest.raises(ValueError, match="FLAME needs clients >= 2f \\+ 1"):
        FLConfig(defense="flame", clients=5, flame_num_malicious=3)
    # the Flower strategy waits for as many replies as the servers require (FLAME: 2f + 1)
    assert SecureRobustAggregation("flame", num_malicious_clients=2, min_train_nodes=1)._min_clients() == 5
    assert SecureRobustAggregation("bulyan", num_malicious_clients=1, min_train_nodes=1)._min_clients() == 7


def _bounds_in_mpc():
    """At n = min_clients(f) - 1 the MPC rule refuses, at n = min_clients(f) it runs."""
    import crypten
    import torch

    out = {}
    for name, f, kw in (("krum", 1, {}), ("multi_krum", 1, {"to_keep": 2}), ("bulyan", 1, {}), ("flame", 2, {})):
        need = registry.get(name).min_clients(f)
        for n in (need - 1, need):
            U = crypten.cryptensor(torch.arange(n * 2, dtype=torch.float64).view(n, 2) / 8)
            try:
                registry.get(name).mpc(U, num_malicious=f, **kw)
                out[(name, n)] = "ran"
            except ValueError as e:
                out[(name, n)] = f"refused: {e}"
    return out


def test_bounds_are_the_mpc_rules_own():
    out = pgkernels.launch(_bounds_in_mpc, world_size=2, timeout=600)[0]
    for (name, n), verdict in out.items():
        need = registry.get(name).min_clients(2 if name == "flame" else 1)
        assert verdict.startswith("ran" if n >= need else "refused"), (name, n, verdict)
