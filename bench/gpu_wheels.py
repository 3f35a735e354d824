"""`make gpu-wheels`: download, here, the wheels the GPU check needs that the device machine's image lacks.

    python -m bench.gpu_wheels [--list bench/gpu-wheels.txt] [--image bench/gpu-image.txt]

Reads the pinned list (sections [deps], [build], [voice]), downloads each wheel for CPython 3.12 on
manylinux x86_64 (`pip download --no-deps --only-binary=:all:`, so nothing ever pulls a second torch),
builds the pure-Python sdists of [build] into wheels, then checks, failing with one line each:
- every requirement of every carried wheel (for Python 3.12 on Linux) is carried or on the image;
- every dependency of the project (pyproject.toml, with the `voice` extra) is carried or on the image;
- each trip (the working tree plus one wheel folder) fits the device tool's 64 MiB.
Prints the size of each folder and trip in MiB.
"""

from __future__ import annotations

import argparse
import email.parser
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from bench.gpu_pack import CACHE_FOLDER, pack_voice, trim_wheel

ROOT = Path(__file__).resolve().parent.parent
TRIP_LIMIT_BYTES = 64 * 2**20
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
# Marker environment of the device machine's Python (3.12.3 on x86-64 Linux).
TARGET_ENV = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
              "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
              "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
# Installed before the project on any machine (README), so never carried.
ALWAYS_THERE = {"torch", "transformers"}
FOLDER = ROOT / ".gpu-wheels"  # the one folder that travels (a single device call)


def main() -> None:
    args = _parse()
    sections = read_sections(args.list)
    image = image_names(args.image)
    FOLDER.mkdir(exist_ok=True)
    _fetch(sections)
    for wheel in FOLDER.glob("*.whl"):
        if wheel_name(wheel) in {canonicalize_name(req.split("==")[0]) for req in sections.get("trim", [])}:
            print(f"trimmed {wheel.name}: {trim_wheel(wheel) / 2**20:.1f} MiB of unused data left out")
    # Only the voices packed now travel (a local run of the check may have cached more there).
    shutil.rmtree(FOLDER / CACHE_FOLDER, ignore_errors=True)
    packed = [pack_voice(name, FOLDER) for name in sections.get("voice", [])]
    shutil.rmtree(ROOT / ".gpu-voice", ignore_errors=True)  # the second trip of an older layout
    wheels = _prune(sorted(FOLDER.glob("*.whl")), {k: v for k, v in sections.items() if k != "voice"})
    carried = {wheel_requirements(path)[0] for path in wheels} | voice_distributions(sections.get("voice", []))
    problems = missing_requirements(wheels, image) + uncovered_project_deps(carried | image)
    (FOLDER / "COMMIT").write_text(_commit() + "\n")
    print(f"voices converted for the trip: {', '.join(folder.name for folder in packed) or 'none'}")
    problems += _report_sizes()
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    sys.exit(1 if problems else 0)


def _fetch(sections: dict[str, list[str]]) -> None:
    """Download [deps] and [trim] wheels for the device machine's Python; build [build] sdists here."""
    if sections.get("build"):
        _pip("wheel", "--no-deps", "--no-binary", ":all:", "-w", str(FOLDER), *sections["build"])
    wanted = [*sections.get("deps", []), *sections.get("trim", [])]
    if wanted:
        _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation",
             "cp", *(f"--platform={p}" for p in PLATFORMS), "-d", str(FOLDER), *wanted)


def wheel_name(wheel: Path) -> str:
    """The canonical distribution name of a wheel file, from its file name."""
    return canonicalize_name(wheel.name.split("-")[0])


def voice_distributions(names: list[str]) -> set[str]:
    """Canonical names of the packages whose voices travel converted (so they need not travel)."""
    from schemas.voices import BUNDLED_PIPER

    return {canonicalize_name(BUNDLED_PIPER[name.removeprefix("piper:")].distribution) for name in names}


def _prune(wheels: list[Path], sections: dict[str, list[str]]) -> list[Path]:
    """Delete wheels left by an earlier list (a dropped package, an older pin): they would travel too."""
    wanted = {(canonicalize_name(req.split("==")[0]), req.split("==")[1]) for reqs in sections.values()
              for req in reqs}
    kept = []
    for wheel in wheels:
        name, version = wheel.name.split("-")[:2]
        if (canonicalize_name(name), version) in wanted:
            kept.append(wheel)
        else:
            print(f"removing {wheel.name}: no longer on the list", file=sys.stderr)
            wheel.unlink()
    return kept


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", type=Path, default=ROOT / "bench" / "gpu-wheels.txt")
    parser.add_argument("--image", type=Path, default=ROOT / "bench" / "gpu-image.txt")
    return parser.parse_args()


def _lines(path: Path) -> list[str]:
    """Non-empty lines of `path` without comments."""
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines() if line.split("#", 1)[0].strip()]


def read_sections(path: Path) -> dict[str, list[str]]:
    """`{section: [requirement, ...]}` from an INI-like list: `[name]` headers, one `name==version` a line."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in _lines(path):
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
        elif current is None:
            raise SystemExit(f"error: {path}: {line!r} comes before any [section]")
        else:
            current.append(line)
    return sections


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise SystemExit(f"error: pip {args[0]} failed (exit {result.returncode}): {' '.join(args[-3:])}")


def wheel_requirements(wheel: Path) -> tuple[str, list[Requirement]]:
    """(canonical name, Requires-Dist that apply to the device machine without extras) of a wheel file."""
    with zipfile.ZipFile(wheel) as archive:
        meta_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(archive.read(meta_name).decode("utf-8"))
    requirements = [Requirement(text) for text in meta.get_all("Requires-Dist") or []]
    wanted = [r for r in requirements if r.marker is None or r.marker.evaluate(dict(TARGET_ENV))]
    return canonicalize_name(str(meta["Name"])), wanted


def missing_requirements(wheels: list[Path], image: set[str]) -> list[str]:
    """One line per requirement of a carried wheel that is neither carried nor on the image."""
    declared = {path: wheel_requirements(path) for path in wheels}
    carried = {name for name, _ in declared.values()} | image
    return [f"{path.name} needs {req} (add it to bench/gpu-wheels.txt)"
            for path, (_, reqs) in declared.items() for req in reqs if canonicalize_name(req.name) not in carried]


def uncovered_project_deps(available: set[str]) -> list[str]:
    """One line per project dependency (voice extra included) whose canonical name is not in `available`
    (the carried wheels plus the image)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [Requirement(text).name for text in [*project["dependencies"],
                                                   *project["optional-dependencies"]["voice"]]]
    return [f"project dependency {name} is neither carried nor on the image"
            for name in names if canonicalize_name(name) not in available]


def image_names(path: Path) -> set[str]:
    """Canonical names of the packages on the device machine's image, plus torch and transformers."""
    return {canonicalize_name(line) for line in _lines(path)} | ALWAYS_THERE


def tree_bytes() -> int:
    """Bytes of the working tree that travels: tracked files plus untracked files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((ROOT / name).stat().st_size for name in listed if name and (ROOT / name).is_file())


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _report_sizes() -> list[str]:
    """Print the trip's size; one problem line when it is over the limit."""
    tree = tree_bytes()
    size = _folder_bytes(FOLDER)
    trip = tree + size
    count = len(list(FOLDER.glob("*.whl")))
    print(f"working tree: {tree / 2**20:.1f} MiB; {FOLDER.name}/: {count} wheels and the converted voice, "
          f"{size / 2**20:.1f} MiB; the one trip: {trip / 2**20:.1f} MiB of {TRIP_LIMIT_BYTES / 2**20:.0f}")
    if trip > TRIP_LIMIT_BYTES:
        return [f"{FOLDER.name}/ plus the working tree is {trip / 2**20:.1f} MiB, over the 64 MiB limit"]
    return []


def _commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


if __name__ == "__main__":
    main()
