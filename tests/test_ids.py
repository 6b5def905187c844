"""Task and job ids as HPC Pack writes them (docs/hpc-pack.md section 3)."""

from __future__ import annotations

import pytest

from scheduler.errors import HpcqError, InvalidId
from scheduler.core.ids import TaskId, parse_job_id

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,expected", [
    ("1.2", TaskId(1, 2, 0)),
    ("3.4.5", TaskId(3, 4, 5)),
    (" 7.1 ", TaskId(7, 1, 0)),
    ("95.4.12", TaskId(95, 4, 12)),
    ("10.20.30", TaskId(10, 20, 30)),
])
def test_parse_good(text, expected):
    tid = TaskId.parse(text)
    assert tid == expected
    assert (tid.job, tid.task, tid.instance) == (expected.job, expected.task, expected.instance)


@pytest.mark.parametrize("text", ["1.2", "3.4.5", "95.4.12", "123456.1.1000000"])
def test_str_round_trip(text):
    tid = TaskId.parse(text)
    assert str(tid) == text
    assert TaskId.parse(str(tid)) == tid


def test_str_strips_and_drops_zero_instance():
    assert str(TaskId.parse(" 7.1 ")) == "7.1"
    assert str(TaskId(7, 1)) == "7.1"
    assert str(TaskId(7, 1, 0)) == "7.1"


def test_parse_of_taskid_is_identity():
    tid = TaskId(2, 3, 4)
    assert TaskId.parse(tid) is tid


def test_master():
    assert TaskId.parse("3.4.5").master == TaskId(3, 4)
    assert str(TaskId.parse("3.4.5").master) == "3.4"
    assert TaskId.parse("3.4").master == TaskId(3, 4)


def test_equality_compares_all_fields_and_orders():
    assert TaskId(1, 2, 3) != TaskId(1, 2, 4)
    assert TaskId(1, 2) != TaskId(1, 2, 1)
    assert TaskId(1, 2) == TaskId(1, 2, 0)
    assert hash(TaskId(1, 2)) == hash(TaskId.parse("1.2"))
    assert sorted([TaskId(2, 1), TaskId(1, 10), TaskId(1, 2, 3), TaskId(1, 2)]) == [
        TaskId(1, 2), TaskId(1, 2, 3), TaskId(1, 10), TaskId(2, 1)]


@pytest.mark.parametrize("text", [
    "0.1", "1.0", "-1.2", "a.b", "1.2.3.4", "1", "", "1..2", "1.2.", "1.x",
    ".1.2", "1.2.0", "1 .2", "1.2 3", "1,2", None,
])
def test_parse_bad(text):
    with pytest.raises(InvalidId):
        TaskId.parse(text)


def test_invalid_id_is_an_hpcq_usage_error():
    with pytest.raises(HpcqError) as exc:
        TaskId.parse("x")
    assert exc.value.exit_code == 2
    assert "'x'" in str(exc.value)


@pytest.mark.parametrize("text,expected", [
    ("1", 1), ("42", 42), (" 7 ", 7), (3, 3), ("123456789", 123456789),
])
def test_parse_job_id_good(text, expected):
    assert parse_job_id(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "x", "1.2", "", " ", "1 2", 0, -3, True, None])
def test_parse_job_id_bad(text):
    with pytest.raises(InvalidId):
        parse_job_id(text)
