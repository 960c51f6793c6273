"""A virtualenv with DIRAC's real ComputingElement base, for running the DIRAC plug-in on DIRAC itself.

``pip install "DIRAC>=9,<10"`` resolves DIRAC's whole dependency set (gfal2-python, fts3, rucio-clients, cwltool, ...)
and fails on packages that only build against C libraries a CI machine lacks. A ComputingElement needs far less:
``stacks/dirac/requirements.txt`` pins the closure that importing ``DIRAC.Resources.Computing.ComputingElement``,
``ComputingElementFactory``, ``gConfig`` and ``gLogger`` needs, installed with ``--no-deps``. The one compiled
package, M2Crypto, has no Linux wheel on PyPI: it builds from its sdist with ``swig`` from PyPI's wheel and the
OpenSSL headers (``libssl-dev``, installed with apt-get when missing and this process is root).

The venv also gets ``stacks/dirac/extension`` (a DIRAC extension holding
``Resources/Computing/IntercedeComputingElement.py``) so that DIRAC's ``ComputingElementFactory`` finds
``CEType = Intercede``, and a ``.pth`` that appends each directory in ``$INTERCEDE_DIRAC_BASE_SITE`` (``os.pathsep``
separated) as a site directory *after* its own: the caller points it at the project's site-packages, so intercede and
its dependencies come from there while DIRAC's pins win where both have a package.

:func:`python` builds it once under ``$INTERCEDE_CACHE`` (default ``~/.cache/intercede``) in a folder named by
DIRAC's version, the Python version and a digest of the recipe (this file and ``stacks/dirac/``), like the stack
images: a second run reuses it, an edited recipe builds a new one. A file lock makes concurrent callers (xdist
workers) build it once. Each step's time is printed and kept in ``intercede-build.json`` inside the venv.

``python -m stacks.dirac_venv`` builds it and prints the interpreter's path.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["BASE_SITE_ENV", "DIRAC_VERSION", "python"]

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "dirac"
DIRAC_VERSION = "9.1.22"
#: The environment variable naming the site directories the venv's interpreter appends (the project's).
BASE_SITE_ENV = "INTERCEDE_DIRAC_BASE_SITE"
_DONE = "intercede-build.json"
_PTH = (f'import os, site; list(map(site.addsitedir, filter(None, os.environ.get("{BASE_SITE_ENV}", "")'
        ".split(os.pathsep))))\n")
#: M2Crypto's build needs these in the venv (no build isolation: it must see the venv's swig).
_BUILD_TOOLS = ["setuptools>=70", "wheel", "swig==4.5.1"]
_OPENSSL_HEADER = Path("/usr/include/openssl/ssl.h")


def _digest() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    for path in sorted(p for p in RECIPE.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                       and ".egg-info" not in str(p)):
        h.update(str(path.relative_to(RECIPE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _cache() -> Path:
    return Path(os.environ.get("INTERCEDE_CACHE") or Path.home() / ".cache" / "intercede")


def python() -> Path:
    """The DIRAC venv's interpreter, building the venv first if this recipe has not been built here yet."""
    tag = f"dirac-{DIRAC_VERSION}-py{sys.version_info.major}{sys.version_info.minor}-{_digest()}"
    venv = _cache() / tag
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{tag}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / _DONE).is_file():
            _build(venv)
    return venv / "bin" / "python"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _step(times: dict[str, dict[str, float]], name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run one build step; keep its wall time and its CPU time (which the machine's load does not inflate)."""
    started, cpu = time.monotonic(), _cpu()
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    times[name] = {"wall": round(time.monotonic() - started, 1), "cpu": round(_cpu() - cpu, 1)}
    print(f"[dirac-venv] {name}: {times[name]['wall']} s ({times[name]['cpu']} s CPU)", file=sys.stderr, flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the DIRAC venv: {name} failed ({' '.join(argv)}):\n{done.stdout[-4000:]}")


def _build(venv: Path) -> None:
    print(f"[dirac-venv] building {venv} (once; cached afterwards)", file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)  # a build that stopped half-way
    times: dict[str, dict[str, float]] = {}
    started, cpu = time.monotonic(), _cpu()
    if not _OPENSSL_HEADER.is_file():
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            raise RuntimeError(f"M2Crypto builds against the OpenSSL headers ({_OPENSSL_HEADER}): install libssl-dev")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _step(times, "apt-get update", ["apt-get", "update", "-q"], apt_env)  # a fresh machine has no package lists
        _step(times, "apt-get install libssl-dev",
              ["apt-get", "install", "-y", "-q", "--no-install-recommends", "libssl-dev"], apt_env)
    # No pip of its own (ensurepip is most of a venv's creation time): this interpreter's pip installs into it.
    _step(times, "venv", [sys.executable, "-m", "venv", "--without-pip", str(venv)])
    py = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", py, "install", "--no-input", "--no-deps"]
    _step(times, "build tools (setuptools, wheel, swig)", [*pip, *_BUILD_TOOLS])
    # The venv's bin first on PATH: M2Crypto's setup runs `swig` from there. -O0: its SWIG-generated C compiles in a
    # quarter of the CPU time of the default -O2 (measured: 5.8 s against 21.3 s), and nothing here times M2Crypto.
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "CFLAGS": "-O0"}
    _step(times, "DIRAC and its ComputingElement closure (M2Crypto built)",
          [*pip, "--no-build-isolation", "-r", str(RECIPE / "requirements.txt")], env)
    # Built from a copy: a build in place would leave build/ and *.egg-info in the recipe (and change its digest).
    extension = venv / "extension-src"
    shutil.copytree(RECIPE / "extension", extension)
    _step(times, "the IntercedeDIRAC extension", [*pip, "--no-build-isolation", str(extension)], env)
    shutil.rmtree(extension)
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "zz_intercede_base_site.pth").write_text(_PTH)
    _step(times, "import check", [py, "-c", "import DIRAC.Resources.Computing.ComputingElement"])
    times["total"] = {"wall": round(time.monotonic() - started, 1), "cpu": round(_cpu() - cpu, 1)}
    (venv / _DONE).write_text(json.dumps({"dirac": DIRAC_VERSION, "seconds": times}, indent=1) + "\n")


if __name__ == "__main__":
    print(python())
