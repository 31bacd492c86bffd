"""Small files in the real datasets' formats, so that the loaders and the
experiments on them are tested in a clone without ../shared/datasets.

* :func:`write_adult` -- ``adult/adult.data`` and ``adult/adult.test`` as UCI
  ships them (comma + space separated, ``?`` for missing values, the test
  file's first line a comment and its labels ending in ``.``);
* :func:`write_credit` -- ``credit_default/UCI_Credit_Card.csv`` (quoted
  header, ID first, SEX / EDUCATION / MARRIAGE as integer codes, the label
  ``default.payment.next.month`` last).

The rows are random but seeded; the tests state the property they check
on these rows (e.g. which records carry an attribute pattern).
"""

import numpy as np

ADULT_VALUES = {
    "workclass": ["Private", "Self-emp-not-inc", "State-gov"],
    "education": ["HS-grad", "Bachelors", "Masters", "11th"],
    "marital-status": ["Never-married", "Married-civ-spouse", "Divorced"],
    "occupation": ["Other-service", "Sales", "Exec-managerial", "Handlers-cleaners"],
    "relationship": ["Husband", "Not-in-family", "Own-child"],
    "race": ["White", "Black", "Asian-Pac-Islander"],
    "sex": ["Male", "Female"],
    "native-country": ["United-States", "Mexico"],
}
EDUCATION_NUM = {"HS-grad": 9, "Bachelors": 13, "Masters": 14, "11th": 7}


def adult_rows(n, seed, test=False):
    """``n`` Adult lines; every 10th row has a missing workclass (``?``), which the loader drops."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        v = {k: vals[rng.integers(len(vals))] for k, vals in ADULT_VALUES.items()}
        if i % 10 == 9:
            v["workclass"] = "?"
        rich = v["education"] in ("Bachelors", "Masters") and rng.random() < 0.95
        income = (">50K" if rich else "<=50K") + ("." if test else "")
        lines.append(", ".join(str(x) for x in (
            int(rng.integers(18, 70)), v["workclass"], int(rng.integers(20000, 400000)), v["education"],
            EDUCATION_NUM[v["education"]], v["marital-status"], v["occupation"], v["relationship"], v["race"],
            v["sex"], int(rng.integers(0, 2) * rng.integers(0, 5000)), 0, int(rng.integers(20, 60)),
            v["native-country"], income)))
    return lines


def write_adult(root, n_train=120, n_test=60, seed=0):
    """``root/adult/adult.data`` and ``adult.test``; returns the two paths."""
    d = root / "adult"
    d.mkdir(parents=True, exist_ok=True)
    tr, te = d / "adult.data", d / "adult.test"
    tr.write_text("\n".join(adult_rows(n_train, seed)) + "\n")
    te.write_text("|1x3 Cross validator\n" + "\n".join(adult_rows(n_test, seed + 1, test=True)) + "\n")
    return tr, te


CREDIT_COLUMNS = (["ID", "LIMIT_BAL", "SEX", "EDUCATION", "MARRIAGE", "AGE"]
                  + ["PAY_0"] + [f"PAY_{k}" for k in range(2, 7)] + [f"BILL_AMT{k}" for k in range(1, 7)]
                  + [f"PAY_AMT{k}" for k in range(1, 7)] + ["default.payment.next.month"])


def credit_rows(n, seed):
    """``n`` rows (lists of ints) of UCI_Credit_Card.csv: SEX in {1, 2},
    EDUCATION in {1, 2, 3, 4}, MARRIAGE in {1, 2, 3}; the label depends on
    PAY_0 (late payment) so that a model has something to learn."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        pay = rng.integers(-2, 4, 6)
        bills = rng.integers(0, 100000, 6)
        paid = rng.integers(0, 10000, 6)
        default = int(pay[0] >= 2 or rng.random() < 0.1)
        rows.append([i + 1, int(rng.integers(1, 50)) * 10000, int(rng.integers(1, 3)), int(rng.integers(1, 5)),
                     int(rng.integers(1, 4)), int(rng.integers(21, 70)), *pay.tolist(), *bills.tolist(),
                     *paid.tolist(), default])
    return rows


def write_credit(root, n=300, seed=0):
    """``root/credit_default/UCI_Credit_Card.csv``; returns (path, rows)."""
    d = root / "credit_default"
    d.mkdir(parents=True, exist_ok=True)
    rows = credit_rows(n, seed)
    path = d / "UCI_Credit_Card.csv"
    header = ",".join(f'"{c}"' for c in CREDIT_COLUMNS)
    path.write_text(header + "\n" + "\n".join(",".join(str(x) for x in r) for r in rows) + "\n")
    return path, rows
