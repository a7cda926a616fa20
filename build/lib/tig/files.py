"""Safe output files: atomic writes, and output folders that never take over someone else's files.

Outputs are written to a temporary name and renamed, into folders the program created or that
hold only its own outputs: nothing a user had on disk is deleted or overwritten.
"""
import hashlib
import os
import tempfile

from tig.errors import UserError

OUTPUT_MARKER = ".tig-output"   # marks a folder this project created for its outputs


def check_folder_path(path):
    """Refuse an empty output path or one that names an existing file (one line each)."""
    if not path or not path.strip():
        raise UserError("the output folder must not be empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"output folder {path} is an existing file; give a folder")


def prepare_output_dir(path, names, replace=False):
    """Make `path` ready to receive files `names`: created (and marked) if absent; refused if it
    is a file, or if it would overwrite a file in a folder this project did not create, unless
    replace=True (a command's explicit --replace, e.g. to regenerate the files under asset/)."""
    check_folder_path(path)
    if not os.path.exists(path):
        os.makedirs(path)
        open(os.path.join(path, OUTPUT_MARKER), "w").close()
        return path
    ours = os.path.exists(os.path.join(path, OUTPUT_MARKER))
    clashes = [name for name in names if os.path.exists(os.path.join(path, name))]
    if clashes and not ours and not replace:
        raise UserError(f"refusing to overwrite {os.path.join(path, clashes[0])}: {path} was not created by this "
                        "project; give a new --out folder (or add --replace to overwrite these files)")
    if not os.access(path, os.W_OK):
        raise UserError(f"output folder {path} is not writable")
    return path


def atomic_write(path, data):
    """Write text, bytes, or what `data(f)` writes to a text file, into a temporary file beside
    `path`; fsync it, then rename it into place: readers see all of it or nothing."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-{os.getpid()}-", dir=folder)
    os.close(fd)
    try:
        binary = isinstance(data, bytes)
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def files_sha256(*paths):
    """sha256 hex digest of the files' bytes, read in 1 MB blocks, in the order given."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def process_alive(pid):
    """Whether process `pid` exists (a temporary name carries its writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
