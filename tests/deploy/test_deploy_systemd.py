"""deploy/systemd: the unit is clean for `systemd-analyze verify`, scores <= 1.5 on `systemd-analyze security`, and
the daemon really runs inside the sandbox the unit describes.

`systemd-analyze verify` checks that the binary of ExecStart= exists and is executable.  The unit names the
installed path, /usr/local/bin/state-exporter, which a test machine does not have, so verify and security run on
a copy in which that one path is replaced by the console script of the project installed in this environment
(the same entry point, really executable).  Nothing else changes in the copy.  verify exits 0 even when it
ignores a misspelt key or a bad value (it only prints a warning), so "clean" means exit 0 AND no output, and a
control test checks that broken copies do produce output.

No systemd runs here, so the sandbox is emulated for one real run of the daemon with the unit's own command line
(`ExecStart` with `$ARGS` expanded): a non-root user without capabilities and with no_new_privs (setpriv), the
unit's UMask, the kernel's PR_SET_MDWE (what MemoryDenyWriteExecute= asks for), and strace recording every
system call and socket family, which are then checked against the unit's SystemCallFilter= (expanded with
`systemd-analyze syscall-filter`) and RestrictAddressFamilies=.  The DB belongs to an app running as another user
that writes with a new connection per write (flujo 0.4.35), so its -wal and -shm are absent whenever the daemon
reads; the daemon runs in the app's group (SupplementaryGroups=), the DB directory is setgid and group-writable
and the DB is 0660, as the unit's comments prescribe: the -wal and -shm the daemon creates must stay writable for
the app, which writes again after the daemon's reads.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from stat import S_IMODE
from typing import TypeVar

import pytest
from processes import free_port, http_get
from support import FIXTURES, SMALL06, app_writes, as_user, in_ci, integrity_and_rows, require_tool, wait_for

from exporter.config import load_config

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
UNIT_NAME = "flujo-state-exporter.service"
UNIT = SYSTEMD / UNIT_NAME
ENV_FILE = SYSTEMD / "flujo-state-exporter.env"
INSTALLED_BINARY = "/usr/local/bin/state-exporter"
INSTALLED_CONFIG = "/etc/flujo-state-exporter/config.yaml"
DB_DIR = "/var/lib/flujo"
APP_GROUP = "flujo"
MAX_EXPOSURE = 1.5
NOBODY = 65534
# The app's user and group in the sandbox test (numeric: no passwd entry needed).
APP_ID = 65533


# ---- reading unit files ----


def directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; repeated keys stay separate, as systemd accumulates many of them."""
    found = []
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {raw!r}"
        found.append((section, key.strip(), value.strip()))
    return found


def service(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for section, key, value in directives(text):
        if section == "Service":
            settings.setdefault(key, []).append(value)
    return settings


def single(settings: dict[str, list[str]], key: str) -> str:
    values = settings.get(key, [])
    assert len(values) == 1, f"{key}= set {len(values)} times: {values}"
    return values[0]


def console_script() -> Path:
    found = shutil.which("state-exporter", path=str(Path(sys.executable).parent)) or shutil.which("state-exporter")
    assert found, "the project's console script state-exporter is not installed in this environment"
    return Path(found)


def unit_copy(directory: Path) -> Path:
    """The unit with ExecStart's installed path replaced by the real console script, and nothing else changed."""
    text = UNIT.read_text()
    exec_start = f"ExecStart={INSTALLED_BINARY} "
    assert text.count(exec_start) == 1, f"expected exactly one line starting with {exec_start!r}"
    copy = directory / UNIT_NAME
    copy.write_text(text.replace(exec_start, f"ExecStart={console_script()} "))
    return copy


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = require_tool("systemd-analyze")
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
    return subprocess.run([binary, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def verify_output(unit: Path) -> str:
    result = analyze("verify", str(unit), cwd=unit.parent)
    output = (result.stdout + result.stderr).strip()
    return output if result.returncode == 0 else f"exit {result.returncode}\n{output}"


# ---- verify ----


def test_verify_is_clean(tmp_path: Path) -> None:
    assert verify_output(unit_copy(tmp_path)) == ""


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("ProtectSystem=strict", "ProtectSytem=strict"),  # unknown key: warned and ignored
        ("UMask=0027", "UMask=0o027"),  # bad value: warned and ignored
        ("RestrictAddressFamilies=AF_INET ", "RestrictAddressFamilies=AF_INTE "),
    ],
    ids=["misspelt-key", "bad-value", "bad-family"],
)
def test_verify_reports_what_it_ignores(tmp_path: Path, old: str, new: str) -> None:
    """Control: the clean check above would catch these (verify exits 0 on them)."""
    unit = unit_copy(tmp_path)
    text = unit.read_text()
    assert old in text
    unit.write_text(text.replace(old, new, 1))
    assert verify_output(unit) != ""


def test_verify_reports_a_missing_binary(tmp_path: Path) -> None:
    """Control: the unit as installed, on a machine without /usr/local/bin/state-exporter, does not verify."""
    if Path(INSTALLED_BINARY).exists():
        pytest.skip(f"{INSTALLED_BINARY} exists on this machine")
    shutil.copyfile(UNIT, tmp_path / UNIT_NAME)
    assert "state-exporter" in verify_output(tmp_path / UNIT_NAME)


# ---- security ----


def test_security_exposure_at_most_1_5(tmp_path: Path) -> None:
    unit = unit_copy(tmp_path)
    result = analyze("security", "--offline=yes", str(unit), cwd=tmp_path)
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert found, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    exposure = float(found.group(1))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{result.stdout}"


# ---- the settings the issue asks for, by name ----

REQUIRED = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "DevicePolicy": "closed",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0027",
    "PrivateUsers": "yes",
    "RemoveIPC": "yes",
    "DynamicUser": "yes",
    "SupplementaryGroups": APP_GROUP,
    "StateDirectory": "flujo-state-exporter",
    "EnvironmentFile": "-/etc/default/flujo-state-exporter",
    "ExecReload": "/bin/kill -HUP $MAINPID",
    "KillSignal": "SIGTERM",
    "TimeoutStopSec": "10",
    "Restart": "on-failure",
}


def test_unit_has_the_required_hardening() -> None:
    settings = service(UNIT.read_text())
    wrong = {key: settings.get(key) for key, value in REQUIRED.items() if settings.get(key) != [value]}
    assert wrong == {}, f"expected {[(k, REQUIRED[k]) for k in wrong]}"
    assert settings["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    argv = shlex.split(single(settings, "ExecStart"))
    assert argv == [INSTALLED_BINARY, "run", "--config", INSTALLED_CONFIG, "$ARGS"]


def test_db_directory_is_writable_through_the_apps_group() -> None:
    """SQLite creates -wal and -shm next to a WAL DB on a read: the DB directory must be writable (no read-only
    mount of it left anywhere), and the service's identity is a transient user in the app's group, never the
    app's user (RemoveIPC= would remove the app's IPC objects) nor a drop-in away."""
    settings = service(UNIT.read_text())
    assert settings.get("ReadWritePaths") == [f"-{DB_DIR}"]
    for key in ("ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "BindReadOnlyPaths"):
        assert key not in settings, f"{key}= would hide or freeze {DB_DIR}"
    assert "User" not in settings and "Group" not in settings
    assert settings["DynamicUser"] == ["yes"] and settings["SupplementaryGroups"] == [APP_GROUP]
    assert not (SYSTEMD / f"{UNIT_NAME}.d").exists(), "the write jobs need no other access than the reads"


def test_db_directory_matches_the_example_config() -> None:
    config = load_config(REPO / "config.example.yaml", env={})
    assert config.db.path is not None
    assert config.db.path.parent == Path(DB_DIR)


# ---- the environment file ----

ENV_LINE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")


def env_value(raw: str) -> str:
    """systemd's EnvironmentFile= quoting for the forms we use: bare (inner spaces kept), '...' (literal), "..."."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    assert not any(c in raw for c in "'\"\\"), f"unquoted value with quotes or backslashes: {raw!r}"
    return raw


def env_file(commented: bool) -> dict[str, list[str]]:
    """Active assignments, or (commented=True) the commented-out examples `#KEY=value`."""
    found: dict[str, list[str]] = {}
    for line in ENV_FILE.read_text().splitlines():
        text = line.strip()
        if commented:
            if not text.startswith("#"):
                continue
            text = text[1:]
        elif not text or text.startswith("#"):
            continue
        match = ENV_LINE.match(text)
        if match is None:
            assert commented, f"not KEY=VALUE: {line!r}"
            continue
        found.setdefault(match["key"], []).append(env_value(match["value"]))
    return found


def test_environment_file_sets_only_known_variables() -> None:
    for key in {**env_file(False), **env_file(True)}:
        assert key == "ARGS" or key.startswith(("STATE_EXPORTER_", "OTEL_")), key
    assert env_file(False) == {"ARGS": [""]}


def test_environment_file_examples_are_valid_config() -> None:
    examples = {key: values[-1] for key, values in env_file(True).items() if key.startswith("STATE_EXPORTER_")}
    assert "STATE_EXPORTER_WEB__BASIC_AUTH_USERS" in examples
    config = load_config(REPO / "config.example.yaml", env=examples)
    assert set(config.web.basic_auth_users) == {"prometheus"}
    assert str(config.db.path) == examples["STATE_EXPORTER_DB__PATH"]


def test_environment_file_otlp_examples_parse() -> None:
    traces_config = pytest.importorskip("exporter.traces.config")
    headers = env_file(True)["OTEL_EXPORTER_OTLP_HEADERS"][-1]
    assert traces_config.parse_key_values(headers, "OTEL_EXPORTER_OTLP_HEADERS") == {
        "authorization": "Bearer change-me"
    }


# ---- the daemon inside the sandbox ----

MDWE_WRAPPER = """
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    print("PR_SET_MDWE:", os.strerror(ctypes.get_errno()), file=sys.stderr)
    sys.exit(77)
os.execvp(sys.argv[1], sys.argv[1:])
"""
NO_MDWE = 77


def mdwe(*argv: str) -> list[str]:
    """argv run with MemoryDenyWriteExecute semantics enforced by the kernel (PR_SET_MDWE, Linux >= 6.3)."""
    return [sys.executable, "-c", MDWE_WRAPPER, *argv]


def require_mdwe() -> subprocess.CompletedProcess[str]:
    """Try a writable+executable mapping under the wrapper; skip locally (fail in CI) without PR_SET_MDWE."""
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    result = subprocess.run(mdwe(sys.executable, "-c", probe), capture_output=True, text=True, timeout=30)
    if result.returncode == NO_MDWE:
        message = f"the kernel has no PR_SET_MDWE (Linux >= 6.3): {result.stderr.strip()}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return result


def test_mdwe_wrapper_is_enforced() -> None:
    """Control: under the wrapper, a writable+executable mapping is refused, so the daemon test below means it."""
    result = require_mdwe()
    assert result.returncode != 0
    assert "PermissionError" in result.stderr


def syscall_groups() -> dict[str, list[str]]:
    """Every group of `systemd-analyze syscall-filter`, name -> members (system calls or @groups)."""
    output = analyze("syscall-filter", cwd=Path.cwd()).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.startswith(" ") and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())
        elif not line.strip():
            current = None
    assert "@system-service" in groups and "@default" in groups, output[:2000]
    return groups


def expand(items: list[str], groups: dict[str, list[str]]) -> set[str]:
    names: set[str] = set()
    for item in items:
        names |= expand(groups[item], groups) if item.startswith("@") else {item}
    return names


def allowed_syscalls(filters: list[str], groups: dict[str, list[str]]) -> set[str]:
    """What the SystemCallFilter= assignments allow, as systemd resolves them: the first one, an allow-list,
    also allows @default; each later ~list removes its members."""
    assert filters and not filters[0].startswith("~"), "expected an allow-list first"
    allowed = expand(["@default", *filters[0].split()], groups)
    for deny in filters[1:]:
        assert deny.startswith("~"), deny
        allowed -= expand(deny[1:].split(), groups)
    return allowed


STRACE_CALL = re.compile(r"^\d+\s+([a-z_][a-z0-9_]*)\(")
SOCKET_FAMILY = re.compile(r"^\d+\s+socket(?:pair)?\((AF_[A-Z0-9]+)")
WRITE_EXEC = re.compile(r"PROT_[A-Z|]*WRITE[A-Z|]*EXEC|PROT_[A-Z|]*EXEC[A-Z|]*WRITE")


def daemon_lines(trace: Path, binary: Path) -> list[str]:
    """The trace from the exec of the daemon on (what setpriv did before is systemd's job under the unit)."""
    lines = trace.read_text(errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if f'execve("{binary}"' in line and line.endswith("= 0")), None)
    assert start is not None, f"no execve of {binary} in the trace"
    return lines[start:]


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged daemon can traverse (pytest's tmp_path is private to its owner)."""
    path = Path(tempfile.mkdtemp(prefix="deploy-systemd-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def open_traversal(binary: Path) -> dict[Path, int]:
    """A clean clone may sit below a 0700 directory (mktemp -d): let other users traverse (x only, no read)
    the directories above the checkout while the test runs, as a real install under /usr/local would allow."""
    if runs_as_nobody(binary):
        return {}
    changed: dict[Path, int] = {}
    for parent in binary.parents:
        mode = os.stat(parent).st_mode & 0o7777
        if not mode & 0o001:
            changed[parent] = mode
            parent.chmod(mode | 0o001)
    return changed


def restore_modes(changed: dict[Path, int]) -> None:
    for path, mode in changed.items():
        path.chmod(mode)


def runs_as_nobody(binary: Path) -> bool:
    """Whether another user can run this checkout's daemon at all (not below a 0700 mktemp -d)."""
    probe = [require_tool("setpriv"), "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups"]
    result = subprocess.run([*probe, str(binary), "--version"], capture_output=True, timeout=60)
    return result.returncode == 0


def while_running(proc: subprocess.Popen[bytes], check: Callable[[], T]) -> Callable[[], T | None]:
    """``check`` as a wait_for condition that gives up once ``proc`` exited and counts a refused
    connection (the daemon not listening yet) as not yet."""

    def condition() -> T | None:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            return check()
        return None

    return condition


def test_daemon_runs_inside_the_units_sandbox(shared_dir: Path, request: pytest.FixtureRequest) -> None:
    strace = require_tool("strace")
    require_mdwe()
    settings = service(UNIT.read_text())
    groups = syscall_groups()
    allowed = allowed_syscalls(settings["SystemCallFilter"], groups)
    families = set(single(settings, "RestrictAddressFamilies").split())
    umask = int(single(settings, "UMask"), 8)
    stop_timeout = float(single(settings, "TimeoutStopSec"))

    # The Flujo DB in WAL mode, owned by the app (another user when root), in a setgid directory of the app's
    # group, mode 0660: the preparation that deploy/README.md prescribes.  The app writes with a connection per
    # write, so -wal and -shm are absent whenever the daemon opens the DB.
    as_root = os.geteuid() == 0
    app = APP_ID if as_root else os.geteuid()
    db_dir = shared_dir / "flujo"
    db_dir.mkdir()
    db = db_dir / "flujo_ops.db"
    shutil.copyfile(FIXTURES / SMALL06, db)
    setup = sqlite3.connect(db)
    assert setup.execute("PRAGMA journal_mode=wal").fetchone()[0] == "wal"
    setup.close()
    if as_root:
        os.chown(db_dir, app, app)
        os.chown(db, app, app)
    db_dir.chmod(0o2770)
    db.chmod(0o660)
    as_user(app, lambda: app_writes(db, 1))
    assert sorted(os.listdir(db_dir)) == [db.name]
    config = shared_dir / "config.yaml"
    config.write_text("metrics:\n  refresh_interval: 1s\n  aggregate_interval: 1s\n")
    config.chmod(0o644)
    state = shared_dir / "state"
    state.mkdir(mode=0o750)

    # ExecStart=, with $ARGS from the environment file's example plus this test's DB and port.
    port = free_port()
    example_args = env_file(True)["ARGS"][-1]
    args = f"{example_args} --db {db} --listen 127.0.0.1:{port}"
    command = [
        part
        for word in shlex.split(single(settings, "ExecStart"))
        for part in (args.split() if word == "$ARGS" else [word])
    ]
    binary = console_script()
    command = [str(binary) if w == INSTALLED_BINARY else str(config) if w == INSTALLED_CONFIG else w for w in command]

    identity = [require_tool("setpriv"), "--no-new-privs"]
    if os.geteuid() == 0:  # the unit's DynamicUser=, without capabilities (CapabilityBoundingSet=)
        opened = open_traversal(binary)
        request.addfinalizer(lambda: restore_modes(opened))
        assert runs_as_nobody(binary), "the daemon cannot be started as another user"
        identity += ["--reuid", str(NOBODY), "--regid", str(NOBODY), "--groups", str(APP_ID)]  # SupplementaryGroups=
        identity += ["--inh-caps=-all", "--bounding-set=-all"]
        os.chown(state, NOBODY, NOBODY)
    trace = shared_dir / "strace.log"
    log = shared_dir / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STATE_EXPORTER_", "OTEL_"))}
    env["STATE_DIRECTORY"] = str(state)
    argv = mdwe(strace, "-f", "-qq", "-o", str(trace), *identity, *command)

    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        proc = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=state, umask=umask)
    daemon = None
    try:
        wait_for(while_running(proc, lambda: http_get(url + "/healthz", timeout=1)[0] == 200), 60, "/healthz")
        daemon = wait_for(while_running(proc, lambda: children(proc.pid)), 5, "the daemon's pid")[0]
        wait_for(while_running(proc, lambda: http_get(url + "/readyz", timeout=2)[0] == 200), 30, "/readyz")
        assert "state_exporter_db_ready 1.0" in http_get(url + "/metrics")[1]
        # The daemon's read created -wal and -shm: the DB's mode despite UMask=, the app's group from the setgid
        # directory.  The app then writes again (a -shm it could not write would fail that write).
        for suffix in ("-wal", "-shm"):
            info = os.stat(f"{db}{suffix}")
            assert S_IMODE(info.st_mode) == 0o660, suffix
            assert info.st_gid == db_dir.stat().st_gid, suffix
            assert info.st_uid == (NOBODY if as_root else app), suffix
        as_user(app, lambda: app_writes(db, 2))
        os.kill(daemon, signal.SIGHUP)  # ExecReload=
        time.sleep(2.5)  # reload, then a few refreshes (snapshot, watermarks, aggregates) of the live DB
        request = urllib.request.Request(url + "/metrics", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert b"state_exporter_db_ready 1.0" in gzip.decompress(response.read())
        assert http_get(url + "/readyz")[0] == 200
        os.kill(daemon, signal.SIGTERM)  # KillSignal=
        code = proc.wait(stop_timeout)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}:\n{log.read_text()}") from None
    finally:
        if proc.poll() is None:
            for pid in (daemon, proc.pid):
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            proc.wait(10)
    assert code == 0, f"exit {code} (within TimeoutStopSec={stop_timeout:g}):\n{log.read_text()}"
    as_user(app, lambda: app_writes(db, 3))
    assert as_user(app, lambda: integrity_and_rows(db)) == ("ok", [1, 2, 3])

    lines = daemon_lines(trace, binary)
    first_call: dict[str, str] = {}
    for line in lines:
        if match := STRACE_CALL.match(line):
            first_call.setdefault(match.group(1), line)
    assert len(first_call) > 20, f"implausibly few system calls traced: {sorted(first_call)}"
    denied = [first_call[name] for name in sorted(set(first_call) - allowed)]
    assert denied == [], "system calls outside SystemCallFilter= (first use of each)"
    sockets = {m.group(1) for line in lines if (m := SOCKET_FAMILY.match(line))}
    assert "AF_INET" in sockets
    assert sockets <= families, f"socket families outside RestrictAddressFamilies=: {sorted(sockets - families)}"
    # MemoryDenyWriteExecute= as systemd's seccomp filter has it: no W+X mapping, no mprotect() to executable.
    exec_changes = [
        line
        for line in lines
        if (m := STRACE_CALL.match(line))
        and (
            (m.group(1) in ("mmap", "mprotect", "pkey_mprotect") and WRITE_EXEC.search(line))
            or (m.group(1) in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in line)
            or (m.group(1) == "shmat" and "SHM_EXEC" in line)
        )
    ]
    assert exec_changes == []
