import gzip
import threading

import numpy as np
import pytest

from jaxdl import data
from jaxdl.data import mnist
from jaxdl.errors import UsageError


def test_mnist_idx_files_load_with_standard_sizes_and_order(mnist_available):
    train, test = mnist.load("train"), mnist.load("test")
    assert len(train) == 60_000 and len(test) == 10_000
    first = train.take(np.arange(3))
    assert first["inputs"].shape == (3, 28, 28, 1) and first["inputs"].dtype == np.uint8
    assert first["targets"].tolist() == [5, 0, 4]  # MNIST's original order
    assert test.take(np.arange(1))["targets"].tolist() == [7]
    assert np.bincount(test.arrays["targets"], minlength=10).sum() == 10_000


def test_to_float_scales_pixels_to_unit_interval(mnist_available):
    batch = mnist.to_float(mnist.load("test").take(np.arange(64)))
    assert batch["inputs"].dtype == np.float32
    assert batch["inputs"].min() == 0.0 and batch["inputs"].max() == 1.0


def test_damaged_idx_files_are_rejected_with_a_clear_error(tmp_path):
    bad_magic = tmp_path / "bad.gz"
    with gzip.open(bad_magic, "wb") as f:
        f.write(b"\x00\x00\x0d\x01\x00\x00\x00\x02\x01\x02")
    with pytest.raises(UsageError, match="bad magic"):
        mnist.read_idx(bad_magic)
    truncated = tmp_path / "short.gz"
    with gzip.open(truncated, "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")  # promises 5 bytes, holds 2
    with pytest.raises(UsageError, match="damaged"):
        mnist.read_idx(truncated)


def _numbers(n: int) -> data.Dataset:
    source = data.ArraySource({"inputs": np.arange(n, dtype=np.float32)[:, None], "targets": np.arange(n)})
    return data.Dataset(train=source, test=source)


def _take(iterator, count):
    return [next(iterator)["targets"].tolist() for _ in range(count)]


def test_train_batches_are_seeded_reshuffled_each_epoch_and_drop_nothing():
    dataset = _numbers(12)
    batches = _take(data.train_batches(dataset, dataset.train, 4, seed=7, process_index=0, process_count=1), 6)
    again = _take(data.train_batches(dataset, dataset.train, 4, seed=7, process_index=0, process_count=1), 6)
    other_seed = _take(data.train_batches(dataset, dataset.train, 4, seed=8, process_index=0, process_count=1), 6)
    assert batches == again and batches != other_seed
    epoch1, epoch2 = np.concatenate(batches[:3]).tolist(), np.concatenate(batches[3:]).tolist()
    assert sorted(epoch1) == sorted(epoch2) == list(range(12))  # every example once per epoch
    assert epoch1 != epoch2  # the shuffle is re-drawn


def test_batches_straddling_an_epoch_end_take_the_rest_of_one_permutation_and_the_start_of_the_next():
    dataset = _numbers(10)
    stream = np.concatenate(_take(data.train_batches(dataset, dataset.train, 3, 5, 0, 1), 10)).tolist()
    epochs = [stream[i : i + 10] for i in (0, 10, 20)]
    assert all(sorted(e) == list(range(10)) for e in epochs)  # every example once per epoch, none dropped
    assert epochs == [data.epoch_permutation(5, e, 10).tolist() for e in range(3)]
    assert len({tuple(e) for e in epochs}) == 3  # re-drawn every epoch


def test_train_iterator_resumes_from_its_saved_position():
    dataset = _numbers(10)
    iterator = data.train_batches(dataset, dataset.train, 3, seed=1, process_index=0, process_count=1)
    _take(iterator, 4)
    position = iterator.get_state()
    expected = _take(iterator, 5)
    resumed = data.train_batches(dataset, dataset.train, 3, seed=1, process_index=0, process_count=1)
    resumed.set_state(position)
    assert _take(resumed, 5) == expected


def test_without_prefetching_no_thread_starts_and_the_batches_and_positions_are_the_same():
    dataset = _numbers(10)
    threads = {t.ident for t in threading.enumerate()}
    unthreaded = data.train_batches(dataset, dataset.train, 3, seed=1, process_index=0, process_count=1, prefetch=0)
    expected = _take(unthreaded, 4)
    assert {t.ident for t in threading.enumerate()} <= threads  # none new (one from an earlier test may end)
    threaded = data.train_batches(dataset, dataset.train, 3, seed=1, process_index=0, process_count=1, prefetch=4)
    assert _take(threaded, 4) == expected
    # A position saved with one setting resumes with the other (a GPU run's checkpoint continued on a CPU).
    unthreaded.set_state(threaded.get_state())
    assert _take(unthreaded, 3) == _take(threaded, 3)


def test_processes_split_each_global_batch_between_them():
    dataset = _numbers(16)
    whole = _take(data.train_batches(dataset, dataset.train, 8, seed=3, process_index=0, process_count=1), 4)
    halves = [
        _take(data.train_batches(dataset, dataset.train, 8, seed=3, process_index=p, process_count=2), 4)
        for p in range(2)
    ]
    assert [a + b for a, b in zip(*halves, strict=True)] == whole


def test_eval_batches_cover_every_example_once_with_the_padding_masked():
    dataset = _numbers(10)
    batches = list(data.eval_batches(dataset, dataset.test, 4, process_index=0, process_count=1))
    assert [len(b["targets"]) for b in batches] == [4, 4, 4]
    counted = np.concatenate([b["targets"][b["mask"]] for b in batches])
    assert counted.tolist() == list(range(10))
    two_processes = [list(data.eval_batches(dataset, dataset.test, 4, p, 2)) for p in range(2)]
    counted = np.concatenate([b["targets"][b["mask"]] for part in two_processes for b in part])
    assert sorted(counted.tolist()) == list(range(10))


def test_head_and_hold_out():
    source = data.ArraySource({"x": np.arange(100)})
    assert len(data.head(source, 10)) == 10 and data.head(source, 0) is source
    rest, held = data.hold_out(source, 20, seed=0)
    assert len(rest) == 80 and len(held) == 20
    assert sorted(np.concatenate([rest.arrays["x"], held.arrays["x"]]).tolist()) == list(range(100))
    assert data.hold_out(source, 20, seed=0)[1].arrays["x"].tolist() == held.arrays["x"].tolist()
