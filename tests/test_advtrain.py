"""Pooled training with and without Hayes & Ohrimenko's adversarial defense:
plaintext behaviour, MPC against plaintext, and input checks."""

import numpy as np
import pytest
import torch

import pgkernels  # noqa: F401  (before crypten)
from pgkernels.train.advtrain import build_models, train_local_models, train_plaintext
from pgkernels.train.mpc import train_mpc


def _trend_data(seed=0, parties=4, per_party=300, d=5):
    """Noisy labels from x0 for everyone; half of party 0's records also carry a
    distinctive trend (x2 near 4, always label 1), like a contamination."""
    rng = np.random.RandomState(seed)
    X = rng.randn(parties * per_party, d).astype(np.float32)
    party = np.repeat(np.arange(parties), per_party)
    y = (rng.rand(len(X)) < 1 / (1 + np.exp(-1.5 * X[:, 0]))).astype(np.int64)
    trend = np.flatnonzero(party == 0)[: per_party // 2]
    X[trend, 2] = 4.0 + 0.3 * rng.randn(len(trend))
    y[trend] = 1
    return X, y, party, trend


def _membership_inference(f, X, party):
    """Held-out accuracy of a logistic-regression attack predicting the party from f's log-probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    with torch.no_grad():
        logp = torch.log_softmax(f(torch.from_numpy(X)), 1).numpy()
    return float(cross_val_score(LogisticRegression(max_iter=1000), logp, party, cv=5).mean())


def test_advtrain_hides_the_distinctive_party():
    X, y, party, trend = _trend_data()
    hp = dict(hidden=(16,), g_hidden=(16,), epochs=30, batch_size=32, lr=0.1, g_lr=0.5, progress=False)
    f_none, st_none = train_plaintext(X, y, party, 4, ["a", "b"], defense="none", **hp)
    f_adv, st_adv = train_plaintext(X, y, party, 4, ["a", "b"], defense="advtrain", c=10.0, **hp)
    mi_none = _membership_inference(f_none, X, party)
    mi_adv = _membership_inference(f_adv, X, party)
    # chance is 1/4; the undefended model's outputs give party 0's trend away
    assert mi_none > 0.33
    assert mi_adv < 0.30 and mi_adv < mi_none - 0.06
    with torch.no_grad():
        pred_none = f_none(torch.from_numpy(X)).argmax(1).numpy()
        pred_adv = f_adv(torch.from_numpy(X)).argmax(1).numpy()
    # the trend itself is learnt less; the other parties' task about as well
    assert pred_none[trend].mean() == 1.0
    assert pred_adv[trend].mean() < 0.8
    others = party != 0
    assert (pred_adv == y)[others].mean() > (pred_none == y)[others].mean() - 0.03
    # g could tell the parties apart no better than chance by the end
    assert st_adv["epochs"][-1]["g_accuracy"] < 0.3
    assert set(st_adv["epochs"][0]) == {"loss_f", "loss_g", "g_accuracy"}
    assert set(st_none["epochs"][0]) == {"loss_f"}
    assert st_none["epochs"][-1]["loss_f"] < st_none["epochs"][0]["loss_f"]


def test_plaintext_is_deterministic_and_seeded():
    X, y, party, _ = _trend_data(per_party=40)
    kw = dict(defense="advtrain", hidden=(8,), g_hidden=(4,), epochs=2, batch_size=16, progress=False)
    a, _ = train_plaintext(X, y, party, 4, 2, seed=3, **kw)
    b, _ = train_plaintext(X, y, party, 4, 2, seed=3, **kw)
    c, _ = train_plaintext(X, y, party, 4, 2, seed=4, **kw)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_local_models_train_on_their_own_records_only():
    from types import SimpleNamespace

    X, y, party, _ = _trend_data(parties=3, per_party=50)
    data = SimpleNamespace(X=X, y=y, party=party, num_parties=3, classes=["a", "b"])
    kw = dict(hidden=(8,), epochs=2, batch_size=16, lr=0.1)
    models = train_local_models(data, seed=5, progress=False, defense="advtrain", c=3.0, **kw)
    assert len(models) == 3
    for p, m in enumerate(models):
        own = party == p
        want, _ = train_plaintext(X[own], y[own], np.zeros(own.sum(), np.int64), 1, 2, seed=5 + p,
                                  progress=False, **kw)
        for pa, pb in zip(m.parameters(), want.parameters()):
            assert torch.equal(pa, pb)


# --- MPC against plaintext --------------------------------------------------

def _tiny():
    rng = np.random.RandomState(1)
    X = rng.randn(40, 5).astype(np.float32)
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    party = np.arange(40) % 3
    return X, y, party


def _max_diff(a, b):
    return max((pa - pb).abs().max().item() for pa, pb in zip(a.state_dict().values(), b.state_dict().values()))


# the uniform variant differs from onehot only in the public target and sign: 2 parties cover it
@pytest.mark.parametrize("world_size,defense,variant", [
    (2, "none", "onehot"), (2, "advtrain", "onehot"), (2, "advtrain", "uniform"),
    (3, "none", "onehot"), (3, "advtrain", "onehot")])
def test_mpc_matches_plaintext(world_size, defense, variant):
    X, y, party = _tiny()
    kw = dict(defense=defense, variant=variant, c=10.0, hidden=(8,), g_hidden=(6,), epochs=1, batch_size=16,
              lr=0.3, momentum=0.5, seed=2, progress=False)
    ref, _ = train_plaintext(X, y, party, 3, ["a", "b"], **kw)
    got, stats = train_mpc(X, y, party, 3, ["a", "b"], world_size=world_size, **kw)
    init, _ = build_models(5, 2, 3, (8,), (6,), False, 2, defense)
    moved = _max_diff(ref, init)
    assert moved > 0.05  # training changed the weights by far more than the tolerance below
    # fixed point (16 fractional bits) and CrypTen's exp approximation
    assert _max_diff(ref, got) < 2e-3
    with torch.no_grad():
        assert torch.allclose(ref(torch.from_numpy(X)), got(torch.from_numpy(X)), atol=5e-3)
    if defense == "advtrain":
        # the adversary's term moves f (same init and batches as "none"), and MPC follows it
        plain, _ = train_plaintext(X, y, party, 3, ["a", "b"], **dict(kw, defense="none"))
        effect = _max_diff(ref, plain)
        assert effect > 0.01
        assert _max_diff(ref, got) < 0.05 * effect
    assert stats["world_size"] == world_size and stats["batches"] == 3
    assert len(stats["bytes"]) == world_size and all(b > 0 for b in stats["bytes"])
    assert stats["rounds"] > 0 and stats["seconds"] > 0
    # honest gradients here are far below the threshold: MPC zeroed none, as plaintext
    assert stats["grad_entries_zeroed"]["f"] == 0 and stats["grad_entries"]["f"] > 0
    if defense == "advtrain":
        assert stats["grad_entries_zeroed"]["g"] == 0 and stats["grad_entries"]["g"] > 0
    else:
        assert stats["grad_entries_zeroed"]["g"] is None


def _clip_session():
    import crypten

    from pgkernels.train import mpc

    state = {"1.weight": torch.zeros(2, 3), "1.bias": torch.zeros(2)}
    module, _ = mpc._to_crypten(state)
    module.encrypt(src=0)
    module.train()
    opt = crypten.optim.SGD(module.parameters(), lr=1.0)
    lin = module._modules["0"]
    zeroed = mpc._ZeroedCount()
    for _ in range(2):  # the same gradients twice: the counts add up
        # a truncation failure shows up as an entry near +-2^32; honest ones are small
        lin.weight.grad = crypten.cryptensor(torch.tensor([[2.0 ** 32, -3.0, 99.0], [-2.0 ** 31, 0.5, -150.0]]))
        lin.bias.grad = crypten.cryptensor(torch.tensor([-1.25, 7.0]))
        mpc._clip_and_step(module, opt, zeroed)
    return pgkernels.decode(lin.weight), pgkernels.decode(lin.bias), zeroed.open(), zeroed.checked


@pytest.mark.parametrize("world_size", [2, 3])
def test_mpc_step_drops_corrupted_gradient_entries(world_size):
    weight, bias, zeroed, checked = pgkernels.launch(_clip_session, world_size=world_size)[0]
    assert torch.allclose(weight, torch.tensor([[0.0, 6.0, -198.0], [0.0, -1.0, 0.0]], dtype=torch.float64))
    assert torch.allclose(bias, torch.tensor([2.5, -14.0], dtype=torch.float64))
    assert (zeroed, checked) == (6, 16)  # 3 of 8 entries are >= 100 in magnitude, twice


# --- input checks -----------------------------------------------------------

@pytest.mark.parametrize("trainer", [train_plaintext, train_mpc], ids=["plaintext", "mpc"])
@pytest.mark.parametrize("change,arg", [
    (dict(c=-1.0), "c"),
    (dict(c=float("nan")), "c"),
    (dict(variant="both"), "variant"),
    (dict(defense="krum"), "defense"),
    (dict(party=np.array([0, 1, 2, 3] * 5)), "party"),
    (dict(party=np.array([0, -1] * 10)), "party"),
    (dict(y=np.array([0, 2] * 10)), "y"),
    (dict(X=np.full((20, 3), np.nan, dtype=np.float32)), "X"),
    (dict(X=np.ones((19, 3), dtype=np.float32)), "y"),
    (dict(num_parties=0), "num_parties"),
    (dict(epochs=-1), "epochs"),
    (dict(batch_size=0), "batch_size"),
    (dict(lr=0.0), "lr"),
])
def test_bad_input(trainer, change, arg):
    args = dict(X=np.ones((20, 3), dtype=np.float32), y=np.array([0, 1] * 10), party=np.array([0, 1] * 10),
                num_parties=3, classes=["a", "b"], defense="advtrain", progress=False)
    args.update(change)
    with pytest.raises(ValueError, match=arg):
        trainer(**args)


def test_advtrain_needs_two_parties_and_mpc_two_servers():
    X, y = np.ones((4, 2), np.float32), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="num_parties"):
        train_plaintext(X, y, np.zeros(4, np.int64), 1, 2, defense="advtrain", progress=False)
    with pytest.raises(ValueError, match="world_size"):
        train_mpc(X, y, np.zeros(4, np.int64), 1, 2, world_size=1, progress=False)
    with pytest.raises(TypeError, match="party"):
        train_plaintext(X, y, np.array(["a"] * 4), 2, 2, progress=False)


def test_mpc_parties_receive_only_their_shares(monkeypatch):
    """The records, labels and owner ids reach the compute parties only as one
    share each (party 0 a masked array, the others AES keys), never in the clear."""
    import pgkernels.runtime.launch as launch_mod
    from _cases import spy_launch

    X, y, party = _tiny()
    calls = spy_launch(monkeypatch, launch_mod, [X, X[5:], np.eye(2)[y]])
    kw = dict(defense="advtrain", c=1.0, hidden=(4,), g_hidden=(4,), epochs=1, batch_size=32, seed=1,
              progress=False)
    got, _ = train_mpc(X, y, party, 3, 2, world_size=2, **kw)
    ref, _ = train_plaintext(X, y, party, 3, 2, **kw)
    assert calls == [[3, 3]]
    assert _max_diff(ref, got) < 2e-3
