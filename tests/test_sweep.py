"""Parametric sweeps: ``*`` substitution exactly as docs/hpc-pack.md section 4 describes it, instance
counts, validation and instance values."""

from __future__ import annotations

import pytest

from scheduler.core import sweep
from scheduler.errors import InvalidInput

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("template,val,expected", [
    # each maximal run of n asterisks -> the value zero-padded to at least n digits
    ("*", 7, "7"),
    ("****", 7, "0007"),
    ("***", 12345, "12345"),
    ("**", 7, "07"),
    ("**", 10, "10"),
    # ^ escapes: ^* is a literal *, ^^ is ^
    ("echo ^*** ***", 3, "echo *03 003"),
    ("^^", 3, "^"),
    ("^*", 3, "*"),
    ("^^*", 3, "^3"),
    ("^^^*", 3, "^*"),
    # ^ before any other character is kept, and a trailing ^ is kept
    ("a^b", 3, "a^b"),
    ("^a", 3, "^a"),
    ("x^", 3, "x^"),
    ("^", 3, "^"),
    ("*^", 3, "3^"),
    # a run of * at the end of the string is substituted
    ("echo *", 5, "echo 5"),
    ("file.***", 42, "file.042"),
    # several runs, each padded to its own width
    ("in_*.txt out_***.txt", 9, "in_9.txt out_009.txt"),
    ("*-*", 1, "1-1"),
    # no asterisk, empty
    ("echo hello", 3, "echo hello"),
    ("", 3, ""),
    (None, 3, None),
    # value 0 and large values
    ("***", 0, "000"),
    ("*", 1000000, "1000000"),
])
def test_substitute(template, val, expected):
    assert sweep.substitute(template, val) == expected


@pytest.mark.parametrize("start,end,step,n", [
    (1, 1, 1, 1),
    (1, 10, 1, 10),
    (1, 10, 3, 4),     # 1 4 7 10
    (1, 9, 3, 3),      # 1 4 7
    (0, 0, 1, 1),
    (5, 4, 1, 0),      # end < start
    (1, 10, 0, 0),     # step <= 0
    (1, 10, -1, 0),
    (-5, 5, 5, 3),     # -5 0 5
    (1, 1_000_000, 1, 1_000_000),
])
def test_count(start, end, step, n):
    assert sweep.count(start, end, step) == n


def test_count_matches_values_not_exceeding_end():
    for start, end, step in [(1, 10, 3), (2, 17, 4), (0, 100, 7), (-3, 3, 2)]:
        vals = list(range(start, end + 1, step))
        n = sweep.count(start, end, step)
        assert n == len(vals)
        assert [sweep.value(start, step, k) for k in range(1, n + 1)] == vals
        assert sweep.value(start, step, n) <= end


@pytest.mark.parametrize("start,end,step,n", [
    (1, 1, 1, 1), (1, 10, 3, 4), (1, 1_000_000, 1, 1_000_000), (0, 1_999_999, 2, 1_000_000),
])
def test_validate_ok(start, end, step, n):
    assert sweep.validate(start, end, step) == n


@pytest.mark.parametrize("start,end,step,needle", [
    (1, 10, 0, "increment"),
    (1, 10, -2, "increment"),
    (10, 1, 1, "the start value 10 is greater than end value 1"),
    (1, 1_000_001, 1, "1000000"),
    (0, 1_000_000, 1, "1000001"),
])
def test_validate_errors(start, end, step, needle):
    with pytest.raises(InvalidInput) as exc:
        sweep.validate(start, end, step)
    assert needle in str(exc.value)


def test_max_instances():
    assert sweep.MAX_INSTANCES == 1_000_000


@pytest.mark.parametrize("start,step,instance,val", [
    (1, 1, 1, 1), (1, 1, 5, 5), (10, 5, 1, 10), (10, 5, 3, 20), (0, 2, 4, 6), (-5, 5, 2, 0),
])
def test_value(start, step, instance, val):
    """The instance id is the step index (1..N), not the sweep value (docs/hpc-pack.md section 3)."""
    assert sweep.value(start, step, instance) == val
