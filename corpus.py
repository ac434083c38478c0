"""
Reading real-world text, shared by prepare.py and evaluate.py (standard library only; pyarrow,
which comes with streamlit, only for .parquet).

- Sources: a file or a folder (searched recursively) of .txt, .jsonl (a "text" field per line) and
  .parquet (a "text" column) files, each also as .gz. Everything streams: a file is read in blocks,
  so a corpus larger than RAM prepares in bounded memory.
- Encodings (--encoding=auto): a byte-order mark wins; then UTF-8 if the whole file is valid UTF-8;
  then a charset declared in the file's first lines (Project Gutenberg writes "Character set
  encoding: ISO-8859-1"); then cp1252. Why the fallback cannot produce mojibake: mojibake is UTF-8
  read as a one-byte code page ("canción" -> "canciÃ³n"), and we only get here when the bytes are
  not valid UTF-8. cp1252 (Windows Latin-1) is ISO-8859-1 plus printable characters (“ ” — €) in
  the 0x80-0x9F range where ISO-8859-1 has invisible control codes, so it reads both; a file that
  uses one of its five undefined bytes is read as ISO-8859-1. Like browsers (WHATWG), a declared
  ISO-8859-1 is read as cp1252.
- Project Gutenberg files lose their licence header and footer when the START/END markers are there.
"""
import codecs
import gzip
import io
import os
import re
import sys
import time
import zlib

from configurator import json_lines

TEXT_EXTENSIONS = (".txt", ".jsonl", ".parquet")
BLOCK_CHARS = 4 << 20  # a .txt file is read (and split into train/val) in pieces of at most ~4M characters
HEAD_BYTES = 64 << 10  # where markers, declared charsets and binary content are looked for
GUTENBERG_START = re.compile(r"^\*\*\* ?START OF (THIS|THE) PROJECT GUTENBERG E-?BOOK", re.I | re.M)
GUTENBERG_END = re.compile(r"^\*\*\* ?END OF (THIS|THE) PROJECT GUTENBERG E-?BOOK", re.I | re.M)
GUTENBERG_LAST_LINE = re.compile(r"^End of (the )?Project Gutenberg", re.I | re.M)  # "End of the Project Gutenberg EBook of ..."
DECLARED = re.compile(rb"(?:charset|character set encoding|coding)\s*[:=]\s*[\"']?([A-Za-z0-9_.:-]+)", re.I)
BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]  # utf-32 LE first: it starts like utf-16 LE


class CorpusError(Exception):
    """Input that cannot be read as text (one clear message)."""


def list_files(path, skipped=None):
    """The readable files of a file or folder, sorted; other files in a folder are skipped (and added to
    the list `skipped`, if given), and so are hidden ones (.name: editor backups, macOS's ._name resource
    files, .ipynb_checkpoints/ copies) and links that lead nowhere."""
    if os.path.isdir(path):
        found = []
        for root, dirs, names in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # os.walk descends only into these
            visible = [n for n in sorted(names) if not n.startswith(".") and os.path.isfile(os.path.join(root, n))]
            found += [os.path.join(root, n) for n in visible if n.lower().removesuffix(".gz").endswith(TEXT_EXTENSIONS)]
            if skipped is not None:
                skipped += [os.path.join(root, n) for n in visible
                            if not n.lower().removesuffix(".gz").endswith(TEXT_EXTENSIONS)]
        if not found:
            raise CorpusError(f"folder {path} holds no .txt, .jsonl or .parquet files (or .gz of them)")
        return found
    if not os.path.isfile(path):
        raise CorpusError(f"input not found: {path}")
    return [path]


def kind_of(path):
    name = path.lower().removesuffix(".gz")
    return next((ext[1:] for ext in TEXT_EXTENSIONS if name.endswith(ext)), "txt")


def open_binary(path):
    """The file's bytes as a stream (gunzipped for .gz), and the raw file whose tell() is the progress."""
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e.strerror}")
    return (gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw), raw


def read_head(path):
    return next(blocks(path, HEAD_BYTES), b"")


def blocks(path, size=1 << 20):
    """The (decompressed) bytes of a file, block by block."""
    f, raw = open_binary(path)
    with raw:
        try:
            while block := f.read(size):
                yield block
        except (OSError, EOFError, zlib.error) as e:  # a damaged .gz
            raise CorpusError(f"cannot read {path}: {e}")


def decodes_as(path, codec):
    """Whether the whole file decodes in this codec (checked block by block, in bounded memory)."""
    decoder = codecs.getincrementaldecoder(codec)()
    try:
        for block in blocks(path):
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeError:  # also UTF-16/32 without a byte-order mark
        return False
    return True


def looks_binary(head):
    """Text (in any of the encodings above, without a BOM) has almost no control bytes besides
    newline, tab, form feed and carriage return; binary data has many, and NUL bytes."""
    controls = sum(head.count(bytes([b])) for b in range(32) if b not in (9, 10, 12, 13))
    return b"\0" in head or controls > 0.1 * max(1, len(head))


def text_codec(name):
    """The codec's canonical name, or None when Python has no such text encoding (codecs such as
    rot13, base64 or zlib exist but turn bytes into bytes, not into text)."""
    try:
        name = codecs.lookup(name).name
        io.TextIOWrapper(io.BytesIO(), encoding=name)  # LookupError for a codec that is not a text encoding
        return name
    except LookupError:
        return None


def detect_encoding(path, encoding="auto"):
    """(codec name, why it was chosen) for a file. Raises CorpusError for binary files and unknown names."""
    if encoding != "auto":
        name = text_codec(encoding)
        if name is None:
            raise CorpusError(f"unknown encoding '{encoding}' (examples: auto, utf-8, latin-1, cp1252, utf-16)")
        # random bytes "decode" in any one-byte code page: refuse them here too (UTF-16/32 text is
        # full of NUL bytes, so those are not checked)
        if kind_of(path) != "parquet" and not name.startswith(("utf-16", "utf-32")) and looks_binary(read_head(path)):
            raise CorpusError(f"{path} looks like a binary file, not text")
        return name, "given"
    if kind_of(path) == "parquet":  # a binary format whose strings are UTF-8 by definition
        return "utf-8", "parquet strings are UTF-8"
    head = read_head(path)
    for bom, name in BOMS:
        if head.startswith(bom):
            return name, "byte-order mark"
    if looks_binary(head):
        # UTF-16 text without a byte-order mark: a NUL in every other byte (ASCII letters' high bytes)
        even, odd = head[0::2], head[1::2]
        for zeros, name in ((odd, "utf-16-le"), (even, "utf-16-be")):
            if len(head) >= 16 and zeros.count(0) > 0.9 * len(zeros) and (even if zeros is odd else odd).count(0) == 0:
                raise CorpusError(f"{path} looks like UTF-16 text without a byte-order mark: pass --encoding={name}")
        raise CorpusError(f"{path} looks like a binary file, not text")
    if decodes_as(path, "utf-8"):
        return "utf-8", "valid UTF-8"
    m = DECLARED.search(head)
    name = text_codec(m.group(1).decode("ascii")) if m else None  # a declaration is believed only
    if name in ("latin-1", "iso8859-1"):  # if the whole file decodes that way (mail often says us-ascii)
        return "cp1252", "declared ISO-8859-1, read as its superset cp1252"
    if name and name != "utf-8" and decodes_as(path, name):
        return name, "declared in the file"
    if decodes_as(path, "cp1252"):
        return "cp1252", "not UTF-8; no declared charset"
    return "latin-1", "not UTF-8, not cp1252"


class Progress:
    """A one-line progress bar on stderr (bytes read, MB/s, time left), redrawn at most twice a second,
    only when stderr is a terminal: logs and pipes get the summary line that close() returns instead."""

    def __init__(self, total_bytes, label="reading", enabled=True):
        self.total, self.label = max(1, total_bytes), label
        self.enabled = enabled and sys.stderr.isatty()
        self.t0 = self.shown = time.time()

    def update(self, done, force=False):
        now = time.time()
        if not self.enabled or (now - self.shown < 0.5 and not force):
            return
        self.shown = now
        rate = done / max(now - self.t0, 1e-6)
        eta = (self.total - done) / rate if rate > 0 else 0
        print(f"\r{self.label} [{min(done / self.total, 1):4.0%}] {done / 1e6:,.1f}/{self.total / 1e6:,.1f} MB "
              f"{rate / 1e6:5.1f} MB/s ETA {int(eta) // 60}:{int(eta) % 60:02d} ", end="", file=sys.stderr, flush=True)

    def close(self):
        self.update(self.total, force=True)
        if self.enabled:
            print(file=sys.stderr, flush=True)
        dt = time.time() - self.t0
        return f"{self.label}: {self.total / 1e6:,.1f} MB in {dt:.1f}s ({self.total / 1e6 / max(dt, 1e-6):.1f} MB/s)"


class Reader:
    """Documents (strings) from a list of sources, streamed. One pass:
        for doc in Reader(paths).documents(): ...
    A .txt file is one document (cut into ~4M-character pieces if longer), a .jsonl line or a
    .parquet row is one. `files` records, per file, the encoding chosen and whether a Gutenberg
    header was stripped. The text is returned as it is decoded (CRLF and CR line ends read as "\n"):
    cleaning is the caller's."""

    def __init__(self, sources, encoding="auto", strip_gutenberg=True, progress=True, label="reading"):
        self.skipped = []  # files of a folder that are not .txt/.jsonl/.parquet (a .csv, a .json, a .pdf)
        self.paths = [p for s in sources for p in list_files(s, self.skipped)]
        self.encoding, self.strip, self.progress, self.label = encoding, strip_gutenberg, progress, label
        self.files = {}  # path -> {"encoding", "why", "gutenberg"}
        self.summary = ""  # the last pass's throughput line
        self.total_bytes = sum(os.path.getsize(p) for p in self.paths)

    def documents(self):
        bar = Progress(self.total_bytes, self.label, self.progress)
        done = 0
        for path in self.paths:
            if path not in self.files:
                name, why = detect_encoding(path, self.encoding)
                self.files[path] = {"encoding": name, "why": why, "gutenberg": False}
            info = self.files[path]
            f, raw = open_binary(path)
            with raw:
                tick = lambda: bar.update(done + raw.tell())  # bytes read so far, all files
                try:
                    kind = kind_of(path)
                    if kind == "parquet":
                        yield from self._parquet(path, f, tick)
                    else:
                        # newline=None: CRLF and old Mac CR line ends are read as "\n", so that line-based
                        # markers and cuts work on every file
                        text = io.TextIOWrapper(f, encoding=info["encoding"], newline=None)
                        if kind == "jsonl":
                            yield from self._jsonl(path, text, tick)
                        else:
                            for block in self._txt(path, text, info):
                                tick()
                                yield block
                except UnicodeError as e:  # UnicodeDecodeError, or UTF-16/32 without a byte-order mark
                    why = e.reason if isinstance(e, UnicodeDecodeError) else str(e)
                    hint = " (e.g. utf-16-le or utf-16-be)" if info["encoding"].startswith(("utf-16", "utf-32")) else ""
                    raise CorpusError(f"{path} cannot be decoded as {info['encoding']} ({why}); "
                                      f"try another --encoding{hint}")
                except (OSError, EOFError, zlib.error) as e:
                    raise CorpusError(f"cannot read {path}: {e}")
            done += os.path.getsize(path)
        self.summary = bar.close()

    def _txt(self, path, text, info):
        """Blocks of a text file that end at a line end. With strip_gutenberg, whatever lies outside
        START ... END markers (licence header and footer) is dropped, for every book in the file."""
        state = "head" if self.strip else "body"  # head: before a START (or after an END); book: inside one
        pending, seen = "", 0
        while True:
            chunk = text.read(BLOCK_CHARS)
            pending += chunk
            seen += len(chunk)
            out = []
            while True:
                if state == "head":
                    m = GUTENBERG_START.search(pending)
                    if m:  # drop everything up to the end of the START line
                        info["gutenberg"], state = True, "book"
                        nl = pending.find("\n", m.end())
                        pending = pending[nl + 1:] if nl >= 0 else ""
                        continue
                    if info["gutenberg"]:  # after an END: the licence footer, dropped (a partial line kept)
                        pending = pending[pending.rfind("\n") + 1:][-1000:]
                    elif seen >= HEAD_BYTES or not chunk:  # no marker near the start: an ordinary text
                        state = "body"
                elif state == "book":
                    m = GUTENBERG_END.search(pending)
                    if m:
                        book = pending[:m.start()]
                        last = [e.start() for e in GUTENBERG_LAST_LINE.finditer(book, max(0, len(book) - 1000))]
                        out.append(book[:last[-1]] if last else book)  # its closing line goes too
                        pending, state = pending[m.end():], "head"
                        continue
                break
            if state != "head":  # emit up to the last line end (all of it at the end of the file)
                cut = len(pending) if not chunk else pending.rfind("\n") + 1
                if cut == 0 and len(pending) >= BLOCK_CHARS:  # no line end in a whole block (one long line):
                    cut = pending.rfind(" ") + 1 or len(pending)  # cut at a space, else anywhere
                out.append(pending[:cut])
                pending = pending[cut:]
            if "".join(out):
                yield "".join(out)
            if not chunk:
                break
        if state == "book":
            raise CorpusError(f"{path} has a Project Gutenberg START marker but no END marker "
                              f"(a truncated file?); fix it or pass --strip_gutenberg=False")

    def _jsonl(self, path, text, tick):
        for n, obj in json_lines(text):
            if obj is None:
                raise CorpusError(f"{path} line {n}: not valid JSON")
            if isinstance(obj, dict) and "text" in obj and obj["text"] is None:  # a missing value: skipped,
                continue  # as a null in a parquet file's text column is
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                found = f" (keys found: {', '.join(map(str, list(obj)[:10]))})" if isinstance(obj, dict) else ""
                raise CorpusError(f"{path} line {n}: expected an object with a string 'text' field{found}")
            if n % 1000 == 0:
                tick()
            yield obj["text"]

    def _parquet(self, path, f, tick):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise CorpusError(f"reading {path} needs pyarrow (pip install pyarrow)")
        try:
            pf = pq.ParquetFile(f)
            if "text" not in pf.schema_arrow.names:
                raise CorpusError(f"{path} has no 'text' column (columns: {', '.join(pf.schema_arrow.names)})")
            for batch in pf.iter_batches(batch_size=1024, columns=["text"]):
                tick()
                for t in batch.column(0).to_pylist():
                    if t is not None and not isinstance(t, str):  # as in .jsonl: not text is an error
                        raise CorpusError(f"{path}: the 'text' column holds {type(t).__name__} values, not strings")
                    if t is not None:  # a missing value (null) is skipped
                        yield t
        except CorpusError:
            raise
        except Exception as e:  # pyarrow raises its own types for damaged files
            raise CorpusError(f"{path} is not a readable parquet file ({type(e).__name__})")

    def describe(self, limit=20):
        """What was chosen per file: one line each for up to `limit` files, else one line per
        (encoding, reason) group with its count and first file."""
        def line(info):
            g = ", Project Gutenberg header/footer stripped" if info["gutenberg"] else ""
            return f"{info['encoding']} ({info['why']}){g}"
        if len(self.files) <= limit:
            return "\n".join(f"  {path}: {line(info)}" for path, info in self.files.items())
        groups = {}
        for path, info in self.files.items():
            groups.setdefault(line(info), []).append(path)
        return "\n".join(f"  {len(paths)} files: {k} (e.g. {paths[0]})" for k, paths in groups.items())


def read_text(path, encoding="auto", strip_gutenberg=True):
    """A whole text file (or all documents of a .jsonl/.parquet, separated by blank lines) as one
    string, read and cleaned of markers exactly as prepare.py reads it. Returns (text, Reader)."""
    reader = Reader([path], encoding, strip_gutenberg, progress=False)
    docs = list(reader.documents())
    return ("" if kind_of(path) == "txt" else "\n\n").join(docs), reader
