"""The local Rust toolchain and running it: locate rustc/cargo, run a compiler (or a test
binary) under a time limit, and normalise machine-specific paths in what it printed.
Shared by harvest, the error index, snippets, mutants and test runs."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any, Sequence

from meap_data.errors import MeapDataError

# Variables that make cargo's human output depend on the terminal or the user's config.
_QUIET_ENV = {
    "CARGO_TERM_COLOR": "never",
    "CARGO_TERM_PROGRESS_WHEN": "never",
    "CARGO_TERM_VERBOSE": "false",
    "CARGO_TERM_QUIET": "false",
}


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """The rustc (and cargo, when present) that compiles everything in one run."""

    rustc: str
    cargo: str | None
    version: str  # `rustc -V`, e.g. "rustc 1.95.0 (59807616e 2026-04-14)"
    sysroot: str


def find_toolchain(rustc: str = "rustc", cargo: str = "cargo") -> Toolchain:
    """Locate rustc (required) and cargo (optional) on PATH and ask rustc its version."""
    rustc_path = shutil.which(rustc)
    if rustc_path is None:
        raise MeapDataError(
            f"rustc not found on PATH ({os.environ.get('PATH', '')!r}); install a Rust toolchain "
            "with rustup (https://rustup.rs) or put rustc on PATH"
        )
    try:
        version = subprocess.run([rustc_path, "-V"], capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        sysroot = subprocess.run(
            [rustc_path, "--print", "sysroot"], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError) as e:
        raise MeapDataError(f"{rustc_path} -V failed ({e}); check the toolchain with `rustup show`") from e
    return Toolchain(rustc_path, shutil.which(cargo), version, sysroot)


# ---------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class RunOutput:
    """One compiler process: exit code (None when killed at the limit) and its output bytes."""

    exit_code: int | None
    timed_out: bool
    stdout: bytes
    stderr: bytes


def run_compiler(argv: Sequence[str], cwd: Path, env: dict[str, str], time_limit_s: float) -> RunOutput:
    """Run a compiler with a wall-clock limit in seconds, killing its whole process group.

    cargo starts rustc as a child: killing only cargo would leave rustc running.
    """
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=time_limit_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return RunOutput(None, True, out, err)
    return RunOutput(proc.returncode, False, out, err)


_LONG_TYPE_HASH = re.compile(r"-[0-9a-f]{16}(?=\.long-type-)")
_LONG_TYPE = re.compile(r"\.long-type-\d+\.txt")
_ICE_FILE = re.compile(r"rustc-ice-[0-9T:_.+-]+?-\d+\.txt")
_THREAD_ID = re.compile(r"(thread '[^']*') \(\d+\)")
_CARGO_TIME = re.compile(r"(Finished .* in )(?:\d+m )?\d+(?:\.\d+)?s$", re.M)


class Normaliser:
    """Replace machine-specific paths by placeholders in text and in parsed values.

    ``paths`` maps a real directory to its placeholder (``$SRC``, ``$TMP``...). Longer
    paths go first, so the sysroot (under $HOME) becomes $SYSROOT, not $HOME/...; a
    path only matches at a path boundary, so /root never rewrites /rooted.
    """

    def __init__(self, paths: dict[str, str]):
        pairs = sorted(((p.rstrip("/"), ph) for p, ph in paths.items() if p and p.rstrip("/")), key=lambda x: -len(x[0]))
        self._pairs = [(re.compile(re.escape(p) + r"(?![\w.-])"), ph) for p, ph in pairs]

    def text(self, s: str) -> str:
        """Normalise one string."""
        for pattern, placeholder in self._pairs:
            s = pattern.sub(lambda _m, ph=placeholder: ph, s)
        s = _LONG_TYPE_HASH.sub("-<hash>", s)
        s = _LONG_TYPE.sub(".long-type-<hash>.txt", s)
        s = _ICE_FILE.sub("rustc-ice-<id>.txt", s)
        s = _THREAD_ID.sub(r"\1 (<id>)", s)
        return _CARGO_TIME.sub(r"\1<time>", s)

    def value(self, v: Any) -> Any:
        """Normalise every string inside nested dicts and lists."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        return v


def _home() -> str:
    return os.environ.get("HOME") or str(Path.home())



def home_dir() -> str:
    return os.environ.get("HOME") or str(Path.home())


def compiler_env(extra: dict[str, str] | None, ice_dir: Path) -> dict[str, str]:
    """The caller's environment plus quiet-terminal settings and ``extra``.

    RUSTC_ICE sends ICE report files to ``ice_dir`` instead of the current directory.
    """
    env = dict(os.environ)
    env.update(_QUIET_ENV)
    env["RUSTC_ICE"] = str(ice_dir)
    env.pop("RUSTC_WRAPPER", None)  # sccache and friends would change what runs
    env.update(extra or {})
    return env


