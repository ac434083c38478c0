"""
Turn raw text into what train.py reads: data/<dataset>/{train.bin, val.bin, meta.json}.

    python prepare.py                                   # the shipped Spanish corpus (topic texts,
                                                        # 14 public-domain books, opinions)
    python prepare.py --input=my.txt --dataset=mine     # a file or folder: .txt, .jsonl ("text" field),
                                                        # .parquet ("text" column), each also .gz;
                                                        # several, comma-separated
    python prepare.py --input=books/ --encoding=latin-1 # force an encoding (default: auto, per file)
    python prepare.py --dataset=shakespeare_char        # the named download (cached, sha256-checked)

Reading (corpus.py): the encoding is detected per file and printed, Project Gutenberg licence
headers and footers are stripped, and everything streams, so a corpus larger than RAM prepares in
bounded memory: one pass collects the characters, a second encodes them straight into the .bin files.

The vocabulary is the special tokens, then every character of the corpus, of the shipped task
data (instructions, sentiment) and of a small base set (ASCII and Spanish letters), so that
finetuning on the shipped data never meets <unk>. Each document (a .txt file, or a piece of at most
~4M characters of a longer one; a .jsonl line; a .parquet row) is split contiguously: its first 90%
goes to train, its last 10% to val (for a single small file this is the classic split).
"""
import glob
import hashlib
import json
import os
import time
import urllib.request

from configurator import configure, fail
from corpus import CorpusError, Reader
from fileio import CheckpointError, atomic_write, atomic_write_text, prepare_out_dir
from tokenizer import BASE_CHARS, CharTokenizer, clean_text

# -----------------------------------------------------------------------------
dataset = "es"  # output folder data/<dataset>/; also picks the default source
input = ""  # files or folders, comma-separated; '' = the dataset's default
encoding = "auto"  # auto (per file: BOM, UTF-8, declared charset, cp1252) or a codec name: utf-8, latin-1, ...
strip_gutenberg = True  # drop Project Gutenberg licence headers/footers (when the START/END markers are there)
lowercase = False
val_fraction = 0.1
progress = True  # a progress bar (MB/s, time left) on stderr
download_url = ""  # override the named download's URL (e.g. a file:// mirror)
data_root = "data"
# -----------------------------------------------------------------------------
config = configure(globals())

HERE = os.path.dirname(os.path.abspath(__file__))
# the default corpus: topic texts and opinions written for the project, and 14 public-domain books
# (data/es/heldout/ holds a 15th, never trained on: evaluate.py scores unseen prose on it)
SHIPPED = ["data/es/corpus", "data/es/reviews", "data/es/books"]
TASK_FILES = ["data/es/instructions/*.jsonl", "data/es/sentiment/*.tsv"]
DOWNLOADS = {  # name -> (url, size in bytes, sha256)
    "shakespeare_char": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        1115394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}


def download(name, out_dir):
    """Fetch a named corpus once into out_dir/input.txt, checking its size and sha256."""
    url, size, sha = DOWNLOADS[name]
    url = download_url or url
    path = os.path.join(out_dir, "input.txt")
    if os.path.isfile(path) and hashlib.sha256(open(path, "rb").read()).hexdigest() == sha:
        print(f"using cached {path}")
        return path
    print(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            raw = r.read()
    except Exception as e:
        fail(f"could not download {name} ({type(e).__name__}: {e}). Offline? Place the file at "
             f"{path} yourself, or run: python prepare.py --input=/path/to/input.txt --dataset={name}")
    if len(raw) != size or hashlib.sha256(raw).hexdigest() != sha:
        fail(f"downloaded {name} does not match the expected size/sha256 (got {len(raw)} bytes); not saved")
    try:
        prepare_out_dir(out_dir)
        atomic_write(path, lambda f: f.write(raw))
    except CheckpointError as e:
        fail(e)
    return path


out_dir = os.path.join(data_root, dataset)
if input:
    sources = [s.strip() for s in input.split(",") if s.strip()]
elif dataset in DOWNLOADS:
    sources = [download(dataset, out_dir)]
elif dataset == "es":
    sources = [os.path.join(HERE, s) for s in SHIPPED]
else:
    fail(f"unknown dataset '{dataset}' with no --input (named downloads: {', '.join(DOWNLOADS)}; "
         f"or pass --input=FILE)")
if not 0 < val_fraction < 1:
    fail(f"--val_fraction must be between 0 and 1 (got {val_fraction})")
t0 = time.time()
try:
    reader = Reader(sources, encoding, strip_gutenberg, progress, label="pass 1/2: characters")
    # pass 1: the character set (and every decoding or marker error, before anything is written)
    chars, n_chars, n_docs, n_val = set(), 0, 0, 0
    for doc in reader.documents():
        doc = clean_text(doc, lowercase)
        if doc.strip():
            chars.update(doc)
            n_chars, n_docs = n_chars + len(doc), n_docs + 1
            n_val += len(doc) + 2 - int((len(doc) + 2) * (1 - val_fraction))  # as pass 2 will cut it
except CorpusError as e:
    fail(e)
print(f"{len(reader.paths)} file(s), {reader.total_bytes / 1e6:,.1f} MB; {reader.summary}")
print(reader.describe())
if not n_chars:
    fail(f"{', '.join(sources)} holds no text")
if n_val < 2 or n_chars + 2 * n_docs - n_val < 2:
    fail(f"corpus too small to split ({n_chars} characters)")

# vocabulary: corpus + shipped task data + base characters
task_texts = []
for pattern in TASK_FILES:
    for path in sorted(glob.glob(os.path.join(HERE, pattern))):
        with open(path, encoding="utf-8") as f:
            task_texts.append(clean_text(f.read(), lowercase))
tok = CharTokenizer.from_texts(["".join(chars)] + task_texts + [clean_text(BASE_CHARS, lowercase)])
if len(tok) > 65535:
    fail(f"vocabulary of {len(tok)} characters does not fit uint16 token files")
try:
    prepare_out_dir(out_dir)
except CheckpointError as e:
    fail(e)


def encode_all(f_train, f_val):
    """Pass 2: encode every document and append its start to train, its end to val. Returns counts."""
    counts = {"train_tokens": 0, "val_tokens": 0, "train_bytes": 0, "val_bytes": 0}
    reader.label = "pass 2/2: encoding"
    for doc in reader.documents():
        doc = clean_text(doc, lowercase)
        if not doc.strip():
            continue
        doc += "\n\n"  # a blank line between documents
        cut = int(len(doc) * (1 - val_fraction))
        for split, part, f in (("train", doc[:cut], f_train), ("val", doc[cut:], f_val)):
            ids = tok.encode_array(part)  # (n,) uint16, one id per character
            f.write(ids.tobytes())
            counts[f"{split}_tokens"] += len(ids)
            counts[f"{split}_bytes"] += len(part.encode("utf-8"))
    return counts


# the .bin files are written through .tmp files (kept only if all went well); meta.json last:
# train.py checks the .bin sizes against it, so a half-done prepare is caught
counts = {}
try:
    atomic_write(os.path.join(out_dir, "train.bin"), lambda ft: atomic_write(
        os.path.join(out_dir, "val.bin"), lambda fv: counts.update(encode_all(ft, fv))))
    meta = {
        "vocab": tok.vocab, "vocab_size": len(tok), "dtype": "uint16", "lowercase": lowercase,
        "chars": n_chars, "documents": n_docs, **counts,
        "sources": [os.path.relpath(s, HERE) if s.startswith(HERE) else os.path.abspath(s) for s in sources],
        "files": len(reader.files),
        "encodings": {e: sum(i["encoding"] == e for i in reader.files.values())
                      for e in sorted({i["encoding"] for i in reader.files.values()})},
    }
    atomic_write_text(os.path.join(out_dir, "meta.json"), json.dumps(meta, ensure_ascii=False, indent=1))
except (CheckpointError, CorpusError) as e:
    fail(e)
print(reader.summary)
print(f"{n_docs:,} documents, {n_chars:,} characters, vocabulary {len(tok)}, {time.time() - t0:.1f} s")
print(f"train {counts['train_tokens']:,} tokens, val {counts['val_tokens']:,} tokens -> {out_dir}/")
