"""Checks of the files and folders named on the command line, made before any work starts."""
import os
from pathlib import Path

from .args import UsageError


def _writable_place(path, what):
    """Raise unless ``path`` can be created: its nearest existing ancestor is a writable folder."""
    ancestor = Path(path).absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{what}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: folder {ancestor} is not writable")


def check_output_folder(path, what, *, previous=(), overwrite=False, hint="pass --overwrite to replace it"):
    """Refuse ``path`` as an output folder unless it is (or can be created as) a writable folder without
    files of a previous run (any of ``previous``), or ``overwrite`` is set; ``what`` names the option."""
    path = Path(path)
    what = f"{what} {path}"
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{what}: is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{what}: folder is not writable")
    else:
        _writable_place(path, what)
    found = [name for name in previous if (path / name).exists()]
    if found and not overwrite:
        raise UsageError(f"{what}: holds a previous run ({', '.join(found)}); {hint}")


def check_output_file(path, what, *, overwrite=False):
    """Refuse ``path`` as an output file if it is a folder, cannot be written, or exists without ``overwrite``."""
    path = Path(path)
    what = f"{what} {path}"
    if path.is_dir():
        raise UsageError(f"{what}: is a folder, not a file")
    if path.exists() and not overwrite:
        raise UsageError(f"{what}: exists; pass --overwrite to replace it")
    _writable_place(path, what)


def check_input_file(path, what):
    """Refuse ``path`` as an input file unless it is a readable file."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{what} {path}: no such file")
    if path.is_dir():
        raise UsageError(f"{what} {path}: is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{what} {path}: not readable")


def check_input_folder(path, what):
    """Refuse ``path`` unless it is an existing folder."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{what} {path}: {'is a file, not a folder' if path.exists() else 'no such folder'}")
