"""Bad input is refused when a task or job is specified, before anything is written to Redis:
NUL bytes and text UTF-8 cannot encode in any string field, the kernel's limits on one
environment string, on a task's whole environment and on paths, empty or directory-only paths,
and an oversized command.  Unit tests on TaskSpec/JobSpec, then the Python API and the CLI
against a real Redis (no workers needed: nothing may get that far)."""

from __future__ import annotations

import pytest
import redis

from tests.support import hpcq
from scheduler import Scheduler
from scheduler.errors import InvalidInput
from scheduler.api.model import (MAX_ARG_STRLEN, MAX_COMMAND_BYTES, MAX_ENV_BYTES, NAME_MAX, PATH_MAX,
                             JobSpec, TaskSpec)


def refused(*args, **kwargs) -> str:
    """The message of the InvalidInput that TaskSpec(*args, **kwargs) raises."""
    with pytest.raises(InvalidInput) as exc:
        TaskSpec(*args, **kwargs)
    message = str(exc.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def abs_path(size: int) -> str:
    """An absolute path of ``size`` bytes: /d/d/.../fff."""
    path = "/" + "d/" * ((size - 2) // 2)
    return path + "f" * (size - len(path))


def rel_path(size: int) -> str:
    return abs_path(size + 1)[1:]


# -- NUL bytes and unencodable text ------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("kwargs,message", [
    (dict(command="echo a\x00b"), "the command contains a NUL byte"),
    (dict(command="echo", name="a\x00"), "the task name contains a NUL byte"),
    (dict(command="echo", env={"FOO": "a\x00b"}), "environment variable FOO: value contains a NUL byte"),
    (dict(command="echo", env={"F\x00O": "x"}), "environment variable name 'F\\x00O' contains a NUL byte"),
    (dict(command="echo", work_dir="/tmp/a\x00b"), "work_dir contains a NUL byte"),
    (dict(command="echo", stdin="in\x00"), "stdin contains a NUL byte"),
    (dict(command="echo", stdout="out\x00"), "stdout contains a NUL byte"),
    (dict(command="echo", stderr="\x00err"), "stderr contains a NUL byte"),
    (dict(command="echo", depends_on=["prep\x00"]), "depends_on entry 'prep\\x00' contains a NUL byte"),
    (dict(command="echo", depends_on="a,b\x00"), "depends_on entry 'b\\x00' contains a NUL byte"),
])
def test_nul_byte_refused_in_every_task_field(kwargs, message):
    assert refused(**kwargs) == message


@pytest.mark.unit
def test_nul_byte_refused_in_job_name():
    with pytest.raises(InvalidInput, match="^the job name contains a NUL byte$"):
        JobSpec(name="job\x00")
    assert JobSpec(name="job").name == "job"


@pytest.mark.unit
@pytest.mark.parametrize("field", ["command", "name", "work_dir", "stdin", "stdout", "stderr"])
def test_lone_surrogate_refused(field):
    """A non-UTF-8 byte in an argument reaches Python as a lone surrogate (U+DC80-U+DCFF); no
    Redis write or exec can carry it, so it is refused with a message, not a traceback."""
    kwargs = {"command": "echo"}
    kwargs[field] = kwargs.get(field, "") + "x\udcff"
    message = refused(**kwargs)
    assert "U+DCFF" in message and "UTF-8" in message


@pytest.mark.unit
def test_lone_surrogate_refused_in_env_depends_and_job_name():
    assert refused("echo", depends_on=["\udcff"]).startswith("depends_on entry '\\udcff' contains U+DCFF")
    assert refused("echo", env={"A": "\ud800"}).startswith("environment variable A: value contains U+D800")
    assert refused("echo", env={"\udcff": "x"}).startswith("environment variable name '\\udcff' contains U+DCFF")
    with pytest.raises(InvalidInput, match=r"U\+DCFF"):
        JobSpec(name="\udcff")


@pytest.mark.unit
def test_non_ascii_text_is_fine():
    t = TaskSpec("echo héllo ✓", name="é", env={"NOM": "café"}, work_dir="/tmp/ü", stdout="ö.txt")
    assert t.command == "echo héllo ✓" and t.env == {"NOM": "café"} and t.stdout == "/tmp/ü/ö.txt"


# -- environment ------------------------------------------------------------------------------

@pytest.mark.unit
def test_env_names():
    assert refused("echo", env={"": "x"}) == "an environment variable name is empty"
    assert "'='" in refused("echo", env={"A=B": "x"})
    assert TaskSpec("echo", env={1: 2, "B": None}).env == {"1": "2", "B": "None"}  # str() of both
    assert refused("echo", env="A=1").startswith("env must map variable names to values")


@pytest.mark.unit
def test_env_one_variable_limit():
    """``NAME=VALUE`` plus its NUL must fit MAX_ARG_STRLEN (131072): 131071 bytes is the most."""
    assert MAX_ARG_STRLEN == 131072
    assert TaskSpec("echo", env={"FOO": "x" * (131071 - 4)}).env["FOO"] == "x" * 131067
    assert refused("echo", env={"FOO": "x" * 199996}) == \
        "environment variable FOO is 200000 bytes; the kernel's limit for one variable is 131071"
    assert "131072 bytes" in refused("echo", env={"FOO": "x" * 131068})


@pytest.mark.unit
def test_env_one_variable_limit_counts_utf8_bytes():
    assert TaskSpec("echo", env={"E": "é" * 65534}).env  # 2 + 131068 bytes
    assert "131072 bytes" in refused("echo", env={"E": "é" * 65535})  # 2 + 131070 bytes


@pytest.mark.unit
def test_env_name_counts_toward_the_variable_limit():
    assert "is 131072 bytes" in refused("echo", env={"N" * 131071: ""})


@pytest.mark.unit
def test_env_total_limit():
    """The whole environment (NAME=VALUE and NUL, plus 8 bytes of pointer each) <= 1 MiB."""
    assert MAX_ENV_BYTES == 1 << 20
    value = "x" * 100_000
    env = {f"V{i:02d}": value for i in range(10)}  # 10 * (100004 + 9) = 1000130
    assert TaskSpec("echo", env=env).env == env
    env["V10"] = value
    message = refused("echo", env=env)
    assert message.startswith("the task's environment takes 1100143 bytes") and "1048576 (1 MiB)" in message


@pytest.mark.unit
def test_env_total_limit_exact_boundary():
    per = 131071 + 1 + 8  # the largest variable, its NUL, its pointer
    n = MAX_ENV_BYTES // per  # 7 of them, then one to reach the limit exactly
    env = {f"V{i}": "x" * (131071 - 3) for i in range(n)}
    rest = MAX_ENV_BYTES - n * per - 1 - 8 - len("LAST=")
    env["LAST"] = "y" * rest
    assert TaskSpec("echo", env=env).env["LAST"] == "y" * rest
    env["LAST"] += "y"
    assert refused("echo", env=env).startswith(f"the task's environment takes {MAX_ENV_BYTES + 1} bytes")


# -- the command --------------------------------------------------------------------------------

@pytest.mark.unit
def test_long_command_is_not_limited_by_max_arg_strlen():
    """The worker runs a command too long for one argument from a file: only 16 MiB is refused."""
    cmd = "echo " + "x" * 200_000
    assert TaskSpec(cmd).command == cmd


@pytest.mark.unit
def test_command_over_16_mib_refused():
    assert MAX_COMMAND_BYTES == 16 << 20
    assert len(TaskSpec("x" * MAX_COMMAND_BYTES).command) == MAX_COMMAND_BYTES
    assert refused("x" * (MAX_COMMAND_BYTES + 1)) == "the command is 16777217 bytes; the limit is 16777216 (16 MiB)"
    assert "16777218 bytes" in refused("é" * (MAX_COMMAND_BYTES // 2 + 1))


@pytest.mark.unit
def test_command_size_after_sweep_substitution():
    """``*`` grows to the widest sweep value: 1000000 makes one ``*`` 7 bytes."""
    base = "x" * (MAX_COMMAND_BYTES - 8) + " *"  # 16 MiB - 6 bytes as given
    assert TaskSpec(base, sweep=(1, 1_000_000)).sweep == (1, 1_000_000, 1)  # + 6 = the limit
    message = refused(base + "x", sweep=(1, 1_000_000))
    assert message == "the command is 16777217 bytes after sweep substitution of 1000000; the limit is 16777216 (16 MiB)"
    assert "after sweep substitution of -999999" in refused(base + "x", sweep=(-999999, -999000))
    assert TaskSpec(base + "x", sweep=(-99999, -99000))  # "-99999" is one byte narrower
    # escaped ``^*`` is a literal ``*`` and shrinks by one byte
    assert TaskSpec("x" * (MAX_COMMAND_BYTES - 2) + "^*", sweep=(1, 1_000_000)).command


# -- paths --------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("field", ["work_dir", "stdin", "stdout", "stderr"])
def test_empty_path_refused(field):
    assert refused("echo", **{field: ""}) == f"{field} is an empty path"


@pytest.mark.unit
@pytest.mark.parametrize("field", ["work_dir", "stdin", "stdout", "stderr"])
def test_path_max(field):
    assert PATH_MAX == 4096
    ok = abs_path(4095)
    assert len(ok) == 4095 and getattr(TaskSpec("echo", **{field: ok}), field) == ok
    assert refused("echo", **{field: ok + "d"}) == \
        f"{field} is 4096 bytes; the limit for a path is 4095 (PATH_MAX)"


@pytest.mark.unit
@pytest.mark.parametrize("field", ["work_dir", "stdin", "stdout", "stderr"])
def test_name_max(field):
    assert NAME_MAX == 255
    assert TaskSpec("echo", **{field: "/tmp/" + "a" * 255 + "/x"})
    message = refused("echo", **{field: "/tmp/" + "a" * 256 + "/x"})
    assert message.startswith(f"{field} has a component of 256 bytes (")
    assert message.endswith("the limit for one file name is 255 (NAME_MAX)")
    assert "component of 256 bytes" in refused("echo", **{field: "/tmp/" + "é" * 128})


@pytest.mark.unit
def test_relative_work_dir_checked_as_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    room = 4095 - len(str(tmp_path)) - 1
    ok = "d/" * ((room - 1) // 2) + "d" * (1 + (room - 1) % 2)
    assert len(TaskSpec("echo", work_dir=ok).work_dir) == 4095
    assert refused("echo", work_dir=ok + "d").startswith("work_dir is 4096 bytes")


@pytest.mark.unit
@pytest.mark.parametrize("field", ["stdin", "stdout", "stderr"])
def test_relative_file_checked_joined_to_work_dir(field):
    """The worker opens a relative stdin/stdout/stderr in the work dir."""
    wd = abs_path(2000)
    name = rel_path(2094)  # 2000 + 1 + 2094 = 4095
    assert TaskSpec("echo", work_dir=wd, **{field: name})
    assert refused("echo", work_dir=wd, **{field: name + "f"}) == \
        f"{field} (joined to work_dir) is 4096 bytes; the limit for a path is 4095 (PATH_MAX)"
    assert TaskSpec("echo", work_dir=wd, **{field: "/abs/" + name})  # absolute: not joined


@pytest.mark.unit
@pytest.mark.parametrize("field", ["stdin", "stdout", "stderr"])
@pytest.mark.parametrize("path", ["/tmp/", "out/", ".", "..", "a/.", "a/..", "/"])
def test_file_path_naming_a_directory_refused(field, path):
    """open() of such a path fails on every host (EISDIR)."""
    assert refused("echo", **{field: path}).endswith("names a directory, not a file")
    assert TaskSpec("echo", work_dir=path)  # a work dir is a directory


@pytest.mark.unit
def test_path_after_sweep_substitution():
    """``*`` in stdin/stdout/stderr widens to the sweep value's digits."""
    name = "/tmp/" + "a" * 254 + "*"
    assert TaskSpec("echo", stdout=name, sweep=(1, 9))
    message = refused("echo", stdout=name, sweep=(1, 10))
    assert message.startswith("stdout (after sweep substitution of 10) has a component of 256 bytes")
    assert "after sweep substitution of -5" in refused("echo", stderr=name, sweep=(-5, 1))
    assert TaskSpec("echo", stdout="/tmp/" + "a" * 250 + "*****", sweep=(1, 99999))  # padded width
    long = abs_path(4093) + "*"  # 4094 bytes, 4095 with a value of 2 digits
    assert TaskSpec("echo", stdin=long, sweep=(1, 99))
    assert refused("echo", stdin=long, sweep=(1, 100)) == \
        "stdin (after sweep substitution of 100) is 4096 bytes; the limit for a path is 4095 (PATH_MAX)"
    wd = abs_path(2000)
    rel = rel_path(2093) + "*"  # joined: 4095 bytes with a value of 1 digit
    assert TaskSpec("echo", work_dir=wd, stdout=rel, sweep=(1, 9))
    assert refused("echo", work_dir=wd, stdout=rel, sweep=(1, 10)).startswith(
        "stdout (joined to work_dir, after sweep substitution of 10) is 4096 bytes")


@pytest.mark.unit
def test_path_types():
    import pathlib
    t = TaskSpec("echo", work_dir=pathlib.Path("/tmp/w"), stdout=pathlib.Path("o.txt"), stdin=b"/tmp/i")
    assert (t.work_dir, t.stdout, t.stdin) == ("/tmp/w", "/tmp/w/o.txt", "/tmp/i")
    assert t.to_record()["stdout"] == "/tmp/w/o.txt"
    assert refused("echo", stdout=3) == "stdout must be a path, not 3"


@pytest.mark.unit
def test_work_dir_existence_not_checked():
    assert TaskSpec("echo", work_dir="/no/such/dir/anywhere").work_dir == "/no/such/dir/anywhere"


@pytest.mark.unit
def test_messages_are_one_line_and_short():
    message = refused("echo", env={"A\nB" * 100: "\x00"})
    assert message.startswith("environment variable 'A\\nBA\\nB") and "..." in message


# -- through the Python API and the CLI, against Redis -------------------------------------------

@pytest.fixture
def raw(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def snapshot(raw) -> dict:
    """Every key with its serialized value: equal snapshots mean nothing was written."""
    return {k: raw.dump(k) for k in raw.keys("*")}


@pytest.mark.store
def test_api_refuses_before_any_write(redis_url, raw):
    s = Scheduler.connect(redis_url)
    job = s.create_job(name="j")
    job.add_task(command="echo ok", name="ok")
    before = snapshot(raw)
    bad = [dict(command="echo \x00"), dict(command="echo", env={"FOO": "x\x00"}),
           dict(command="echo", work_dir="/tmp/\x00"), dict(command="echo", stdout=""),
           dict(command="echo", env={"FOO": "x" * 200_000}), dict(command="echo", stdin="in/"),
           dict(command="x" * (MAX_COMMAND_BYTES + 1)), dict(command="echo \udcff")]
    for kwargs in bad:
        with pytest.raises(InvalidInput):
            job.add_task(**kwargs)
    with pytest.raises(InvalidInput):
        s.create_job(name="j\x00")
    assert snapshot(raw) == before
    assert [t.name for t in job.get_task_list()] == ["ok"]


def assert_cli_refused(p, *words):
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for word in words:
        assert word in lines[0], p.stderr


@pytest.mark.cluster
@pytest.mark.parametrize("args,words", [
    (["--stdout", "", "--", "echo", "hi"], ["stdout is an empty path"]),
    (["--", "cat", "\udcff"], ["the command contains U+DCFF"]),  # the byte 0xff in argv
    (["--workdir", "/" + "d/" * 2048, "--", "echo"], ["work_dir is 4097 bytes", "4095 (PATH_MAX)"]),
    ([a for i in range(11) for a in ("--env", f"V{i:02d}={'x' * 100_000}")] + ["--", "echo"],
     ["the task's environment takes 1100143 bytes", "1048576 (1 MiB)"]),
])
def test_cli_job_add_refuses_before_any_write(redis_url, raw, args, words):
    job = Scheduler.connect(redis_url).create_job(name="j")
    before = snapshot(raw)
    assert_cli_refused(hpcq("job", "add", job.id, *args, redis_url=redis_url), *words)
    assert snapshot(raw) == before
    assert job.refresh().get_task_list() == []


@pytest.mark.cluster
def test_cli_one_shot_submit_refuses_before_any_write(redis_url, raw):
    """``job submit -- CMD`` creates no job when the task is refused."""
    before = snapshot(raw)
    p = hpcq("job", "submit", "--name", "j", "--stderr", "logs/", "--", "echo", "hi", redis_url=redis_url)
    assert_cli_refused(p, "stderr logs/ names a directory, not a file")
    assert snapshot(raw) == before
