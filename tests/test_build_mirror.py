"""deploy/docker/build.sh bootstraps Debian from the mirror this machine's apt sources already use (or
$DEBIAN_MIRROR), never from a host named in the script. Only its mirror detection runs here: the build is slow."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

BUILD = Path(__file__).resolve().parents[1] / "deploy" / "docker" / "build.sh"


def mirror(etc: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f'source "{BUILD}" && debian_mirror bookworm'], capture_output=True,
                          text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "APT_ETC": str(etc), **env})


def test_the_script_names_no_mirror_host():
    assert "deb.debian.org" not in BUILD.read_text()


@pytest.mark.parametrize("files, expected", [
    ({"sources.list.d/debian.sources": "Types: deb\n# http://snapshot.debian.org/archive/debian/2025\n"
                                       "URIs: http://mirror.internal/debian\nSuites: bookworm bookworm-updates\n"
                                       "Components: main\n\nTypes: deb\nURIs: http://mirror.internal/debian-security\n"
                                       "Suites: bookworm-security\nComponents: main\n"},
     "http://mirror.internal/debian"),
    ({"sources.list": "# deb http://commented.example/debian bookworm main\n"
                      "deb [arch=amd64 signed-by=/k.gpg] http://proxy.corp:3142/debian/ bookworm main contrib\n"},
     "http://proxy.corp:3142/debian"),
    # Another Debian release on the host: its archive serves bookworm too; third-party repositories are skipped.
    ({"sources.list.d/vendor.list": "deb https://packages.vendor.example/apt stable main\n",
      "sources.list.d/debian.sources": "Types: deb\nURIs: https://apt.corp/debian\nSuites: trixie\n"
                                       "Components: main\n"}, "https://apt.corp/debian"),
    ({"sources.list.d/off.sources": "Enabled: no\nTypes: deb\nURIs: http://disabled/debian\nSuites: bookworm\n",
      "sources.list.d/on.sources": "Types: deb\nURIs: http://enabled/debian\nSuites: bookworm\n"}, "http://enabled/debian"),
])
def test_mirror_comes_from_the_apt_sources(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = mirror(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_a_variable_overrides_the_apt_sources(tmp_path):
    (tmp_path / "sources.list").write_text("deb http://from-sources/debian bookworm main\n")
    assert mirror(tmp_path, DEBIAN_MIRROR="http://override/debian/").stdout.strip() == "http://override/debian"


def test_no_debian_source_is_a_clear_error(tmp_path):
    (tmp_path / "sources.list").write_text("deb http://archive.ubuntu.com/ubuntu noble main\n")
    result = mirror(tmp_path)
    assert result.returncode != 0 and "set DEBIAN_MIRROR" in result.stderr
