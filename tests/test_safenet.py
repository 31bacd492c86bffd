"""SafeNet ensembles: MPC (2 and 3 parties) against the plaintext reference, ties,
filtering, the no-model-kept edge case, and bad inputs; the batched secure
inference (pgkernels.protocols.nn) it runs on."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from pgkernels.data import load
from pgkernels import models as FM
from pgkernels.defenses.safenet import EmptyEnsembleError, min_correct, safenet_reference
from pgkernels.protocols import nn as secure_nn
from pgkernels.train.safenet_mpc import safenet_mpc

C = 10


def _fit(model, X, y, epochs=30, lr=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 32):
            b = perm[i:i + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(X[b]), y[b]).backward()
            opt.step()
    return model.eval()


def _row_margins(models, X):
    """Per row, the smallest gap between a model's two largest logits (float64)."""
    with torch.no_grad():
        out = torch.stack([copy.deepcopy(m).double()(torch.from_numpy(X).double()) for m in models])
    top2 = out.topk(2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]).min(0).values.numpy()


@pytest.fixture(scope="module")
def digits_instance():
    """Six owners on digits (MLPs, a logistic regression, a CNN), one of them
    training on flipped labels, so its validation accuracy falls below 0.5."""
    ds = load("digits")
    X = ds.X_train.reshape(len(ds.X_train), -1).astype(np.float64)
    y = ds.y_train
    Xt = ds.X_test.reshape(len(ds.X_test), -1).astype(np.float64)
    yt = ds.y_test
    torch.manual_seed(0)
    archs = [lambda: FM.mlp(64, C, (16,)), lambda: FM.mlp(64, C, (16,)), lambda: FM.logreg(64, C),
             lambda: FM.cnn(8, C, channels=(4, 8), hidden=16), lambda: FM.mlp(64, C, (16,)),
             lambda: FM.mlp(64, C, (16,))]
    models = []
    for j, arch in enumerate(archs):
        part = slice(j * 150, (j + 1) * 150)
        yj = (C - 1 - y[part]) if j == 4 else y[part]       # owner 4 flips its labels
        models.append(_fit(arch().double(), X[part], yj, seed=j).float())
    # rows where every model's top-2 logit gap is clear of fixed-point error
    ok = _row_margins(models, Xt) > 1e-2
    Xt, yt = Xt[ok], yt[ok]
    X_val, y_val, X_q = Xt[:60], yt[:60], Xt[60:100]
    assert len(X_q) == 40
    return models, X_val, y_val, X_q


def _tie_instance():
    """Hand-made linear models on 4 classes whose votes tie: two copies of the
    identity (predict argmax x), two of a cyclic shift (predict argmax x - 1),
    and a constant model (always class 3) that the filter drops."""
    eye = torch.eye(4)
    shift = torch.roll(eye, -1, dims=0)          # logits_c = x_{c+1}: predicts argmax(x) - 1
    models = []
    for W, b in ((eye, torch.zeros(4)), (eye, torch.zeros(4)), (shift, torch.zeros(4)), (shift, torch.zeros(4)),
                 (torch.zeros(4, 4), torch.tensor([0.0, 0.0, 0.0, 1.0]))):
        m = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
        with torch.no_grad():
            m[1].weight.copy_(W)
            m[1].bias.copy_(b)
        models.append(m)
    k = np.arange(8) % 4
    X_val = np.eye(4)[k] * 2.0
    y_val = np.where(np.arange(8) < 4, k, (k - 1) % 4)  # identity and shift models: 4/8 right each
    X_q = np.eye(4)[np.array([0, 1, 2, 3, 2, 1])] * 3.0
    return models, X_val, y_val, X_q


def test_reference_semantics_ties_and_filter():
    models, X_val, y_val, X_q = _tie_instance()
    ref = safenet_reference(models, X_val, y_val, X_q, threshold=0.4)
    # constant model: right on the rows labelled 3 only (2 of 8) -> dropped
    assert ref["kept"] == [0, 1, 2, 3]
    np.testing.assert_allclose(ref["val_acc"], [0.5, 0.5, 0.5, 0.5, 0.25])
    # argmax x = k: identity votes k twice, shift votes k - 1 twice -> tie -> lower class
    want = [min(k, (k - 1) % 4) for k in (0, 1, 2, 3, 2, 1)]
    assert ref["pred"].tolist() == want == [0, 0, 1, 2, 1, 0]
    assert (ref["votes"].max(1) == 2).all()
    # a lower threshold keeps the constant model: its vote breaks the ties for class 3
    ref0 = safenet_reference(models, X_val, y_val, X_q, threshold=0.25)
    assert ref0["kept"] == [0, 1, 2, 3, 4]
    assert ref0["pred"].tolist() == [3, 0, 1, 3, 1, 0]  # rows 0 and 3: class 3 gets 3 votes
    # threshold rule on counts: 0.7 of 10 needs 7, not 8 (float 0.7 * 10 = 7.000000000000001)
    assert min_correct(0.7, 10) == 7 and min_correct(0.71, 10) == 8 and min_correct(0.0, 5) == 0
    assert min_correct(1.0, 8) == 8


def test_mpc_matches_reference_two_parties(digits_instance):
    models, X_val, y_val, X_q = digits_instance
    ref = safenet_reference(models, X_val, y_val, X_q, threshold=0.5)
    assert 4 not in ref["kept"] and len(ref["kept"]) == 5   # the label flipper is dropped
    out = safenet_mpc(models, X_val, y_val, X_q, threshold=0.5, world_size=2, reveal_selection=True, chunk=25)
    assert out["pred"].tolist() == ref["pred"].tolist()
    assert out["kept"] == ref["kept"] and out["fallback"] is False
    np.testing.assert_array_equal(out["val_acc"], ref["val_acc"])
    assert (ref["pred"] == _plain_vote(models, ref["kept"], X_q)).all()
    assert out["rounds"] > 0 and all(b > 0 for b in out["bytes"]) and out["seconds"] > 0


def _plain_vote(models, kept, X):
    with torch.no_grad():
        P = [models[j](torch.from_numpy(X).float()).argmax(1).numpy() for j in kept]
    votes = np.stack([(np.stack(P) == c).sum(0) for c in range(C)], axis=1)
    return votes.argmax(1)


def test_mpc_three_parties_ties_and_hidden_selection():
    models, X_val, y_val, X_q = _tie_instance()
    ref = safenet_reference(models, X_val, y_val, X_q, threshold=0.4)
    out = safenet_mpc(models, X_val, y_val, X_q, threshold=0.4, world_size=3)
    assert out["pred"].tolist() == ref["pred"].tolist() == [0, 0, 1, 2, 1, 0]
    # by default only the predictions are opened
    assert out["kept"] is None and out["val_acc"] is None and out["fallback"] is None
    assert len(out["bytes"]) == 3


def test_all_models_dropped():
    models, X_val, y_val, X_q = _tie_instance()
    with pytest.raises(EmptyEnsembleError, match="no model reaches"):
        safenet_reference(models, X_val, y_val, X_q, threshold=1.0)
    with pytest.raises(EmptyEnsembleError, match="no model reaches"):
        safenet_mpc(models, X_val, y_val, X_q, threshold=1.0)
    # fall back to the vote of all five models (obliviously in MPC)
    ref = safenet_reference(models, X_val, y_val, X_q, threshold=1.0, on_empty="all")
    assert ref["fallback"] and ref["kept"] == []
    assert ref["pred"].tolist() == safenet_reference(models, X_val, y_val, X_q, threshold=0.0)["pred"].tolist()
    out = safenet_mpc(models, X_val, y_val, X_q, threshold=1.0, on_empty="all", reveal_selection=True)
    assert out["pred"].tolist() == ref["pred"].tolist() == [3, 0, 1, 3, 1, 0]
    assert out["kept"] == [] and out["fallback"] is True
    np.testing.assert_allclose(out["val_acc"], [0.5, 0.5, 0.5, 0.5, 0.25])


@pytest.mark.parametrize("fn", [safenet_reference, safenet_mpc])
def test_bad_inputs(fn):
    models, X_val, y_val, X_q = _tie_instance()
    with pytest.raises(ValueError, match="models is empty"):
        fn([], X_val, y_val, X_q)
    with pytest.raises(TypeError, match="models"):
        fn(models[0], X_val, y_val, X_q)
    for t in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            fn(models, X_val, y_val, X_q, threshold=t)
    with pytest.raises(TypeError, match="threshold"):
        fn(models, X_val, y_val, X_q, threshold="0.5")
    with pytest.raises(ValueError, match="X_val has 4 features per row but X has 5"):
        fn(models, X_val, y_val, np.ones((3, 5)))
    with pytest.raises(ValueError, match="y_val"):
        fn(models, X_val, y_val[:-1], X_q)
    with pytest.raises(ValueError, match="y_val labels"):
        fn(models, X_val, y_val + 4, X_q)
    with pytest.raises(ValueError, match="does not accept"):
        fn(models, np.ones((8, 5)), y_val, np.ones((3, 5)))
    bad = X_q.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        fn(models, X_val, y_val, bad)
    with pytest.raises(ValueError, match="X_val contains NaN"):
        fn(models, np.where(X_val > 0, np.nan, X_val), y_val, X_q)
    with pytest.raises(ValueError, match="y_val contains NaN"):
        fn(models, X_val, np.full(len(y_val), np.nan), X_q)
    nan_model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    with torch.no_grad():
        nan_model[1].weight[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"models\[5\] has NaN"):
        fn(models + [nan_model], X_val, y_val, X_q)
    with pytest.raises(TypeError, match="Tanh is not supported"):
        fn([nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))], X_val, y_val, X_q)
    with pytest.raises(ValueError, match="different numbers of classes"):
        fn(models + [nn.Sequential(nn.Linear(4, 3))], X_val, y_val, X_q)
    with pytest.raises(ValueError, match="classes gives 3"):
        fn(models, X_val, y_val, X_q, classes=3)
    with pytest.raises(ValueError, match="on_empty"):
        fn(models, X_val, y_val, X_q, on_empty="skip")
    if fn is safenet_mpc:
        with pytest.raises(ValueError, match="world_size"):
            fn(models, X_val, y_val, X_q, world_size=1)


def test_mpc_parties_receive_only_their_shares(monkeypatch):
    """Models, validation data and queries reach each compute party only as its own shares."""
    from _cases import spy_launch

    from pgkernels.runtime import launch

    models, X_val, y_val, X_q = _tie_instance()
    weights = [p.detach().numpy() for m in models for p in m.parameters()]
    calls = spy_launch(monkeypatch, launch, [X_val, X_q, np.eye(C)[y_val]] + weights)
    ref = safenet_reference(models, X_val, y_val, X_q, threshold=0.4)
    out = safenet_mpc(models, X_val, y_val, X_q, threshold=0.4, world_size=3)
    assert len(calls) == 1 and out["pred"].tolist() == ref["pred"].tolist()


# -- the batched secure inference (pgkernels.protocols.nn) ------------------------------

def test_parse_model_layers_signature_and_checks():
    cnn = FM.cnn(8, C, channels=(4, 8), hidden=16)
    with pytest.raises(TypeError, match="Flatten is not supported"):
        secure_nn.parse_model(cnn, "cnn")                       # the lab's flatten must be named
    layers = secure_nn.parse_model(cnn, "cnn", flatten_types=(type(cnn[0]),))
    assert [layer.kind for layer in layers] == ["flatten", "unflatten", "conv", "relu", "maxpool", "conv", "relu",
                                                "maxpool", "flatten", "linear", "relu", "linear"]
    assert layers[1].hyper == (1, 8, 8) and layers[4].hyper == (2,) and layers[2].params[0] is cnn[2].weight
    mlp = secure_nn.parse_model(nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3), nn.ReLU(),
                                              nn.Identity(), nn.Linear(3, 2)))
    assert [layer.kind for layer in mlp] == ["flatten", "linear", "relu", "linear"]    # no-ops dropped
    same = secure_nn.parse_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    other = secure_nn.parse_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)))
    assert secure_nn.signature(mlp) == secure_nn.signature(same) != secure_nn.signature(other)
    for bad, match in ((nn.Linear(4, 4, bias=False), "without bias"), (nn.Flatten(0), "start_dim=1"),
                       (nn.Conv2d(1, 2, 3, dilation=2), "dilation"), (nn.MaxPool2d(2, stride=1), "stride"),
                       (nn.Sequential(nn.ReLU()), "no Linear or Conv2d"), ("model", "must be a torch.nn.Module")):
        with pytest.raises(TypeError, match=match):
            secure_nn.parse_model(bad if isinstance(bad, (str, nn.Sequential)) else nn.Sequential(bad, nn.Linear(4, 2)),
                                  "m")


def test_stack_params_batched_layouts_compute_every_models_logits():
    """The stacked layouts give each model's own logits in plaintext (float64):
    the first linear layer as one matmul, later ones batched."""
    torch.manual_seed(1)
    models = [nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).double() for _ in range(3)]
    group = [secure_nn.parse_model(m) for m in models]
    (_, (W1, b1), _, (W2, b2)) = secure_nn.stack_params(group)
    assert W1.shape == (6, 15) and b1.shape == (15,) and W2.shape == (3, 5, 3) and b2.shape == (3, 1, 3)
    x = torch.randn(4, 6, dtype=torch.float64)
    h = (x @ W1 + b1).reshape(4, 3, 5).permute(1, 0, 2).relu()
    logits = h @ W2 + b2                                                # (M, n, C)
    with torch.no_grad():
        want = torch.stack([m(x) for m in models])
    torch.testing.assert_close(logits, want)
