"""The Dockerfile, without a Docker engine: static checks, then its build steps run for real outside Docker.

The build test copies exactly what the Dockerfile's build stage COPYs (after .dockerignore) into a fresh
directory, runs `pip wheel` there as the build stage does (isolated build, so with the setuptools Docker would
get), installs the wheel into a fresh venv from a local wheel directory with `--no-index` as the runtime stage
does, and runs the console script named by ENTRYPOINT.  Dependencies are not rebuilt (that would download the
world): the fresh venv sees this environment's site-packages through a .pth file, after its own, so `exporter`
itself comes from the wheel, which the test checks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from exporter import __version__
from exporter.config import DEFAULT_LISTEN

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
KUBE = REPO / "deploy" / "kubernetes"
UNIT = REPO / "deploy" / "systemd" / "flujo-state-exporter.service"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), f"{self.keyword}: not exec form"
        return value


@cache
def instructions() -> tuple[Instruction, ...]:
    """Dockerfile instructions with continuation lines joined and comments dropped (parser directives too)."""
    found = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        found.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "Dockerfile ends with a continuation"
    return tuple(found)


def stages() -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args() -> dict[str, str]:
    args = {}
    for instruction in instructions():
        if instruction.keyword == "FROM":
            break
        if instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            args[name] = default
    return args


def image_of(from_instruction: Instruction) -> str:
    words = from_instruction.args.split()
    image = words[0]
    for name, value in global_args().items():
        image = image.replace(f"${{{name}}}", value).replace(f"${name}", value)
    return image


def final(keyword: str) -> list[Instruction]:
    return [i for i in stages()[-1] if i.keyword == keyword]


# ---- static checks ----


def test_multi_stage_from_a_pinned_python_3_11_slim() -> None:
    froms = [stage[0] for stage in stages()]
    assert len(froms) == 2
    assert froms[0].args.split()[-2:] == ["AS", "build"]
    for instruction in froms:
        image = image_of(instruction)
        assert "$" not in image, f"unresolved variable in {image}"
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", image), image


def test_runs_as_a_numeric_non_root_user() -> None:
    [user] = final("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric uid (runAsNonRoot can only check those)"
    assert gid.isdigit() and int(gid) != 0


def test_no_remote_add_and_copies_only_local_files() -> None:
    for instruction in instructions():
        assert instruction.keyword != "ADD", "use COPY (ADD fetches URLs and unpacks archives)"
        if instruction.keyword == "COPY":
            assert "://" not in instruction.args


def test_exposes_the_default_port() -> None:
    [expose] = final("EXPOSE")
    assert expose.args == DEFAULT_LISTEN.rsplit(":", 1)[1]


def test_entrypoint_is_the_console_script_and_cmd_runs_the_deployed_config() -> None:
    [entrypoint] = final("ENTRYPOINT")
    [cmd] = final("CMD")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint.exec_form() == ["state-exporter"]
    assert "state-exporter" in scripts
    argv = cmd.exec_form()
    assert argv[:2] == ["run", "--config"]
    # The same config path as the systemd unit and the Kubernetes sidecar.
    deployment = yaml.safe_load((KUBE / "deployment.yaml").read_text())
    [sidecar] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "state-exporter"]
    assert sidecar["args"] == argv
    exec_start = next(line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart="))
    assert shlex.split(exec_start.removeprefix("ExecStart="))[1:4] == argv


def test_state_directory_matches_the_kubernetes_mount() -> None:
    env = " ".join(i.args for i in final("ENV"))
    state_dir = re.search(r"STATE_DIRECTORY=(\S+)", env)
    assert state_dir
    [workdir] = final("WORKDIR")
    assert workdir.args == state_dir.group(1)
    deployment = yaml.safe_load((KUBE / "deployment.yaml").read_text())
    [sidecar] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "state-exporter"]
    assert state_dir.group(1) in {m["mountPath"] for m in sidecar["volumeMounts"]}


def test_build_stage_builds_a_wheel_and_runtime_installs_it_offline() -> None:
    build_runs = " ".join(i.args for i in stages()[0] if i.keyword == "RUN")
    assert re.search(r"pip wheel .*--wheel-dir /wheels \.$", build_runs)
    runtime_runs = " ".join(i.args for i in final("RUN"))
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in runtime_runs
    assert "python -m venv /opt/state-exporter" in runtime_runs
    assert "pip install --no-cache-dir --no-index --find-links=/wheels flujo-state-exporter" in runtime_runs
    assert final("COPY") == [], "the runtime stage gets nothing from the build context"


# ---- .dockerignore ----


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(exclude?, regex) per line, with Docker's matching: `*` within a segment, `**` across segments."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip("/"))
        regex = ""
        i = 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append((not negate, re.compile(regex + "$")))
    return patterns


def in_context(relative: str) -> bool:
    """Whether Docker sends the file: the last pattern matching it or one of its parent directories decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for exclude, regex in dockerignore_patterns():
        if any(regex.match(candidate) for candidate in candidates):
            included = not exclude
    return included


def build_context_copies() -> list[tuple[list[str], str]]:
    copies = []
    for instruction in stages()[0]:
        if instruction.keyword == "COPY":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            copies.append((words[:-1], words[-1]))
    return copies


def context_files() -> list[Path]:
    files = []
    for sources, _ in build_context_copies():
        for source in sources:
            path = REPO / source
            candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
            files += [p for p in candidates if in_context(p.relative_to(REPO).as_posix())]
    return files


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    for sources, _ in build_context_copies():
        for source in sources:
            assert in_context(source), f"{source} is COPYed but excluded by .dockerignore"
    assert in_context("exporter/cli.py")
    for excluded in (".venv/bin/python", ".git/HEAD", "tests/support.py", "var/demo/flujo_ops.db", "deploy/README.md"):
        assert not in_context(excluded), excluded
    assert not in_context("exporter/__pycache__/cli.cpython-311.pyc")


# ---- the build steps, outside Docker ----


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_builds_from_the_docker_context_and_the_console_script_runs(tmp_path: Path) -> None:
    # The build stage: COPY what the Dockerfile copies (minus .dockerignore), then `pip wheel .`.
    src = tmp_path / "src"
    for path in context_files():
        target = src / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_NO_CACHE_DIR")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), "."], cwd=src, env=env)
    [wheel] = list(wheels.glob("flujo_state_exporter-*.whl"))
    assert wheel.name.startswith(f"flujo_state_exporter-{__version__}-py3-none-any")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "state-exporter = exporter.cli:main" in archive.read(entry_points).decode()
    sources = {p.relative_to(REPO).as_posix() for p in (REPO / "exporter").rglob("*.py")}
    sources.add("exporter/py.typed")
    missing = sorted(sources - names)
    assert missing == [], f"not packaged in the wheel: {missing}"

    # The runtime stage: a fresh venv, the wheel installed offline from the wheel directory.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(wheels)]
    run([*pip, "flujo-state-exporter"], cwd=tmp_path, env=env)
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).strip()
    dependencies = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (Path(purelib) / "zz_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")

    script = venv / "bin" / "state-exporter"
    assert script.is_file() and os.access(script, os.X_OK)
    assert run([str(script), "--version"], cwd=tmp_path, env=env).strip() == f"state-exporter {__version__}"
    where = run([str(python), "-c", "import exporter.cli; print(exporter.cli.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(venv), f"exporter imported from {where.strip()}, not the wheel"
    # The subcommand of the image's CMD exists in the installed script.
    result = subprocess.run(
        [str(script), "run", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--config" in result.stdout
