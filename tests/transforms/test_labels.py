import numpy as np
import pytest
import torch

from medseg_zoo.transforms import (
    LabelScheme,
    LabelsToRegionsd,
    RegionsToLabelsd,
    get_scheme,
    labels_to_regions,
    list_schemes,
    regions_to_labels,
    scheme_from_dataset_json,
)

REGION_SCHEMES = ["msd_task01", "brats2018", "brats2019", "brats2020", "brats2021", "brats2023", "monai_tutorial"]


@pytest.mark.parametrize(
    ("name", "label", "regions"),
    [
        # (scheme, one label value, its TC/WT/ET membership)
        ("msd_task01", 1, (0, 1, 0)),  # edema: whole tumour only
        ("msd_task01", 2, (1, 1, 0)),  # non-enhancing tumour: core
        ("msd_task01", 3, (1, 1, 1)),  # enhancing tumour
        ("brats2021", 1, (1, 1, 0)),  # NCR/NET: core
        ("brats2021", 2, (0, 1, 0)),  # edema
        ("brats2021", 4, (1, 1, 1)),  # enhancing tumour
        ("brats2023", 1, (1, 1, 0)),
        ("brats2023", 3, (1, 1, 1)),
        ("monai_tutorial", 2, (1, 1, 1)),  # the tutorial calls label 2 enhancing
        ("monai_tutorial", 3, (1, 1, 0)),
    ],
)
def test_region_membership(name, label, regions):
    out = labels_to_regions(np.array([[[label]]]), name)
    assert tuple(out[:, 0, 0, 0]) == regions


def test_monai_tutorial_differs_from_msd_task01_on_a_known_map():
    label_map = np.array([0, 1, 2, 3]).reshape(1, 1, 4)
    msd = labels_to_regions(label_map, "msd_task01")
    tutorial = labels_to_regions(label_map, "monai_tutorial")
    np.testing.assert_array_equal(msd[2].ravel(), [0, 0, 0, 1])  # ET = 3
    np.testing.assert_array_equal(tutorial[2].ravel(), [0, 0, 1, 0])  # ET = 2: wrong for MSD data
    np.testing.assert_array_equal(msd[:2], tutorial[:2])  # TC and WT agree


@pytest.mark.parametrize("name", REGION_SCHEMES)
@pytest.mark.parametrize("seed", range(5))
def test_round_trip_numpy_and_torch(name, seed):
    scheme = get_scheme(name)
    rng = np.random.default_rng(seed)
    label_map = rng.choice(sorted(scheme.labels), size=(6, 5, 4)).astype(np.uint8)
    regions = labels_to_regions(label_map, scheme)
    assert regions.shape == (3, 6, 5, 4) and regions.dtype == np.uint8
    np.testing.assert_array_equal(regions_to_labels(regions, scheme), label_map)
    t = torch.from_numpy(label_map)
    t_regions = labels_to_regions(t, scheme)
    assert isinstance(t_regions, torch.Tensor)
    torch.testing.assert_close(regions_to_labels(t_regions, scheme), t)


def test_inconsistent_predictions_take_the_innermost_region():
    # ET without TC or WT still decodes to enhancing tumour; WT alone to edema.
    regions = np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0]])[:, :, None, None]  # channels TC, WT, ET over 3 voxels
    assert regions_to_labels(regions, "brats2021").ravel().tolist() == [4, 2, 0]


def test_probabilities_are_thresholded_at_half():
    probs = np.array([[0.9], [0.95], [0.4]])  # TC, WT, not ET
    assert regions_to_labels(probs, "msd_task01").tolist() == [2]


def test_values_outside_the_scheme_are_named():
    with pytest.raises(
        ValueError, match=r"label values \[4\] are not in scheme 'msd_task01'.*values found: \[0, 1, 4\]"
    ):
        labels_to_regions(np.array([0, 1, 4]), "msd_task01")


def test_wrong_channel_count():
    with pytest.raises(ValueError, match=r"expected 3 channels \('TC', 'WT', 'ET'\) for scheme 'brats2021', got 2"):
        regions_to_labels(np.zeros((2, 4, 4)), "brats2021")


def test_unknown_scheme_lists_known_ones():
    with pytest.raises(KeyError, match="unknown label scheme 'brats2017'; known schemes: brats2018"):
        get_scheme("brats2017")
    assert set(REGION_SCHEMES) <= set(list_schemes())


@pytest.mark.parametrize(
    "labels",
    [
        {"0": "background", "1": "liver", "2": "tumour"},  # MSD dataset.json
        {"background": 0, "liver": 1, "tumour": 2},  # nnU-Net v2 dataset.json
    ],
)
def test_exclusive_scheme_from_dataset_json(labels):
    scheme = scheme_from_dataset_json({"labels": labels}, "Task03_Liver")
    assert scheme.exclusive and scheme.channels == ("background", "liver", "tumour")
    label_map = np.random.default_rng(0).integers(0, 3, size=(4, 4, 4))
    one_hot = labels_to_regions(label_map, scheme)
    assert one_hot.shape == (3, 4, 4, 4) and (one_hot.sum(0) == 1).all()
    np.testing.assert_array_equal(regions_to_labels(one_hot, scheme), label_map)


def test_region_labels_from_dataset_json_decode_as_they_encode():
    scheme = scheme_from_dataset_json({"labels": {"background": 0, "organ": [1, 2], "lesion": 2}}, "Dataset500")
    assert scheme.regions == {"organ": (1, 2), "lesion": (2,)} and scheme.labels == {
        0: "background",
        1: "organ",
        2: "lesion",
    }
    label_map = np.random.default_rng(0).integers(0, 3, size=(5, 4, 3))
    np.testing.assert_array_equal(regions_to_labels(labels_to_regions(label_map, scheme), scheme), label_map)
    with pytest.raises(ValueError, match="regions must be nested, each adding one label value"):
        scheme_from_dataset_json({"labels": {"background": 0, "a": [1, 2], "b": [2, 3]}}, "Dataset501")


def test_bad_dataset_json_labels():
    with pytest.raises(ValueError, match=r"Task09: dataset\.json has no 'labels' map"):
        scheme_from_dataset_json({}, "Task09")
    with pytest.raises(ValueError, match="must map integer values to names"):
        scheme_from_dataset_json({"labels": {"zero": "background"}}, "Task09")


def test_schemes_must_be_invertible():
    with pytest.raises(ValueError, match="regions must be nested, each adding one label"):
        LabelScheme("bad", "test", {0: "bg", 1: "a", 2: "b"}, {"A": (1,), "B": (2,)})
    with pytest.raises(ValueError, match="labels must include 0"):
        LabelScheme("bad", "test", {1: "a"})


def test_monai_dictionary_transforms():
    label_map = torch.tensor([0, 1, 2, 4]).reshape(1, 1, 2, 2)  # MONAI (1, D, H, W)
    data = LabelsToRegionsd("label", "brats2020")({"label": label_map, "image": 0})
    assert data["label"].shape == (3, 1, 2, 2) and data["image"] == 0
    back = RegionsToLabelsd("label", "brats2020")(data)
    torch.testing.assert_close(back["label"], label_map.to(torch.uint8))


@pytest.mark.parametrize(("name", "classes"), [("btcv", 14), ("totalsegmentator_v1", 105), ("msd_task09", 2)])
def test_exclusive_editions_round_trip(name, classes):
    scheme = get_scheme(name)
    assert scheme.exclusive and len(scheme.channels) == classes
    label_map = np.random.default_rng(1).integers(0, classes, size=(6, 5, 4)).astype(np.uint8)
    np.testing.assert_array_equal(regions_to_labels(labels_to_regions(label_map, scheme), scheme), label_map)
