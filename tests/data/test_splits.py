import pytest

from medseg_zoo.data import k_folds, train_val_split

ITEMS = [f"case_{i}" for i in range(10)]


def test_split_is_deterministic_and_disjoint():
    train, val = train_val_split(ITEMS, 0.2, seed=1)
    assert (train, val) == train_val_split(ITEMS, 0.2, seed=1)
    assert len(val) == 2 and set(train) | set(val) == set(ITEMS) and not set(train) & set(val)
    assert train_val_split(ITEMS, 0.2, seed=2) != (train, val)


def test_no_validation_keeps_every_item_for_training():
    train, val = train_val_split(ITEMS, 0.0, seed=1)
    assert val == [] and sorted(train) == sorted(ITEMS) and train == train_val_split(ITEMS, 0, seed=1)[0]


def test_k_folds_validate_each_item_once():
    folds = k_folds(ITEMS, k=3, seed=0)
    assert [len(v) for _, v in folds] == [4, 3, 3]
    assert sorted(i for _, v in folds for i in v) == sorted(ITEMS)
    for train, val in folds:
        assert set(train) | set(val) == set(ITEMS) and not set(train) & set(val)
    assert folds == k_folds(ITEMS, k=3, seed=0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: train_val_split(ITEMS, 1.5), r"val_fraction must be at least 0 and below 1 \(0: no validation"),
        (lambda: train_val_split(ITEMS, -0.1), r"at least 0 and below 1 .*got -0.1"),
        (lambda: train_val_split(ITEMS[:2], 0.1), r"cannot split 2 item\(s\) with val_fraction=0.1"),
        (lambda: k_folds(ITEMS, k=11), r"k must be between 2 and the number of items \(10\), got 11"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
