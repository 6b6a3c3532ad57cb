"""A user's error raised while a DataLoader worker reads a sample reaches the command line
as it was raised: its own type and message (the file and the place), not torch's
"Caught DataError in DataLoader worker process 0. Original Traceback ..." wrapping."""

from __future__ import annotations

import pytest

from teacherkit.data.coco import load_coco
from teacherkit.data.inspect import inspect_dataset
from teacherkit.data.samples import SampleDataset
from teacherkit.errors import DataError, TeacherkitError
from teacherkit.training.dataset import EpochKeyed, EpochSampler
from teacherkit.training.loaders import RunLoaders


class _Ids:
    """A picklable preprocessor keeping each sample's image id."""

    def __call__(self, sample, train):
        return sample["image_id"]

    @staticmethod
    def collate(items):
        return items


class _Unpicklable(TeacherkitError):
    """An error whose constructor takes two arguments: pickle cannot rebuild it."""

    exit_code = 3

    def __init__(self, path, where):
        super().__init__(f"{path}: {where}")


class _Failing:
    """Sample 2 fails with ``error``; the others are their index."""

    preprocessor = _Ids()

    def __init__(self, error):
        self.error = error

    def __len__(self):
        return 4

    def __getitem__(self, index):
        if index == 2:
            raise self.error
        return index


def _first_error(dataset, workers, keyed=False):
    loaders = RunLoaders(num_workers=workers, seed=0, pin_memory=False)
    loader = loaders.get("train", dataset, 2, lambda: EpochSampler(len(dataset), seed=0, shuffle=False, keyed=keyed))
    try:
        with pytest.raises(BaseException) as caught:
            list(loader)
        return caught.value
    finally:
        loaders.close()


@pytest.mark.parametrize("workers", [0, 1])
def test_a_broken_image_raises_its_data_error_as_it_was(tiny_coco, workers):
    """The real sample dataset, read as the trainer reads it: an image turned to garbage
    after the run started."""
    path = tiny_coco(num_images=4, size=(48, 64), seed=5)
    coco = load_coco(path)
    dataset = SampleDataset(coco, path.parent, inspect_dataset(coco), _Ids(), learns_from="boxes", train=True,
                            seed=0)
    broken = path.parent / coco.images[2].file_name
    broken.write_bytes(b"not an image")
    error = _first_error(EpochKeyed(dataset), workers, keyed=True)
    assert isinstance(error, DataError), repr(error)
    message = str(error)
    assert broken.name in message and "Traceback" not in message and "worker process" not in message


@pytest.mark.parametrize("workers", [0, 1])
def test_errors_keep_their_type_message_and_exit_code(workers):
    error = _first_error(_Failing(DataError("data/train.json: $.images[2]: unreadable")), workers)
    assert type(error) is DataError and str(error) == "data/train.json: $.images[2]: unreadable"
    error = _first_error(_Failing(FileNotFoundError(2, "No such file or directory", "img/2.png")), workers)
    assert isinstance(error, FileNotFoundError) and error.filename == "img/2.png"


def test_an_error_that_does_not_pickle_keeps_its_message_and_exit_code():
    error = _first_error(_Failing(_Unpicklable("data/train.json", "$.images[2]")), 1)
    assert isinstance(error, TeacherkitError) and str(error) == "data/train.json: $.images[2]"
    assert error.exit_code == 3


def test_a_bug_in_a_worker_keeps_torchs_traceback():
    """Not a user's error: the worker's traceback is what a bug report needs."""
    error = _first_error(_Failing(ValueError("a bug")), 1)
    assert isinstance(error, ValueError) and "Traceback" in str(error)
