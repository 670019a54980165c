"""File I/O shared by every part: atomic writes (a killed process never leaves a half-written
file). The lowest layer: it imports nothing of mobilekit (models load in mobilekit.loading)."""
import json
import os
import tempfile
from pathlib import Path


def write_atomic(path, text, mode="w"):
    """Write a file so that readers never see it half-written (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path, obj):
    return write_atomic(path, json.dumps(obj, indent=2) + "\n")
