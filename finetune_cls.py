"""
Finetune the pretrained GPT as a text classifier (the shipped task: reviews, positivo / negativo).

    python finetune_cls.py config/finetune_cls.py                  # shipped sentiment data, pretrained/es-char-6x256
    python finetune_cls.py --data=reviews.csv --text_col=review --label_col=stars   # one file: split here
    python finetune_cls.py --freeze=last_n --unfreeze_last=1 --out_dir=out-cls-l1
    python finetune_cls.py --init_from=scratch --freeze=none       # the control: out/'s network, random weights
    python finetune_cls.py --eval_only=True --out_dir=out-cls      # the test table of a saved classifier
    python finetune_cls.py --out_dir=out-cls --predict="Me encantó, volveré seguro."
    python finetune_cls.py --out_dir=out-cls --predict_file=reviews.txt    # one text per line

How it works: each text goes through the GPT, right-padded with <pad> to the longest text of its
batch (a text longer than block_size in windows half a block apart, each token counted once: windows()).
One vector per text is read from the hidden states (pool='last': the last real token's final
state; 'mean': the mean of the final states over the real tokens; 'layers': that mean for every
block's output and the final states, side by side; 'layers+max', the default: those, and each MLP
hidden unit's largest activation over the text) and a linear head turns it into one score per label. With the
backbone frozen those vectors never change, so they are computed once and only the head trains.

The best model on val (macro-F1 or accuracy) is written atomically to out_dir/ckpt.pt (kind 'cls':
the GPT's weights plus head.weight/head.bias, the label names, the pooling), then scored on the
test split beside the majority-class baseline. out_dir/log.jsonl has one line per evaluation.

The file reads top to bottom: the settings, the data (read_table, load_data), the Classifier, the
scores, then the program (--predict / --predict_file, training or --eval_only, the test table).
`import finetune_cls` (the tests do) only defines the pieces; the program runs as a script.
"""
import csv
import io
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

from checkpoint import (CheckpointError, Staged, atomic_write_text, autocast, grad_scaler, load_checkpoint,
                        model_from_checkpoint, pad_batch, param_groups, pick_device, prepare_out_dir, resolve_dtype,
                        save_checkpoint, scaled_step, windows)
import configurator
from configurator import catch_stop_signals, configure, fail, jsonl_objects, stop_exit_code
from corpus import CorpusError, detect_encoding
from model import GPT, GPTConfig
from tfidf import tfidf_baseline
from tokenizer import clean_text, load_tokenizer

# -----------------------------------------------------------------------------
# I/O
init_from = "out"  # a pretrained out dir (its ckpt.pt), or 'scratch': the same network with random weights
arch_from = "out"  # with init_from='scratch': the out dir whose architecture and vocabulary are copied
out_dir = "out-cls"
overwrite = False  # allow replacing a checkpoint of another task (e.g. a pretrained model) in out_dir
data = "data/es/sentiment"  # a folder with train/val/test .tsv/.csv/.jsonl files, or one such file
text_col = "text"
label_col = "label"
val_fraction = 0.1  # a single data file is split here (stratified, seeded): 70/10/20 by default
test_fraction = 0.2
eval_only = False  # score out_dir's classifier on the test split of data, without training
predict = ""  # a text to classify with out_dir's classifier: prints the label and the probabilities
predict_file = ""  # a file of texts to classify, one per line
# classifier
pool = "layers+max"  # 'layers': the mean over the real tokens of every block's output and of the final states,
# side by side; 'layers+max': those, and each MLP hidden unit's largest activation over the text (the best for
# the linear probe, README); 'mean': the mean of the final states only; 'last': the last real token's state
freeze = "backbone"  # 'backbone': only the head trains (a linear probe, below); 'last_n': also the last
# unfreeze_last blocks and ln_f; 'none': everything
unfreeze_last = 1
class_weights = False  # weight the loss by inverse class frequency (imbalanced data)
probe_l2 = 0.0  # freeze=backbone: the L2 penalty of the probe; 0 = chosen by 5-fold cross-validation on train
train_labels = 0  # train on only N labelled texts, an equal share per label, drawn with `seed` (the
# learning curve of the README); 0 = all. val and test stay whole
# training: AdamW at a constant learning rate, early stopping on the val metric
max_iters = 600
batch_size = 32
learning_rate = 1e-3  # the head's, and the backbone's unless backbone_lr is set
backbone_lr = 0.0  # learning rate of the unfrozen backbone weights; 0 = learning_rate
weight_decay = 0.01
grad_clip = 1.0
eval_interval = 25
metric = "macro_f1"  # picks the best checkpoint and drives early stopping: 'macro_f1' or 'accuracy'
patience = 6  # stop after this many evaluations without improvement; 0 = never stop early
# system
device = "auto"  # auto (cuda > mps > cpu), cpu, cuda, mps
dtype = "auto"  # auto (bf16 on capable GPUs, fp32 elsewhere), float32, bfloat16, float16
seed = 1337
# -----------------------------------------------------------------------------
config = configure(globals(), None if __name__ == "__main__" else [])  # imported (tests): the defaults

# data ------------------------------------------------------------------------
SPLITS = ("train", "val", "test")
EXTS = (".tsv", ".csv", ".jsonl")
POOLS = ("last", "mean", "layers", "layers+max")


def prepare_text(text):
    # the same cleaning as the pretraining corpus; outer whitespace dropped, so that the 'last'
    # token is the text's own last character and not a stray space or newline
    return clean_text(str(text)).strip()


def read_file_text(path, note=None):
    """A whole file's text, read as prepare.py reads text: UTF-8 (with or without a byte-order mark), UTF-16,
    or else the declared encoding or the cp1252 fallback (spreadsheets export those), said on `note`."""
    codec = "?"
    try:
        codec, why = detect_encoding(path)
        with open(path, encoding="utf-8-sig" if codec == "utf-8" else codec) as f:  # -sig: drops a BOM
            raw = f.read()
    except CorpusError as e:
        fail(e)
    except (OSError, UnicodeError) as e:
        fail(f"cannot read {path} as {codec} text: {e}")
    if codec not in ("utf-8", "utf-8-sig"):
        print(f"note: {path}: read as {codec} ({why})", file=note or sys.stdout)
    return raw


def read_table(path, text_col, label_col):
    """(texts, labels) from a .tsv/.csv/.jsonl file with the columns text_col and label_col."""
    if not os.path.isfile(path):
        fail(f"data file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTS:
        fail(f"{path}: unsupported file type '{ext}' (use .tsv, .csv or .jsonl)")
    raw = read_file_text(path)
    if not raw.strip():
        fail(f"{path} is empty")
    if ext == ".jsonl":
        rows = list(jsonl_objects(path, raw))
        for n, obj in rows:
            if not isinstance(obj, dict):
                fail(f"{path} line {n}: expected a JSON object like {{\"{text_col}\": ..., \"{label_col}\": ...}}")
        columns = list(dict.fromkeys(k for _, obj in rows for k in obj))  # every key, in order of appearance
    else:
        # a .tsv has no quoting: a text may start with '"' (a quotation) and must stay one row; a .csv
        # follows the CSV rules (a text holding a comma is written in quotes)
        delimiter = "\t" if ext == ".tsv" else ","
        header = raw.lstrip("\ufeff").split("\n", 1)[0]
        if ext == ".csv" and ";" in header and "," not in header:  # a spreadsheet where the decimal mark is a
            delimiter = ";"  # comma (Spain, most of Latin America) exports CSV with semicolons
            print(f"note: {path}: the header has semicolons and no commas, read as semicolon-separated")
        reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter=delimiter,
                                quoting=csv.QUOTE_NONE if ext == ".tsv" else csv.QUOTE_MINIMAL)
        columns = [c for c in reader.fieldnames or [] if c is not None]
        rows = [(reader.line_num, row) for row in reader]
        # more fields than the header: an unquoted comma in a .csv text (a tab in a .tsv one) would make
        # the rest of the text the label, one new label per such row
        extra = [n for n, row in rows if None in row]
        if extra:
            sep = f"a '{delimiter}' (write such texts in double quotes)" if ext == ".csv" else "a tab"
            fail(f"{path}: more fields than the header's {len(columns)} on {len(extra)} line(s): "
                 f"{', '.join(map(str, extra[:5]))}{' …' if len(extra) > 5 else ''}. A text holding {sep}?")
    for col, flag in ((text_col, "text_col"), (label_col, "label_col")):
        if col not in columns:
            fail(f"{path} has no column '{col}' (columns found: {', '.join(map(str, columns)) or 'none'}); "
                 f"name the right one with --{flag}=...")
    if not rows:
        fail(f"{path} has a header but no rows")
    texts, labels = [], []
    for n, row in rows:
        label = row.get(label_col)
        for value, col in ((label, label_col), (row.get(text_col), text_col)):
            if isinstance(value, (list, dict)):  # (JSONL) a nested value is no text: refused, not str()-ed
                fail(f"{path} line {n}: the column '{col}' holds a JSON {type(value).__name__}, not a text")
        if label is None:
            label = ""
        elif isinstance(label, bool):  # JSON true / false: the words as written
            label = json.dumps(label)
        elif isinstance(label, float) and label.is_integer():  # JSON 1.0 is the label 1, not another one
            label = int(label)
        label = prepare_text(label)  # cleaned like the texts: 'política' typed on a Mac (NFD) is one label
        if not label:
            fail(f"{path} line {n}: empty value in the label column '{label_col}'")
        text = prepare_text(row.get(text_col) or "")
        if text:  # an empty text has nothing to classify: skipped
            texts.append(text)
            labels.append(label)
    if len(texts) < len(rows):
        print(f"note: {path}: {len(rows) - len(texts)} rows with an empty text skipped")
    if not texts:
        fail(f"{path} holds no texts in the column '{text_col}'")
    return texts, labels


def stratified_split(texts, labels, val_fraction, test_fraction, seed):
    """Split one file label by label, so every split keeps the label proportions; seeded."""
    rng = random.Random(seed)
    parts = {s: [] for s in SPLITS}
    for label in sorted(set(labels)):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        rng.shuffle(idx)
        n_test, n_val = round(len(idx) * test_fraction), round(len(idx) * val_fraction)
        parts["test"] += idx[:n_test]
        parts["val"] += idx[n_test:n_test + n_val]
        parts["train"] += idx[n_test + n_val:]
    return {s: ([texts[i] for i in sorted(ix)], [labels[i] for i in sorted(ix)]) for s, ix in parts.items()}


def balanced_subset(texts, labels, n, seed):
    """n of the (texts, labels), n // K per label (as many as there are, if fewer), drawn at random."""
    rng = random.Random(seed)
    names = sorted(set(labels))
    keep = []
    for name in names:
        rows = [i for i, lab in enumerate(labels) if lab == name]
        keep += rng.sample(rows, min(len(rows), n // len(names)))
    keep.sort()
    return [texts[i] for i in keep], [labels[i] for i in keep]


def load_data(path, text_col, label_col, val_fraction, test_fraction, seed, splits=SPLITS):
    """{split: (texts, labels)} from a folder of split files, or from one file split here."""
    if os.path.isdir(path):
        out = {}
        for s in splits:
            files = [os.path.join(path, s + e) for e in EXTS if os.path.isfile(os.path.join(path, s + e))]
            if not files:
                fail(f"{path}/ has no {s}.tsv, {s}.csv or {s}.jsonl (a data folder needs train, val and "
                     f"test files; or pass a single file to be split)")
            out[s] = read_table(files[0], text_col, label_col)
        return out
    texts, labels = read_table(path, text_col, label_col)
    if len(set(labels)) < 2:
        fail(f"only one label ('{labels[0]}') in {path}: a classifier needs at least two")
    out = stratified_split(texts, labels, val_fraction, test_fraction, seed)
    empty = [s for s in splits if not out[s][0]]  # the first one named: too few texts for its fraction
    if empty:
        fail(f"the {empty[0]} split of {path} is empty ({len(texts)} texts); use more data or a larger "
             f"--{empty[0]}_fraction")
    return out


def check_labels(split_labels, known, where):
    unknown = sorted(set(split_labels) - set(known))
    if unknown:
        fail(f"{where} has labels the classifier does not know: {', '.join(map(repr, unknown[:5]))} "
             f"(known: {', '.join(known)})")


def pad(seqs, pad_id, device):
    """Right-pad id lists with <pad> to the longest of them: (B, T) ids and (B,) lengths."""
    return pad_batch(seqs, pad_id).to(device), torch.tensor([len(s) for s in seqs], device=device)


# model -----------------------------------------------------------------------
class Classifier(nn.Module):
    """A GPT backbone, a pooling ('last' | 'mean' | 'layers' | 'layers+max') and a linear head: one score
    per label and text."""

    def __init__(self, backbone, n_labels, pool="layers+max", whole=True):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got '{pool}'")
        # whole: a text longer than block_size is read in windows (windows()); otherwise as its last block_size
        # tokens. Training the backbone on every window of a batch would hold all their activations for the
        # backward pass at once (a 1,000-character text is 7 windows), so freeze=last_n/none read the end
        self.backbone, self.pool, self.whole = backbone, pool, whole
        cfg = backbone.config
        # 'layers' reads n_layer + 1 vectors of n_embd per text: the head sees them side by side
        width = cfg.n_embd * (cfg.n_layer + 1 if pool.startswith("layers") else 1)
        if pool == "layers+max":  # and the largest activation of every MLP hidden unit: 4 n_embd per block
            width += sum(block.mlp.c_fc.out_features for block in backbone.h)
            for block in backbone.h:
                block.mlp.record = True
        self.head = nn.Linear(width, n_labels)
        with torch.no_grad():  # drawn like the GPT's own layers: small weights, near-uniform probabilities
            self.head.weight.normal_(0.0, 0.02)
            self.head.bias.zero_()

    def window_stats(self, idx, lengths, starts, ctx=nullcontext()):
        """(W, T) right-padded windows of texts, (W,) their lengths, (W,) their first counted positions
        (windows()) -> what each window adds to its text's vector: (W, S) sums over its counted tokens, (W, 1)
        their number, (W, M) their maxima ('layers+max'; M = 0 otherwise). 'last' gives the last real
        token's final state as the sum of one token. Attention is causal, so the pads, all after the text,
        never reach the hidden states of the real tokens. ctx (autocast) covers the backbone only."""
        every = self.pool.startswith("layers")
        with ctx:  # 'layers': n_layer + 1 of (W, T, C), the final states last; otherwise the final states
            hs = self.backbone.hidden_states(idx, every_layer=every)
        hs = hs if every else [hs]
        none = hs[-1].new_zeros(idx.size(0), 0).float()  # (W, 0): no maxima
        if self.pool == "last":
            h = hs[-1].float()  # (W, T, C)
            return h[torch.arange(h.size(0), device=h.device), lengths - 1], none.new_ones(h.size(0), 1), none
        pos = torch.arange(idx.size(1), device=idx.device)[None, :]  # (1, T)
        counted = ((pos < lengths[:, None]) & (pos >= starts[:, None])).unsqueeze(-1)  # (W, T, 1)
        # sums over the counted tokens: (W, C), or (W, (n_layer + 1) C) for every layer side by side. Lower
        # layers hold more of what a text is about, the last one more of what comes next in it
        sums = torch.cat([(x.float() * counted).sum(dim=1) for x in hs], dim=-1)
        if self.pool != "layers+max":
            return sums, counted.sum(dim=1).float(), none
        # each MLP hidden unit's largest activation over the counted tokens, (W, 4C) per block. A unit is a
        # detector (of a word, an ending, a turn of phrase); a mean blurs whether it fired at all, a maximum
        # says so, as a bag of words does for its words
        maxima = torch.cat([b.mlp.act.float().masked_fill(~counted, float("-inf")).amax(dim=1)
                            for b in self.backbone.h], dim=-1)
        return sums, counted.sum(dim=1).float(), maxima

    def features(self, seqs, pad_id, ctx=nullcontext(), batch_size=None):
        """Id lists of N texts -> (N, W), one vector per text (W = head.in_features: C, or more for the
        'layers' pools): the means over each text's tokens, then (with 'layers+max') the maxima. A text
        longer than block_size is read in windows (windows(); its last one only for pool='last' or when not
        self.whole), batch_size windows at a time (None: all)."""
        device = self.head.weight.device
        rows, starts, owner = [], [], []  # every window of every text, in order
        for i, ids in enumerate(seqs):
            for a, b, c in windows(len(ids), self.backbone.config.block_size,
                                   last_only=self.pool == "last" or not self.whole):
                rows.append(ids[a:b])
                starts.append(c - a)
                owner.append(i)
        n, step = len(seqs), batch_size or len(rows)
        total = count = top = None  # per text: sums and number of its counted tokens, maxima
        for k in range(0, len(rows), step):
            sums, counts, maxima = self.window_stats(*pad(rows[k:k + step], pad_id, device),
                                                     torch.tensor(starts[k:k + step], device=device), ctx)
            if total is None:  # (N, S), (N, 1), (N, M)
                total, count = sums.new_zeros(n, sums.size(1)), counts.new_zeros(n, 1)
                top = maxima.new_full((n, maxima.size(1)), float("-inf"))
            # each window into its text's sums and maxima: the text's windows may span several batches
            own = torch.tensor(owner[k:k + step], device=device)
            total.index_add_(0, own, sums)
            count.index_add_(0, own, counts)
            top.scatter_reduce_(0, own[:, None].expand_as(maxima), maxima, "amax")
        return torch.cat([total / count, top], dim=-1)  # (N, S + M): the means, then the maxima (M = 0: none)

    def forward(self, seqs, pad_id, ctx=nullcontext()):
        return self.head(self.features(seqs, pad_id, ctx))  # (N, K)

    def checkpoint_state(self):
        """The checkpoint's 'model': the GPT's own keys (any GPT loader reads them) plus head.weight/head.bias."""
        return {**self.backbone.state_dict(), **{"head." + k: v for k, v in self.head.state_dict().items()}}


@torch.no_grad()
def all_features(clf, seqs, pad_id, batch_size, ctx=nullcontext()):
    """(N, W) features of a list of id lists, batch_size windows at a time, with dropout off."""
    clf.eval()
    return clf.features(seqs, pad_id, ctx, batch_size)


@torch.no_grad()
def all_logits(clf, seqs, pad_id, batch_size, ctx=nullcontext()):
    return clf.head(all_features(clf, seqs, pad_id, batch_size, ctx))  # (N, K)


def load_classifier(path, device, cli=True):
    """(checkpoint, Classifier in eval mode, tokenizer) of a saved classifier; only kind 'cls' is accepted.
    A bad checkpoint is a one-line exit (cli=True) or a CheckpointError (the app)."""
    try:
        ckpt = load_checkpoint(path, kinds=("cls",))  # torch.load(weights_only=True) inside
        gpt, tok = model_from_checkpoint(ckpt, device)  # the GPT's keys must fit model_args
        state, labels = ckpt["model"], ckpt.get("labels")
        if "head.weight" not in state or "head.bias" not in state or not labels or ckpt.get("pool") not in POOLS:
            raise CheckpointError(f"{path}: a 'cls' checkpoint without its head, labels or pooling")
        # how its run read long texts (checkpoints from before 2026-12-01 say nothing: whole, as probes now do)
        clf = Classifier(gpt, len(labels), ckpt["pool"], whole=ckpt.get("long_texts", "windows") == "windows")
        try:
            clf.head.load_state_dict({"weight": state["head.weight"], "bias": state["head.bias"]})
        except RuntimeError:  # a size mismatch
            raise CheckpointError(f"{path}: the head ({tuple(state['head.weight'].shape)} weights) does not fit "
                                  f"{len(labels)} labels on the backbone's {clf.head.in_features}-wide vectors")
    except CheckpointError as e:
        if cli:
            fail(e)
        raise
    return ckpt, clf.to(device).eval(), tok


@torch.no_grad()
def classify(clf, tok, texts, batch_size=32, ctx=nullcontext()):
    """(N, K) label probabilities of texts (--predict and the app); a long text is read as the classifier's
    run read it (Classifier.whole: in windows of the checkpoint's block_size, or its end)."""
    seqs = [tok.encode(prepare_text(t)) for t in texts]
    return F.softmax(all_logits(clf, seqs, tok.pad_id, batch_size, ctx).float(), dim=-1).cpu()  # (N, K)


PROBE_L2 = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)  # the grid that cross-validation picks from


def fit_probe(X, y, n_labels, l2, weights=None):
    """The linear probe: an L2-penalized logistic regression on fixed features X (N, C), solved to
    convergence by L-BFGS (a convex problem: one answer, no learning rate, no seed). Returns the
    (K, C) weight and (K,) bias of a head that reads standardized features."""
    W = torch.zeros(n_labels, X.size(1), requires_grad=True)
    b = torch.zeros(n_labels, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], max_iter=500, tolerance_grad=1e-6, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(X @ W.T + b, y, weight=weights) + l2 * (W ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return W.detach(), b.detach()


def probe_head(head, X, y, n_labels, l2, seed, weights=None, folds=5):
    """Fit `head` as a linear probe on the frozen features X (N, C) of the training texts.

    Features are standardized first (each dimension to mean 0 and variance 1 over train): the GPT's
    hidden dimensions differ in scale by orders of magnitude, and one penalty only makes sense when
    they are comparable. With l2=0 the penalty is chosen from PROBE_L2 by stratified k-fold
    cross-validation on train (accuracy, ties to the stronger penalty): 474 texts judge it more
    steadily than the 70 of val. The standardization is folded into the head's weights, so the
    checkpoint holds a plain Linear. Returns (l2, cross-validation accuracy or None)."""
    mu, sd = X.mean(0), X.std(0) + 1e-6
    Z = (X - mu) / sd  # (N, C)
    cv_acc = None
    if not l2:
        g = torch.Generator().manual_seed(seed)
        fold = torch.empty(len(y), dtype=torch.long)
        for k in range(n_labels):  # stratified: each label spread evenly over the folds
            rows = (y == k).nonzero().flatten()
            rows = rows[torch.randperm(len(rows), generator=g)]
            fold[rows] = torch.arange(len(rows)) % folds
        accs = []
        for c in PROBE_L2:
            right = 0
            for f in range(folds):
                tr, te = fold != f, fold == f
                W, b = fit_probe(Z[tr], y[tr], n_labels, c, weights)
                right += ((Z[te] @ W.T + b).argmax(1) == y[te]).sum().item()
            accs.append(right / len(y))
        best = max(range(len(PROBE_L2)), key=lambda i: (accs[i], i))  # ties: the larger penalty
        l2, cv_acc = PROBE_L2[best], accs[best]
    W, b = fit_probe(Z, y, n_labels, l2, weights)
    with torch.no_grad():  # head(x) = W (x - mu) / sd + b  ==  (W / sd) x + (b - (W / sd) mu)
        head.weight.copy_(W / sd)
        head.bias.copy_(b - (W / sd) @ mu)
    return l2, cv_acc


def set_trainable(backbone, freeze, unfreeze_last):
    """requires_grad as --freeze says; returns the backbone's trainable parameters."""
    for p in backbone.parameters():
        p.requires_grad = freeze == "none"
    if freeze == "last_n":  # the top blocks and the final LayerNorm adapt, the rest stays as pretrained
        for module in [*backbone.h[-unfreeze_last:], backbone.ln_f]:
            module.requires_grad_(True)
    return [p for p in backbone.parameters() if p.requires_grad]


def optimizer_step(loss, optimizer, scaler, grad_clip):
    """backward and step through the GradScaler: with float16 the loss is scaled up so that small
    gradients do not underflow, the gradients are unscaled before clipping (the clip sees their true
    norm), and a step whose gradients overflowed is skipped. With bf16/fp32 it is a pass-through."""
    scaler.scale(loss).backward()
    scaled_step([optimizer], scaler, grad_clip)


# evaluation ------------------------------------------------------------------
def scores(y, pred, k):
    """Accuracy, macro-F1, per-label precision/recall/F1/support and the confusion matrix."""
    cm = torch.zeros(k, k, dtype=torch.long)  # rows: true label, columns: predicted label
    cm.index_put_((y.cpu(), pred.cpu()), torch.ones(len(y), dtype=torch.long), accumulate=True)
    tp = cm.diag().float()
    precision = tp / cm.sum(0).clamp(min=1)
    recall = tp / cm.sum(1).clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    # macro-F1 averages over the labels that occur (as truth or as prediction), like scikit-learn
    seen = (cm.sum(0) + cm.sum(1)) > 0
    return {"accuracy": tp.sum().item() / max(1, len(y)), "macro_f1": f1[seen].mean().item(),
            "precision": precision, "recall": recall, "f1": f1, "support": cm.sum(1), "cm": cm}


def print_report(ckpt, y, pred, source, tfidf_pred=None):
    """Print the test tables: predictions pred (N,) against the true label ids y (N,); tfidf_pred: the
    TF-IDF baseline's predictions (tfidf.py), a second line to beat."""
    names = ckpt["labels"]
    m = scores(y, pred, len(names))
    # the baseline always answers the most common training label: any real classifier must beat it
    majority = max(range(len(names)), key=lambda i: ckpt["label_counts"][i])
    b = scores(y, torch.full_like(y, majority), len(names))
    w, cw = max(14, *(len(n) for n in names)) + 2, max(8, *(len(n) for n in names)) + 2
    cfg = ckpt.get("config", {})
    print(f"\ntest: {len(y)} texts from {source}, {len(names)} labels, pool={ckpt['pool']}, "
          f"freeze={cfg.get('freeze', '?')}, init_from={cfg.get('init_from', '?')}")
    print(f"{'':<{w}}{'accuracy':>9}{'macro-F1':>10}")
    print(f"{'model':<{w}}{m['accuracy']:>9.3f}{m['macro_f1']:>10.3f}")
    print(f"{'majority class':<{w}}{b['accuracy']:>9.3f}{b['macro_f1']:>10.3f}   (always '{names[majority]}')")
    if tfidf_pred is not None:
        t = scores(y, tfidf_pred, len(names))
        print(f"{'TF-IDF + logreg':<{w}}{t['accuracy']:>9.3f}{t['macro_f1']:>10.3f}   (n-grams, no GPT: tfidf.py)")
    print(f"\n{'label':<{w}}{'precision':>10}{'recall':>8}{'F1':>8}{'support':>9}")
    for i, n in enumerate(names):
        print(f"{n:<{w}}{m['precision'][i]:>10.3f}{m['recall'][i]:>8.3f}{m['f1'][i]:>8.3f}{m['support'][i]:>9d}")
    print(f"\nconfusion matrix (rows: true label, columns: predicted)\n{'':<{w}}"
          + "".join(f"{n:>{cw}}" for n in names))
    for i, n in enumerate(names):
        print(f"{n:<{w}}" + "".join(f"{c:>{cw}d}" for c in m["cm"][i].tolist()))
    return m


# the program -----------------------------------------------------------------
if __name__ == "__main__":
    t_start = time.time()
    if pool not in POOLS:
        fail(f"pool must be one of {', '.join(POOLS)}, got '{pool}'")
    if freeze not in ("backbone", "last_n", "none"):
        fail(f"freeze must be 'backbone', 'last_n' or 'none', got '{freeze}'")
    if metric not in ("macro_f1", "accuracy"):
        fail(f"metric must be 'macro_f1' or 'accuracy', got '{metric}'")
    if batch_size < 1 or eval_interval < 1 or max_iters < 0 or patience < 0:
        fail("batch_size and eval_interval must be at least 1, max_iters and patience at least 0")
    if not (math.isfinite(learning_rate) and learning_rate > 0 and math.isfinite(backbone_lr) and backbone_lr >= 0):
        fail(f"learning_rate must be a finite number > 0 and backbone_lr >= 0 (0: the same), got {learning_rate} "
             f"and {backbone_lr}")
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        fail(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be > 0 and add up to less than 1")
    predicting = "predict" in configurator.given  # --predict="" too: an empty text is an error, not a training run
    if predicting and predict_file:
        fail("use --predict or --predict_file, not both")
    try:
        device = pick_device(device)
        ctx, scaler, precision = autocast(device, dtype), grad_scaler(device, dtype), resolve_dtype(device, dtype)
    except ValueError as e:
        fail(e)

    # inference: --predict / --predict_file -----------------------------------
    if predicting or predict_file:
        ckpt, clf, tok = load_classifier(out_dir, device)
        if predicting:
            texts = [prepare_text(predict)]
            if not texts[0]:
                fail("empty --predict text")
        else:
            if not os.path.isfile(predict_file):
                fail(f"predict_file not found: {predict_file}")
            lines = read_file_text(predict_file, note=sys.stderr).splitlines()  # (stdout is the table)
            texts = [t for t in map(prepare_text, lines) if t]
            if not texts:
                fail(f"{predict_file} holds no text (one text per line)")
        probs = classify(clf, tok, texts, batch_size, ctx)  # (N, K)
        names = ckpt["labels"]
        ids = [tok.encode(t) for t in texts]
        n_unk = sum(i.count(tok.unk_id) for i in ids)
        if n_unk:  # a guess from unknown characters is worth knowing about (stderr: stdout stays a table)
            n_all = sum(map(len, ids))
            print(f"note: {n_unk} of {n_all} characters are not in the backbone's vocabulary and read as <unk>",
                  file=sys.stderr)
        if predicting:
            print(names[probs[0].argmax()])
            for n, p in zip(names, probs[0].tolist()):
                print(f"  {n:<{max(len(x) for x in names)}}  {p:.4f}")
        else:
            print("\t".join(["label"] + [f"p({n})" for n in names] + ["text"]))
            for t, p in zip(texts, probs):  # a tab inside a text would add a column: shown as a space
                print("\t".join([names[p.argmax()]] + [f"{x:.4f}" for x in p.tolist()] + [t.replace("\t", " ")]))
        sys.exit(0)

    # --eval_only=True: out_dir's classifier and the test split; or training --
    if eval_only:
        ckpt, clf, tok = load_classifier(out_dir, device)
        # the test split the classifier was trained beside: its run's data and split settings, unless given
        # here (a different seed or fraction would draw another split of a single file, training texts included)
        trained = ckpt.get("config", {})
        taken = {k: trained[k] for k in ("data", "text_col", "label_col", "val_fraction", "test_fraction", "seed",
                                         "train_labels") if k in trained and k not in configurator.given}
        if any(globals()[k] != v for k, v in taken.items()):
            print("--eval_only: as the classifier's run read it: " + ", ".join(f"{k}={v}" for k, v in taken.items()
                                                                              if globals()[k] != v))
        data, text_col, label_col, val_fraction, test_fraction, seed, train_labels = (
            taken.get(k, globals()[k]) for k in ("data", "text_col", "label_col", "val_fraction", "test_fraction",
                                                 "seed", "train_labels"))
        # the train split too, if there is one: the TF-IDF line below is fitted on it
        has_train = not os.path.isdir(data) or any(os.path.isfile(os.path.join(data, "train" + e)) for e in EXTS)
        splits = load_data(data, text_col, label_col, val_fraction, test_fraction, seed,
                           splits=("train", "test") if has_train else ("test",))
        if train_labels and has_train:  # the same training texts the classifier saw
            splits["train"] = balanced_subset(*splits["train"], train_labels, seed)
        test_split = splits["test"]
    else:
        # training: backbone, out_dir check, data
        try:
            base = load_checkpoint(arch_from if init_from == "scratch" else init_from, kinds=("pretrain", "instr"),
                                   quantized=False)
        except CheckpointError as e:
            fail(e)
        model_args = base["model_args"]
        tok, block_size = load_tokenizer(base), model_args["block_size"]
        if freeze == "last_n" and not 1 <= unfreeze_last <= model_args["n_layer"]:
            fail(f"unfreeze_last must be between 1 and the backbone's {model_args['n_layer']} blocks, "
                 f"got {unfreeze_last}")

        # never clobber another task's model (e.g. --out_dir=out would overwrite the pretrained GPT). A previous
        # classifier here is replaced, but only once this run has a finished evaluation to put in its place.
        ckpt_path = os.path.join(out_dir, "ckpt.pt")
        if os.path.exists(ckpt_path) and not overwrite:
            try:
                old_kind = load_checkpoint(ckpt_path)["kind"]
            except CheckpointError:
                fail(f"{ckpt_path} exists and is not a readable checkpoint; use another --out_dir or --overwrite=True")
            if old_kind != "cls":
                fail(f"{out_dir} holds a '{old_kind}' checkpoint (another task); use another --out_dir, "
                     f"or --overwrite=True to replace it")
            print(f"note: {ckpt_path} holds an earlier classifier; this run replaces it when it ends")

        splits = load_data(data, text_col, label_col, val_fraction, test_fraction, seed)
        if train_labels:
            n_labels = len(set(splits["train"][1]))
            if train_labels < max(2, n_labels):
                fail(f"--train_labels must be 0 (all) or at least one text per label ({max(2, n_labels)} here), "
                     f"got {train_labels}")
            splits["train"] = balanced_subset(*splits["train"], train_labels, seed)
        labels = sorted(set(splits["train"][1]))
        if len(labels) < 2:
            fail(f"only one label ('{labels[0]}') in the training data of {data}: a classifier needs at least two")
        for s in ("val", "test"):
            check_labels(splits[s][1], labels, f"the {s} split of {data}")
        seqs = {s: [tok.encode(t) for t in texts] for s, (texts, _) in splits.items()}
        ys = {s: torch.tensor([labels.index(lab) for lab in labs], device=device) for s, (_, labs) in splits.items()}
        label_counts = torch.bincount(ys["train"].cpu(), minlength=len(labels))
        n_cut = sum(len(ids) > block_size for s in seqs.values() for ids in s)
        n_unk = sum(ids.count(tok.unk_id) for s in seqs.values() for ids in s)
        print(f"data {data}: {', '.join(f'{len(seqs[s])} {s}' for s in SPLITS)} | labels: "
              + ", ".join(f"{n} ({c})" for n, c in zip(labels, label_counts.tolist())))
        if n_cut:
            unit = "characters" if tok.kind == "char" else "tokens"
            print(f"note: {n_cut} texts are longer than block_size={block_size}: " + (
                f"read in windows of {block_size} {unit}, half a window apart (each {unit[:-1]} counted once)"
                if freeze == "backbone" and pool != "last" else f"only their last {block_size} {unit} are read" +
                ("" if pool == "last" else " (a trained backbone reads the end; freeze=backbone reads them whole)")))
        if n_unk:
            print(f"note: {n_unk} characters are not in the backbone's vocabulary and read as <unk>")

        # model: backbone + pooling + linear head, then freeze; out_dir proven writable before any work
        torch.manual_seed(seed)
        try:
            if init_from == "scratch":  # same shape as the pretrained one, random weights
                backbone = GPT(GPTConfig(**model_args)).to(device)
            else:
                backbone, _ = model_from_checkpoint(base, device)
        except (CheckpointError, TypeError, ValueError) as e:
            fail(str(e).splitlines()[0])
        clf = Classifier(backbone, len(labels), pool, whole=freeze == "backbone").to(device)
        trainable = set_trainable(backbone, freeze, unfreeze_last)
        optimizer = torch.optim.AdamW(param_groups(clf.head.parameters(), weight_decay, learning_rate)
                                      + param_groups(trainable, weight_decay, backbone_lr or learning_rate),
                                      betas=(0.9, 0.99))
        weights = None
        if class_weights:  # inverse frequency, scaled so that balanced data gets weight 1 everywhere
            weights = (label_counts.sum() / (len(labels) * label_counts.clamp(min=1).float())).to(device)
        print(f"backbone {backbone.num_params():,} parameters ({init_from}), {sum(p.numel() for p in trainable):,} of "
              f"them trainable (freeze={freeze}) | head {sum(p.numel() for p in clf.head.parameters()):,} | "
              f"pool={pool} | device {device}, {precision}" + (" with loss scaling" if scaler.is_enabled() else ""))
        if init_from == "scratch" and freeze != "none":
            print("note: a random backbone that stays (partly) frozen: its features are random, this is a lower bound")
        try:
            prepare_out_dir(out_dir)
        except CheckpointError as e:
            fail(e)

        # a frozen backbone gives every text the same vector: compute the vectors once and fit the head on
        # them as a linear probe (probe_head), with no training loop. The loop below then only evaluates it
        cached = freeze == "backbone"
        n_iters = 0 if cached else max_iters
        probe = {}
        if cached:
            t0 = time.time()
            feats = {s: all_features(clf, seqs[s], tok.pad_id, batch_size, ctx) for s in ("train", "val")}
            print(f"features of {len(seqs['train']) + len(seqs['val'])} texts computed once in {time.time() - t0:.1f}s")
            t0 = time.time()
            folds = min(5, int(label_counts.min()))  # every fold needs texts of every label
            l2, cv_acc = probe_head(clf.head, feats["train"].cpu(), ys["train"].cpu(), len(labels),
                                    probe_l2 or (0.0 if folds >= 2 else 1e-2), seed,
                                    None if weights is None else weights.cpu(), folds)
            probe = {"probe": {"l2": l2, "cv_accuracy": cv_acc}}  # saved with the checkpoint
            chosen = "" if cv_acc is None else (f", chosen by {folds}-fold cross-validation on train "
                                                f"(accuracy {cv_acc:.3f})")
            print(f"linear probe (logistic regression, L-BFGS) in {time.time() - t0:.1f}s: L2 {l2:g}{chosen}")

        # where this run saves: straight into out_dir; or, over an earlier classifier, beside it, moved into
        # place only when the run ends (Ctrl-C included): a run that fails keeps the earlier one whole
        run_files = Staged(out_dir, ["ckpt.pt", "log.jsonl"])

        def give_up(msg):  # a failed run: its own files go, the earlier ones stay
            run_files.discard()
            fail(msg)

        # training loop; Ctrl-C / kill stop it, and the best checkpoint so far is then scored as usual
        stop = catch_stop_signals()
        batch_gen = torch.Generator().manual_seed(seed)  # the data order
        n_train, bs = len(seqs["train"]), min(batch_size, len(seqs["train"]))
        order, pos = torch.randperm(n_train, generator=batch_gen), 0
        history, best, best_iter, bad_evals, train_losses = [], None, None, 0, []
        t_train = time.time()
        for it in range(n_iters + 1):
            if (it % eval_interval == 0 and it > 0) or it == n_iters or stop["signal"]:
                with torch.no_grad():
                    logits = clf.head(feats["val"]) if cached else all_logits(clf, seqs["val"], tok.pad_id,
                                                                              batch_size, ctx)
                    val_loss = F.cross_entropy(logits, ys["val"], weight=weights).item()
                if not math.isfinite(val_loss):  # diverged: nothing worth saving
                    give_up(f"val loss became {val_loss:.3g} at iteration {it}; stopped, nothing saved by this run. "
                            f"Try a lower --learning_rate or --dtype=float32")
                m = scores(ys["val"], logits.argmax(dim=-1), len(labels))
                train_loss = sum(train_losses) / len(train_losses) if train_losses else None
                train_losses = []
                history.append({"iter": it, "train_loss": train_loss, "val_loss": val_loss,
                                "val_accuracy": m["accuracy"], "val_macro_f1": m["macro_f1"],
                                "elapsed_s": round(time.time() - t_start, 2)})
                score = (m[metric], -val_loss)  # ties on the metric (common on a small val set): the lower val loss
                improved = best is None or score > best
                best, best_iter, bad_evals = (score, it, 0) if improved else (best, best_iter, bad_evals + 1)
                try:
                    if improved:
                        save_checkpoint({"kind": "cls", "model_args": model_args, "model": clf.checkpoint_state(),
                                         **tok.state(), "labels": labels, "label_counts": label_counts.tolist(),
                                         "pool": pool, "long_texts": "windows" if clf.whole else "end",
                                         "config": config, "iter_num": it, "history": history, **probe,
                                         "best_val": {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                                                      "loss": val_loss}}, run_files["ckpt.pt"])
                    # one line per evaluation, for plots (the app reads these logs); the first evaluation
                    # always saves, so this run owns its files by now
                    atomic_write_text(run_files["log.jsonl"], "".join(json.dumps(h) + "\n" for h in history))
                except CheckpointError as e:  # a full disk: the previous files are kept
                    give_up(e)
                eta = (n_iters - it) * (time.time() - t_train) / max(1, it)
                shown = "-" if train_loss is None else f"{train_loss:.4f}"
                print(f"eval {it}: train loss {shown} | val loss {val_loss:.4f}, accuracy {m['accuracy']:.3f}, "
                      f"macro-F1 {m['macro_f1']:.3f} | ETA {int(eta // 60)}m{int(eta % 60):02d}s"
                      + (" -> saved" if improved else ""), flush=True)
                if patience and bad_evals >= patience:
                    print(f"early stop: no better val {metric} in {patience} evaluations")
                    break
            if it == n_iters or stop["signal"]:
                break

            if pos + bs > n_train:  # a new epoch: a new shuffled order, every text once per epoch
                order, pos = torch.randperm(n_train, generator=batch_gen), 0
            ix = order[pos:pos + bs]
            pos += bs
            clf.train()
            logits = clf([seqs["train"][i] for i in ix.tolist()], tok.pad_id, ctx)  # (B, K)
            loss = F.cross_entropy(logits, ys["train"][ix.to(device)], weight=weights)
            if not torch.isfinite(loss):
                give_up(f"loss became {loss.item()} at iteration {it}; stopped. The best checkpoint so far in "
                        f"{out_dir}/ is kept. Try a lower --learning_rate or --dtype=float32")
            try:
                optimizer_step(loss, optimizer, scaler, grad_clip)
            except RuntimeError as e:  # e.g. a learning rate so large that AdamW's step overflows
                give_up(f"the optimizer step failed at iteration {it} ({str(e).splitlines()[0]}); "
                        f"try a lower --learning_rate")
            train_losses.append(loss.item())
        try:  # the run ended (finished, early-stopped or Ctrl-C): its best replaces the earlier one
            run_files.commit()
        except CheckpointError as e:
            give_up(e)
        t_train = time.time() - t_train
        print(f"training {t_train:.1f}s: best val {metric} {best[0]:.3f} at iteration {best_iter} -> {ckpt_path}")
        # the test below reads the saved best checkpoint back, exactly as --eval_only reads it
        ckpt, clf, tok = load_classifier(out_dir, device)
        test_split = splits["test"]

    # test: the table ---------------------------------------------------------
    names, (test_texts, test_labels) = ckpt["labels"], test_split
    check_labels(test_labels, names, f"the test split of {data}")
    test_seqs = [tok.encode(t) for t in test_texts]  # read in windows of the checkpoint's block_size
    pred = all_logits(clf, test_seqs, tok.pad_id, batch_size, ctx).argmax(dim=-1).cpu()
    # the second baseline: TF-IDF n-grams + logistic regression, fitted on the same training texts
    train = [(t, names.index(lab)) for t, lab in zip(*splits.get("train", ([], []))) if lab in names]
    tfidf_pred = torch.as_tensor(tfidf_baseline(([t for t, _ in train], [i for _, i in train]), (test_texts, None),
                                                len(names))) if train else None
    print_report(ckpt, torch.tensor([names.index(lab) for lab in test_labels]), pred, data, tfidf_pred)
    print(f"\nwall time {time.time() - t_start:.1f}s" + ("" if eval_only else f" (training {t_train:.1f}s)"))
    if not eval_only and stop["signal"]:
        raise SystemExit(stop_exit_code(stop))
