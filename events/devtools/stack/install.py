"""Installing what the local stack runs from Debian packages (Java, Maven, PostgreSQL), once,
with apt-get, and only as root; otherwise an error that says what to install.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from events.devtools.stack.errors import StackError

from .addresses import ENV_DATABASE_URL, ENV_KAFKA_BOOTSTRAP_SERVERS
from .files import Echo
from .process import run

APT_TIMEOUT = 900.0


async def require_tool(name: str, apt_package: str, echo: Echo) -> str:
    """The path of the program ``name``; installs ``apt_package`` first if it is not on PATH."""
    found = shutil.which(name)
    if found is not None:
        return found
    _require_root_for_apt(f"`{name}`", apt_package)
    echo(f"`{name}` is not installed: installing {apt_package} with apt-get (once)...")
    await _apt_get(["update"])
    await _apt_get(["install", "-y", "--no-install-recommends", apt_package])
    found = shutil.which(name)
    if found is None:
        raise StackError(f"installed {apt_package} but `{name}` is still not on PATH")
    return found


def _require_root_for_apt(what: str, package: str) -> None:
    if os.geteuid() != 0:
        raise StackError(
            f"{what} is not installed and we are not root, so cannot install it: "
            f"run `sudo apt-get install -y {package}`, or set both "
            f"{ENV_KAFKA_BOOTSTRAP_SERVERS} and {ENV_DATABASE_URL} to use running services"
        )
    if shutil.which("apt-get") is None:
        raise StackError(f"{what} is not installed and there is no apt-get: install {package}")


async def _apt_get(args: list[str]) -> None:
    await run(
        ["apt-get", "-q", "-o", "Dpkg::Options::=--force-confold", *args],
        what=f"apt-get {' '.join(args)}",
        within=APT_TIMEOUT,
        env={"DEBIAN_FRONTEND": "noninteractive"},
    )


async def postgres_bin_dir(echo: Echo) -> Path:
    """The directory of pg_ctl, initdb and postgres; installs PostgreSQL first if needed."""
    found = find_postgres_bin_dir()
    if found is not None:
        return found
    await _apt_install_postgres(echo)
    found = find_postgres_bin_dir()
    if found is None:
        raise StackError("apt-get installed postgresql but no /usr/lib/postgresql/*/bin/pg_ctl")
    return found


def find_postgres_bin_dir() -> Path | None:
    """The Debian install with the highest major version, else whatever pg_ctl is on PATH."""
    candidates: list[tuple[int, Path]] = []
    for pg_ctl in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"):
        version = pg_ctl.parent.parent.name
        if version.isdigit() and (pg_ctl.parent / "initdb").is_file():
            candidates.append((int(version), pg_ctl.parent))
    if candidates:
        return max(candidates)[1]
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        bin_dir = Path(os.path.realpath(on_path)).parent
        if (bin_dir / "initdb").is_file() and (bin_dir / "postgres").is_file():
            return bin_dir
    return None


async def _apt_install_postgres(echo: Echo) -> None:
    _require_root_for_apt("PostgreSQL server binaries (/usr/lib/postgresql/*/bin)", "postgresql")
    echo("PostgreSQL is not installed: installing it with apt-get (once)...")
    await _apt_get(["update"])
    await _apt_get(["install", "-y", "--no-install-recommends", "postgresql-common"])
    # The Debian package creates and starts a "main" cluster on port 5432; this stack runs
    # its own data dir, so turn that off before installing the server (as the official
    # postgres Docker image does).
    conf = _disable_main_cluster()
    if conf is not None:
        echo(f"set create_main_cluster = false in {conf}")
    await _apt_get(["install", "-y", "--no-install-recommends", "postgresql"])


def _disable_main_cluster() -> Path | None:
    conf = Path("/etc/postgresql-common/createcluster.conf")
    if not conf.is_file():
        return None
    text = conf.read_text(encoding="utf-8")
    new, n = re.subn(
        r"^\s*#?\s*create_main_cluster\s*=.*$", "create_main_cluster = false", text, flags=re.M
    )
    conf.write_text(new if n else text + "\ncreate_main_cluster = false\n", encoding="utf-8")
    return conf


#: Debian's packages of the browser the console's tests and screenshots drive.
BROWSER_PACKAGES = ("chromium", "chromium-driver")


async def browser(echo: Echo) -> tuple[str, str]:
    """The paths of Debian's ``chromium`` and its ``chromedriver`` (the console's browser tests
    and ``make screenshots``), installing both packages with apt-get first if either is
    missing. Nothing is downloaded from anywhere else (no driver manager)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is not None and driver is not None:
        return chromium, driver
    packages = " ".join(BROWSER_PACKAGES)
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(
            f"chromium and chromedriver are not installed and cannot be installed here "
            f"(not root, or no apt-get): run `sudo apt-get install -y {packages}`"
        )
    echo(f"chromium or chromedriver is missing: installing {packages} with apt-get (once)...")
    await _apt_get(["update"])
    await _apt_get(["install", "-y", "--no-install-recommends", *BROWSER_PACKAGES])
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        raise StackError(f"installed {packages} but chromium or chromedriver is not on PATH")
    return chromium, driver
