"""
Turn raw text into what train.py reads: data/<dataset>/{train.bin, val.bin, meta.json}.

    python prepare.py                                   # the shipped Spanish corpus (topic texts,
                                                        # 14 public-domain books, opinions)
    python prepare.py --input=my.txt --dataset=mine     # a file or folder: .txt, .jsonl ("text" field),
                                                        # .parquet ("text" column), each also .gz;
                                                        # several, comma-separated
    python prepare.py --input=books/ --encoding=latin-1 # force an encoding (default: auto, per file)
    python prepare.py --dataset=shakespeare_char        # the named download (cached, sha256-checked)
    python prepare.py --tokenizer=bpe --vocab_size=2048 # byte-level BPE instead of characters

Reading (corpus.py): the encoding is detected per file and printed, Project Gutenberg licence
headers and footers are stripped, and everything streams, so a corpus larger than RAM prepares in
bounded memory: one pass collects the characters, a second encodes them straight into the .bin files.

Two tokenizers (tokenizer.py). --tokenizer=char: the special tokens, then every character of the
corpus, of the shipped task data (instructions, sentiment) and of a small base set (ASCII and
Spanish letters), so that finetuning on the shipped data never meets <unk>. --tokenizer=bpe
--vocab_size=N: byte-level BPE whose N - 262 merges are learned from the corpus in pass 1 (the task
data is not used: its test splits must stay unseen; bytes cover any text anyway). Each document (a .txt file, or a piece of at most
~4M characters of a longer one; a .jsonl line; a .parquet row) is split contiguously: its first 90%
goes to train, its last 10% to val (for a single small file this is the classic split). Except in a
corpus of many short documents (reviews, one-line records): a document under 2,000 characters is not
cut, and whole ones go to val in turn, so that val holds real sentences rather than each one's last word.
"""
import glob
import hashlib
import json
import os
import sys
import time
import urllib.request
from collections import Counter

from configurator import configure, fail
from corpus import CorpusError, Reader
from fileio import CheckpointError, atomic_write, atomic_write_text, prepare_out_dir
from tokenizer import BASE_CHARS, BYTE0, BPETokenizer, CharTokenizer, clean_text

# -----------------------------------------------------------------------------
dataset = "es"  # output folder data/<dataset>/; also picks the default source
input = ""  # files or folders, comma-separated; '' = the dataset's default
encoding = "auto"  # auto (per file: BOM, UTF-8, declared charset, cp1252) or a codec name: utf-8, latin-1, ...
strip_gutenberg = True  # drop Project Gutenberg licence headers/footers (when the START/END markers are there)
lowercase = False
tokenizer = "char"  # char (one id per character) or bpe (byte-level BPE, learned here)
vocab_size = 4096  # bpe only: 6 specials + 256 bytes + the merges to learn
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
        there = (f"{path} is there but is not the expected file (sha256 differs); replace it" if os.path.isfile(path)
                 else f"Place the file at {path} yourself")
        fail(f"could not download {name} ({type(e).__name__}: {e}). Offline? {there}, "
             f"or run: python prepare.py --input=/path/to/input.txt --dataset={name}")
    if len(raw) != size or hashlib.sha256(raw).hexdigest() != sha:
        fail(f"downloaded {name} does not match the expected size/sha256 (got {len(raw)} bytes); not saved")
    try:
        prepare_out_dir(out_dir)
        atomic_write(path, lambda f: f.write(raw))
    except CheckpointError as e:
        fail(e)
    return path


out_dir = os.path.join(data_root, dataset)
if not dataset.strip() or os.path.basename(os.path.normpath(dataset)) in ("", ".", ".."):
    fail(f"--dataset must name a folder under {data_root}/ (got '{dataset}')")
if input:
    sources = list(dict.fromkeys(s.strip() for s in input.split(",") if s.strip()))  # each once, in order
    if not sources:
        fail(f"--input names no file or folder (got '{input}')")
elif dataset in DOWNLOADS:
    sources = [download(dataset, out_dir)]
elif dataset == "es":
    sources = [os.path.join(HERE, s) for s in SHIPPED]
else:
    fail(f"unknown dataset '{dataset}' with no --input (named downloads: {', '.join(DOWNLOADS)}; "
         f"or pass --input=FILE)")
if not 0 < val_fraction < 1:
    fail(f"--val_fraction must be between 0 and 1 (got {val_fraction})")
if tokenizer not in ("char", "bpe"):
    fail(f"unknown --tokenizer={tokenizer} (use char or bpe)")
MAX_VOCAB = 1 << 20  # far beyond what a model of this kit can use: an embedding row per entry
if tokenizer == "bpe" and not BYTE0 + 256 < vocab_size <= MAX_VOCAB:
    fail(f"--vocab_size={vocab_size} is out of range for bpe: at least {BYTE0 + 257} "
         f"({BYTE0} specials + 256 bytes + 1 merge), at most {MAX_VOCAB:,}")
SHORT_DOC, MIN_SHORT_DOCS = 2000, 20  # see the docstring: whole short documents go to val, in turn


def cut_at(n, whole, val_chars, seen):
    """Where a document of n characters is split: train gets [:cut], val [cut:]. whole: a short document
    is not cut; it goes to val while val holds less than val_fraction of the seen + n characters."""
    if whole and n < SHORT_DOC:
        return 0 if val_chars < val_fraction * (seen + n) else n
    return int(n * (1 - val_fraction))


t0 = time.time()
try:
    reader = Reader(sources, encoding, strip_gutenberg, progress,
                    label="pass 1/2: characters" if tokenizer == "char" else "pass 1/2: counting chunks")
    # pass 1: the character set or the chunk counts BPE learns from (and every decoding or marker
    # error, before anything is written)
    chars, chunks, n_chars, n_docs, n_short = set(), Counter(), 0, 0, 0
    n_val = {False: 0, True: 0}  # val characters as pass 2 will cut them: every document cut, or short ones whole
    for doc in reader.documents():
        doc = clean_text(doc, lowercase)
        if doc.strip():
            if tokenizer == "char":
                chars.update(doc)
            else:
                BPETokenizer.count_chunks(doc + "\n\n", chunks)
            n = len(doc) + 2  # with the blank line that pass 2 adds
            for whole in n_val:
                n_val[whole] += n - cut_at(n, whole, n_val[whole], n_chars + 2 * n_docs)
            n_chars, n_docs, n_short = n_chars + len(doc), n_docs + 1, n_short + (n < SHORT_DOC)
except CorpusError as e:
    fail(e)
whole_docs = n_short >= MIN_SHORT_DOCS  # enough short documents for val to get whole ones
n_val = n_val[whole_docs]
print(f"{len(reader.paths)} file(s), {reader.total_bytes / 1e6:,.1f} MB; {reader.summary}")
if reader.skipped:  # read only .txt, .jsonl, .parquet (and .gz of them): say what else the folders held
    names = ", ".join(os.path.basename(p) for p in reader.skipped[:5]) + (" …" if len(reader.skipped) > 5 else "")
    print(f"skipped {len(reader.skipped)} file(s) that are not .txt, .jsonl or .parquet: {names}")
print(reader.describe())
if not n_chars:
    fail(f"{', '.join(sources)} holds no text")
if n_val < 2 or n_chars + 2 * n_docs - n_val < 2:
    fail(f"corpus too small to split ({n_chars} characters)")

if tokenizer == "char":  # vocabulary: corpus + shipped task data + base characters
    task_texts = []
    for pattern in TASK_FILES:
        for path in sorted(glob.glob(os.path.join(HERE, pattern))):
            with open(path, encoding="utf-8") as f:
                task_texts.append(clean_text(f.read(), lowercase))
    tok = CharTokenizer.from_texts(["".join(chars)] + task_texts + [clean_text(BASE_CHARS, lowercase)])
else:
    t1 = time.time()
    print(f"learning {vocab_size - BYTE0 - 256:,} BPE merges from {len(chunks):,} distinct chunks")
    tok, made = BPETokenizer.train(chunks, vocab_size, log=lambda line: print(line, file=sys.stderr, flush=True))
    if len(tok) < vocab_size:
        fail(f"corpus too small for --vocab_size={vocab_size}: only {made:,} merges were possible (no pair "
             f"is left that occurs twice), so at most --vocab_size={len(tok)}")
    print(f"BPE: {made:,} merges in {time.time() - t1:.1f} s")
    del chunks
tok.lowercase = lowercase  # saved with it (state()): every script then lowercases what it encodes
bin_dtype = "uint16" if len(tok) <= 1 << 16 else "uint32"  # token files: 2 bytes per token while ids fit
try:
    prepare_out_dir(out_dir)
except CheckpointError as e:
    fail(e)


def encode_all(f_train, f_val):
    """Pass 2: encode every document and append its start to train, its end to val. Returns counts."""
    counts = {"train_tokens": 0, "val_tokens": 0, "train_bytes": 0, "val_bytes": 0}
    reader.label = "pass 2/2: encoding"
    val_chars, seen = 0, 0
    for doc in reader.documents():
        doc = clean_text(doc, lowercase)
        if not doc.strip():
            continue
        doc += "\n\n"  # a blank line between documents
        cut = cut_at(len(doc), whole_docs, val_chars, seen)
        val_chars, seen = val_chars + len(doc) - cut, seen + len(doc)
        for split, part, f in (("train", doc[:cut], f_train), ("val", doc[cut:], f_val)):
            ids = tok.encode_array(part).astype(bin_dtype)  # (n,) one id per character or BPE token
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
        **tok.state(), "vocab_size": len(tok), "dtype": bin_dtype, "lowercase": lowercase,
        "chars": n_chars, "documents": n_docs, **counts,
        "sources": [os.path.relpath(s, HERE) if s.startswith(HERE) else os.path.abspath(s) for s in sources],
        "files": len(reader.files),
        "encodings": {e: sum(i["encoding"] == e for i in reader.files.values())
                      for e in sorted({i["encoding"] for i in reader.files.values()})},
    }
    # one key per line (a BPE merge list stays on its line rather than one number per line)
    atomic_write_text(os.path.join(out_dir, "meta.json"), "{\n" + ",\n".join(
        f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in meta.items()) + "\n}\n")
except (CheckpointError, CorpusError) as e:
    fail(e)
print(reader.summary)
print(f"{n_docs:,} documents, {n_chars:,} characters, {tok.kind} vocabulary {len(tok):,}, {time.time() - t0:.1f} s")
print(f"train {counts['train_tokens']:,} tokens, val {counts['val_tokens']:,} tokens "
      f"({n_chars / (counts['train_tokens'] + counts['val_tokens']):.2f} characters per token) -> {out_dir}/")
