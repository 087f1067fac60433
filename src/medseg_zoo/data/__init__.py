"""Data sets: discovery of MSD / nnU-Net / paired folders, checks, fingerprints, splits and a synthetic BraTS-like
generator."""

from medseg_zoo.data.checks import CheckReport, DataCheckError, Problem, check_cases, check_dataset
from medseg_zoo.data.discovery import Case, DataSet, DataSetError, discover
from medseg_zoo.data.fingerprint import Fingerprint, fingerprint
from medseg_zoo.data.splits import k_folds, train_val_split
from medseg_zoo.data.synthetic import make_dataset

__all__ = [
    "Case",
    "CheckReport",
    "DataCheckError",
    "DataSet",
    "DataSetError",
    "Fingerprint",
    "Problem",
    "check_cases",
    "check_dataset",
    "discover",
    "fingerprint",
    "k_folds",
    "make_dataset",
    "train_val_split",
]
