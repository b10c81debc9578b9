"""Generate the Python code of the event contracts from ``proto/inspectloop/v1/*.proto``.

The generated modules are committed under ``services/inspectloop/v1/`` (importable as
``inspectloop.v1.<file>_pb2``). Run ``inspectloop dev gen-proto`` after editing a ``.proto``
file; ``inspectloop dev gen-proto --check`` (and ``tests/unit/test_contracts.py``) fail when
the committed code differs from what the protos generate.

Generation is deterministic: ``grpc_tools.protoc`` (pinned in ``pyproject.toml``) runs
in-process on a sorted file list, always into a fresh temporary directory, and the result is
then compared with or copied over the committed package byte by byte.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

from inspectloop.core.errors import InspectloopError

#: Repository root: services/inspectloop/devtools/protogen.py → three levels up.
REPO_ROOT = Path(__file__).resolve().parents[3]
#: Directory given to protoc as ``-I``; proto files sit at ``<package path>/<name>.proto``.
PROTO_ROOT = REPO_ROOT / "proto"
#: Package path of the contracts, both under PROTO_ROOT and in the generated Python tree.
PACKAGE_PATH = Path("inspectloop") / "v1"
#: Committed generated package.
DEFAULT_OUT_DIR = REPO_ROOT / "services" / PACKAGE_PATH

#: Protobuf's well-known types (google/protobuf/*.proto) bundled with grpc_tools.
WELL_KNOWN_INCLUDE = Path(grpc_tools.__file__).resolve().parent / "_proto"

INIT_CONTENT = '''"""Generated from proto/inspectloop/v1/*.proto by ``inspectloop dev gen-proto``.

Do not edit by hand: edit the .proto files and run ``inspectloop dev gen-proto``.
"""
'''

#: Suffixes of the files protoc writes; only such files are ever deleted from the package.
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
#: Names inside the package that are never compared (interpreter caches).
IGNORED_NAMES = frozenset({"__pycache__"})


class ProtoGenerationError(InspectloopError):
    """The protos could not be found or compiled."""


def _proto_files(proto_root: Path) -> list[Path]:
    package_dir = proto_root / PACKAGE_PATH
    if not package_dir.is_dir():
        raise ProtoGenerationError(
            f"no proto directory at {package_dir}: protogen must run from a source checkout "
            f"(expected the repository root at {proto_root.parent})"
        )
    files = sorted(package_dir.glob("*.proto"))
    if not files:
        raise ProtoGenerationError(f"no .proto files in {package_dir}")
    return files


def _run_protoc(proto_root: Path, out_root: Path) -> None:
    """Compile every proto under ``proto_root`` into the Python tree rooted at ``out_root``."""
    proto_root = proto_root.resolve()
    files = _proto_files(proto_root)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={WELL_KNOWN_INCLUDE}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        # Absolute paths under the first --proto_path: protoc maps them to the virtual names
        # "inspectloop/v1/<file>.proto", so the output does not depend on the current directory.
        *(str(f) for f in files),
    ]
    code, errors = _call_protoc(args)
    if code != 0:
        raise ProtoGenerationError(f"protoc failed with exit code {code}:\n{errors.strip()}")


def _call_protoc(args: list[str]) -> tuple[int, str]:
    """Run protoc in-process; return its exit code and what it wrote to stderr.

    The compiler is C++ and writes its diagnostics to file descriptor 2 directly, so the
    descriptor itself is redirected (``contextlib.redirect_stderr`` would not see them).
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as capture:
        try:
            os.dup2(capture.fileno(), 2)
            code = int(protoc.main(args))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return code, capture.read()


def _render(proto_root: Path, work_dir: Path) -> Path:
    """Generate the complete package into ``work_dir`` and return its package directory."""
    _run_protoc(proto_root, work_dir)
    package_dir = work_dir / PACKAGE_PATH
    # protoc writes no __init__.py; the package's own is part of the generated output.
    (package_dir / "__init__.py").write_text(INIT_CONTENT, encoding="utf-8")
    return package_dir


def _listing(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and not IGNORED_NAMES.intersection(p.relative_to(directory).parts)
    }


def _differences(expected_dir: Path, actual_dir: Path) -> list[str]:
    expected = _listing(expected_dir)
    actual = _listing(actual_dir)
    stale = [
        name
        for name in expected & actual
        if not filecmp.cmp(expected_dir / name, actual_dir / name, shallow=False)
    ]
    return sorted([*stale, *(expected - actual), *(actual - expected)])


def generate(out_dir: Path = DEFAULT_OUT_DIR, *, proto_root: Path = PROTO_ROOT) -> None:
    """Write the generated package (``__init__.py`` and the ``*_pb2*`` modules) into ``out_dir``.

    Files that no longer correspond to a proto are removed; files that do not look generated
    are left alone (and keep :func:`stale_files` failing until someone removes them).
    Unchanged files are not rewritten, so their modification times stay as they were.
    """
    with tempfile.TemporaryDirectory(prefix="inspectloop-protogen-") as tmp:
        rendered = _render(proto_root, Path(tmp))
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in sorted(_listing(rendered)):
            target = out_dir / name
            if not target.is_file() or not filecmp.cmp(rendered / name, target, shallow=False):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rendered / name, target)
        for name in sorted(_listing(out_dir) - _listing(rendered)):
            if name.endswith(GENERATED_SUFFIXES):
                (out_dir / name).unlink()


def stale_files(out_dir: Path = DEFAULT_OUT_DIR, *, proto_root: Path = PROTO_ROOT) -> list[str]:
    """Paths (relative to ``out_dir``) whose committed content differs from fresh generation.

    Includes files the protos generate that are missing and files present that they do not
    generate. An empty list means the committed code is up to date.
    """
    with tempfile.TemporaryDirectory(prefix="inspectloop-protogen-") as tmp:
        rendered = _render(proto_root, Path(tmp))
        return _differences(rendered, out_dir)
