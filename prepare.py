"""
Turn raw text into what train.py reads: data/<dataset>/{train.bin, val.bin, meta.json}.

    python prepare.py                                   # the shipped Spanish corpus (data/es/corpus/)
    python prepare.py --input=my.txt --dataset=mine     # .txt, .jsonl ("text" field), .parquet
                                                        # ("text" column) or a folder of .txt files
    python prepare.py --dataset=shakespeare_char        # the named download (cached, sha256-checked)

The vocabulary is the special tokens, then every character of the corpus, of the shipped task
data (instructions, sentiment) and of a small base set (ASCII and Spanish letters), so that
finetuning on the shipped data never meets <unk>. Each document is split contiguously: its
first 90% goes to train, its last 10% to val (for a single file this is the classic split).
"""
import glob
import hashlib
import json
import os
import urllib.request

import numpy as np

from fileio import CheckpointError, atomic_write, atomic_write_text, prepare_out_dir
from configurator import configure, fail, jsonl_objects
from tokenizer import BASE_CHARS, CharTokenizer, clean_text

# -----------------------------------------------------------------------------
dataset = "es"  # output folder data/<dataset>/; also picks the default source
input = ""  # a .txt / .jsonl / .parquet file or a folder of .txt files; '' = the dataset's default
lowercase = False
val_fraction = 0.1
download_url = ""  # override the named download's URL (e.g. a file:// mirror)
data_root = "data"
# -----------------------------------------------------------------------------
config = configure(globals())

SHIPPED_CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "es", "corpus")
TASK_FILES = ["data/es/instructions/*.jsonl", "data/es/sentiment/*.tsv"]
DOWNLOADS = {  # name -> (url, size in bytes, sha256)
    "shakespeare_char": (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        1115394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
}


def read_text_file(path):
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw:
        fail(f"{path} looks like a binary file, not text")
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError as e:
        fail(f"{path} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8 first")


def read_source(path):
    """Return (list of documents, raw bytes for the checksum) from a file or a folder."""
    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.txt"), recursive=True))
        if not files:
            fail(f"folder {path} holds no .txt files")
        texts, raws = zip(*(read_text_file(f) for f in files))
        return list(texts), b"".join(raws)
    if not os.path.isfile(path):
        fail(f"input not found: {path}")
    if path.endswith(".jsonl"):
        text, raw = read_text_file(path)
        docs = []
        for n, obj in jsonl_objects(path, text):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                fail(f"{path} line {n}: expected an object with a string 'text' field")
            docs.append(obj["text"])
        return docs, raw
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq  # pyarrow comes with streamlit
        try:
            table = pq.read_table(path)
        except Exception as e:
            fail(f"{path} is not a readable parquet file: {type(e).__name__}")
        if "text" not in table.column_names:
            fail(f"{path} has no 'text' column (columns: {', '.join(table.column_names)})")
        with open(path, "rb") as f:
            raw = f.read()
        return [t for t in table.column("text").to_pylist() if isinstance(t, str)], raw
    text, raw = read_text_file(path)
    return [text], raw


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
    source = input
elif dataset in DOWNLOADS:
    source = download(dataset, out_dir)
elif dataset == "es":
    source = SHIPPED_CORPUS
else:
    fail(f"unknown dataset '{dataset}' with no --input (named downloads: {', '.join(DOWNLOADS)}; "
         f"or pass --input=FILE)")
docs, raw = read_source(source)
docs = [clean_text(d, lowercase) for d in docs]
docs = [d for d in docs if d.strip()]
n_chars = sum(len(d) for d in docs)
if n_chars == 0:
    fail(f"{source} holds no text")

# vocabulary: corpus + shipped task data + base characters
task_texts = []
for pattern in TASK_FILES:
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), pattern))):
        with open(path, encoding="utf-8") as f:
            task_texts.append(clean_text(f.read(), lowercase))
tok = CharTokenizer.from_texts(docs + task_texts + [clean_text(BASE_CHARS, lowercase)])
if len(tok) > 65535:
    fail(f"vocabulary of {len(tok)} characters does not fit uint16 token files")

# contiguous split inside each document: the start of each for train, its end for val
train_ids, val_ids = [], []
for d in docs:
    ids = tok.encode(d + "\n\n")  # a blank line between documents
    cut = int(len(ids) * (1 - val_fraction))
    train_ids += ids[:cut]
    val_ids += ids[cut:]
if len(val_ids) < 2 or len(train_ids) < 2:
    fail(f"corpus too small to split ({n_chars} characters)")

try:
    prepare_out_dir(out_dir)
except CheckpointError as e:
    fail(e)
meta = {
    "vocab": tok.vocab, "vocab_size": len(tok), "dtype": "uint16", "lowercase": lowercase,
    "chars": n_chars, "documents": len(docs), "train_tokens": len(train_ids), "val_tokens": len(val_ids),
    "source": os.path.abspath(source) if source != SHIPPED_CORPUS else "data/es/corpus (shipped)",
    "source_sha256": hashlib.sha256(raw).hexdigest(),
}
try:  # meta.json last: train.py checks the .bin sizes against it, so a half-done prepare is caught
    for name, ids in (("train", train_ids), ("val", val_ids)):
        atomic_write(os.path.join(out_dir, f"{name}.bin"), lambda f: f.write(np.array(ids, dtype=np.uint16).tobytes()))
    atomic_write_text(os.path.join(out_dir, "meta.json"), json.dumps(meta, ensure_ascii=False, indent=1))
except CheckpointError as e:
    fail(e)
print(f"{source}: {len(docs)} documents, {n_chars:,} characters, vocabulary {len(tok)}")
print(f"train {len(train_ids):,} tokens, val {len(val_ids):,} tokens -> {out_dir}/")
