"""
Durable files: writes that a crash, a kill or a full disk cannot leave half-done, and the out_dir
check every script runs before its work. Standard library only, so prepare.py stays free of torch
(checkpoint.py re-exports all of this for the scripts that train).
"""
import glob
import os


class CheckpointError(Exception):
    """A checkpoint or output file that is missing, unreadable, unwritable or of the wrong kind (one clear message)."""


def reason_of(e):
    """Why an OSError happened, in words ("No space left on device"), or the exception's name."""
    return e.strerror or type(e).__name__ if isinstance(e, OSError) else type(e).__name__


def atomic_write(path, write):
    """Write a file so that a crash, a kill or a full disk never leaves it half-written: write(f) fills
    path.tmp, which is flushed to the disk (fsync) and only then renamed over path; the rename is
    made durable by an fsync of the folder. On failure the .tmp is removed and the old file is kept."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # any failure, Ctrl-C included: no half-written .tmp stays behind
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write {path}: {reason_of(e)} (the previous file, if any, is kept)")
        raise
    try:  # make the rename itself durable; best effort: some systems (Windows) cannot open a folder
        fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def atomic_write_text(path, text):
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def prepare_out_dir(out_dir):
    """Create out_dir and prove it is writable before any work starts (a path under a regular file, a
    read-only disk or a missing permission fails here, in one line, not after an hour of training).
    Leftover *.tmp files of a killed run are removed."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, ".write_test.tmp")
        with open(probe, "wb") as f:
            f.write(b"ok")
        os.remove(probe)
        for tmp in glob.glob(os.path.join(out_dir, "*.tmp")):
            os.remove(tmp)
    except OSError as e:
        raise CheckpointError(f"cannot write to out_dir '{out_dir}': {reason_of(e)}")


class Staged:
    """The files a run writes in out_dir, kept away from an earlier run's files until the run ends:

        files = Staged(out_dir, ["ckpt.pt", "log.jsonl"])
        save(..., files["ckpt.pt"])   # as often as the run likes
        files.commit()                # the run ended (finished, early-stopped, Ctrl-C): its files take over
        files.discard()               # the run failed: its files go, the earlier ones stay whole

    With an earlier ckpt.pt in out_dir the run writes beside it (ckpt.next.pt, log.next.jsonl); without
    one it writes the real names straight away, and commit/discard have nothing to do."""

    def __init__(self, out_dir, names):
        self.out_dir = out_dir
        self.staged = os.path.isfile(os.path.join(out_dir, "ckpt.pt"))
        self.paths = {n: os.path.join(out_dir, n.replace(".", ".next.", 1) if self.staged else n) for n in names}

    def __getitem__(self, name):
        return self.paths[name]

    def commit(self):
        for name, path in self.paths.items():
            if self.staged and os.path.exists(path):
                try:
                    os.replace(path, os.path.join(self.out_dir, name))
                except OSError as e:
                    raise CheckpointError(f"could not write {os.path.join(self.out_dir, name)}: {reason_of(e)}")

    def discard(self):
        for path in self.paths.values():
            if self.staged and os.path.exists(path):
                os.remove(path)
