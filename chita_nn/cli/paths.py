"""Checks of the files and folders named on the command line, made before any work starts."""
import os
import tempfile
from pathlib import Path

from .args import UsageError


def _check_writable(folder, what):
    """Raise unless a file can be created in ``folder``: tried for real (an anonymous temporary file), since
    permission bits do not tell for root, a read-only file system or a special one such as /sys."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UsageError(f"{what}: folder {folder} is not writable ({exc.strerror or exc})") from None


def _writable_place(path, what):
    """Raise unless ``path`` can be created: its nearest existing ancestor is a writable folder."""
    ancestor = Path(path).absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"{what}: {ancestor} is a file, not a folder")
    _check_writable(ancestor, what)


def check_output_folder(path, what, *, previous=(), overwrite=False, hint="pass --overwrite to replace it"):
    """Refuse ``path`` as an output folder unless it is (or can be created as) a writable folder without
    files of a previous run (any of ``previous``), or ``overwrite`` is set; ``what`` names the option."""
    path = Path(path)
    what = f"{what} {path}"
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{what}: is a file, not a folder")
        _check_writable(path, what)
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


def read_text_file(path, what):
    """The contents of ``path``, a readable, non-empty UTF-8 text file; otherwise a :class:`UsageError`
    naming ``what`` (the option) and the file: a binary file (NUL bytes) or another encoding (such as Latin-1)
    is refused with the offset of the first offending byte."""
    check_input_file(path, what)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{what} {path}: not readable ({exc.strerror or exc})") from None
    if not data.strip():
        raise UsageError(f"{what} {path}: {'empty' if not data else 'blank'} file, not text")
    nul = data.find(bytes(1))
    if nul >= 0:
        raise UsageError(f"{what} {path}: a binary file (NUL byte at offset {nul}), not UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                         f"convert it first, e.g. iconv -f latin1 -t utf-8") from None


def check_input_folder(path, what):
    """Refuse ``path`` unless it is an existing folder."""
    path = Path(path)
    if not path.is_dir():
        raise UsageError(f"{what} {path}: {'is a file, not a folder' if path.exists() else 'no such folder'}")
