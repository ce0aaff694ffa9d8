"""Multilabel stratified K-fold assignment (iterative stratification, Sechidis et al. 2011)."""

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from runtime.errors import DataError
from runtime.labels import id_rows
from runtime.writeutil import atomic_write_text


def assign_folds(y, k=3, seed=0):
    """(N,) fold index per sample from an (N, C) multi-hot matrix."""
    if k < 2:
        raise ValueError("need at least 2 folds")
    if len(y) < k:
        raise ValueError(f"{len(y)} samples cannot make {k} folds")
    folds = np.full(len(y), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, val) in enumerate(splitter.split(np.zeros(len(y)), y)):
        folds[val] = fold
    return folds


def write_folds(path, ids, folds):
    atomic_write_text(path, "Id,fold\n" + "".join(f"{i},{int(f)}\n" for i, f in zip(ids, folds)))


def read_folds(path, ids):
    """Fold per Id, in the order of ``ids``, from an ``Id,fold`` file; every Id must be listed."""
    table = {}
    for where, sample_id, row in id_rows(path, ("fold",)):
        try:
            table[sample_id] = int(row["fold"])
        except (TypeError, ValueError):
            raise DataError(where, f"fold {row['fold']!r} is not a whole number") from None
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError(path, f"{len(missing)} Ids have no fold (first: {missing[0]})")
    return np.array([table[i] for i in ids], dtype=np.int64)
