"""
Text cleaning and the two tokenizers, shared by every script.

Both put the special tokens first (fixed ids 0..5; older vocabularies have 0..4, no <sys>).
CharTokenizer then has one id per character seen when its vocabulary was built; BPETokenizer has
one id per byte (256), then one per merge learned by train(). Special tokens are only ever inserted by code (tok.instr_id, tok.eos_id, ...):
encode() maps text to characters or bytes, so a user who types "<resp>" gets '<', 'r', 'e', ...
and never the special id. meta.json and every checkpoint hold tok.state() (plain lists), and
load_tokenizer() rebuilds the right one from it.
"""
import codecs
import heapq
import re
import time
import unicodedata

SPECIALS = ["<pad>", "<unk>", "<instr>", "<resp>", "<eos>", "<sys>"]
PAD, UNK, INSTR, RESP, EOS, SYS = range(len(SPECIALS))
# vocabularies made before <sys> existed (the shipped 6x256 backbone) have the first five only: they
# load and answer single questions as before; a system prompt needs a vocabulary with <sys>
# always in the vocabulary, so everyday text in any new prompt has a trained-able id:
# printable ASCII plus Spanish letters and punctuation
BASE_CHARS = "".join(chr(c) for c in range(32, 127)) + "\n\táéíóúüñÁÉÍÓÚÜÑ¿¡«»—–…“”‘’°"


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufeff]")  # control characters but tab and newline; BOMs
SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: not a character (JSON can write "\ud800")


def clean_text(text, lowercase=False):
    """Unicode NFC, unified line endings, control characters dropped (newline and tab kept)."""
    text = SURROGATE.sub("\ufffd", text)  # a lone surrogate cannot be encoded: it becomes the replacement mark
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Unicode category Cc (control characters) is exactly U+0000-U+001F and U+007F-U+009F;
    # Cf (format, e.g. zero-width joiners in emoji) is kept, except U+FEFF: a byte-order mark left
    # inside the text (a file read with --encoding=utf-8, files glued together)
    text = CONTROL.sub("", text)
    return text.lower() if lowercase else text


def strip_accents(text):
    """á -> a, ü -> u, ... but ñ stays ñ (in Spanish a letter of its own, not an accented n)."""
    text = unicodedata.normalize("NFC", text).replace("ñ", "\0").replace("Ñ", "\1")
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", text).replace("\0", "ñ").replace("\1", "Ñ")


# words around a question that change nothing in what it asks (noisy_prompt's wrap_prob): people greet,
# explain why they ask, and thank; a model trained only on bare questions can take them for a new question
OPENERS = ["Hola. ", "Buenas, ", "Una pregunta: ", "Oye, una cosa. ", "Disculpa la molestia. ", "A ver, ",
           "Perdón si es obvio, pero ", "Estoy estudiando para un examen. ", "Mi sobrino me preguntó esto hoy. ",
           "Estamos discutiendo en la cena. ", "Necesito saberlo para una tarea. ", "Tengo una duda. ",
           "Buenos días. ", "Vi algo en la tele y me quedé pensando. ", "Pregunta rápida: "]
CLOSERS = [" Gracias.", " ¡Gracias de antemano!", " ¿Me ayudas?", " Es para la escuela.", " Nunca me acuerdo.",
           " Perdón por la pregunta.", " Me da curiosidad.", " Saludos.", " Es urgente."]


def noisy_prompt(p, rng, noise_prob, wrap_prob=0.0):
    """The noise people put in real questions, for training (finetune_instr.py): each of odd capitals (none,
    most often; ALL, or Every Word), no accents, no ¿?, and one typo with probability noise_prob; then, with
    probability wrap_prob, small talk before, after or on both sides (OPENERS, CLOSERS). rng: a random.Random."""
    if rng.random() < noise_prob:
        case = rng.random()
        p = p.lower() if case < 0.6 else p.upper() if case < 0.8 else p.title()
    if rng.random() < noise_prob:
        p = strip_accents(p)
    if rng.random() < noise_prob:
        p = p.replace("¿", "").replace("¡", "").replace("?", "" if rng.random() < 0.5 else "?")
    if rng.random() < noise_prob and len(p) > 3:  # one typo: drop, double or swap a letter
        i, op = rng.randrange(len(p) - 1), rng.randrange(3)
        p = p[:i] + p[i + 1:] if op == 0 else p[:i] + p[i] + p[i:] if op == 1 else p[:i] + p[i + 1] + p[i] + p[i + 2:]
    if rng.random() < wrap_prob:
        side = rng.randrange(3)  # 0: before, 1: after, 2: both
        p = (rng.choice(OPENERS) if side != 1 else "") + p + (rng.choice(CLOSERS) if side != 0 else "")
    return p


class Tokenizer:
    """What both tokenizers share. The first ids are the special tokens (self.specials: SPECIALS, or its
    first five in older vocabularies); every other id stands for some bytes of UTF-8 text (a character,
    or a BPE piece). Subclasses give encode(text), token_bytes(id) and state() (what a checkpoint saves);
    decoding and the chat template are here, once."""
    pad_id, unk_id, instr_id, resp_id, eos_id = PAD, UNK, INSTR, RESP, EOS
    specials = SPECIALS
    # prepare.py --lowercase=True: the vocabulary was built from lowercased text, so encode() lowercases
    # whatever it is given (a prompt, a file to score, a text to classify) as the training text was
    lowercase = False

    @property
    def sys_id(self):
        return SYS if len(self.specials) > SYS else None

    def decode(self, ids, specials=False):
        """ids -> text. Specials are dropped (<unk> shows as U+FFFD), or spelled out with specials=True.
        Bytes are joined before they are decoded: a character split across BPE tokens comes out whole."""
        out, run, n_special = [], [], len(self.specials)
        for i in ids:
            i = int(i)
            if i >= n_special:
                run.append(self.token_bytes(i))
                continue
            out.append(b"".join(run).decode("utf-8", errors="replace"))
            run = []
            if specials:
                out.append(self.specials[i])
            elif i == UNK:
                out.append("\ufffd")  # show that something unknown was here
        out.append(b"".join(run).decode("utf-8", errors="replace"))
        return "".join(out)

    def piece(self, i):
        """How one token looks on its own (the app's token view and charts): specials by name, visible
        space/newline/tab marks, and a byte that is only part of a character as <0xC3>."""
        i = int(i)
        if i < len(self.specials):
            return self.specials[i]
        b = self.token_bytes(i)
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:  # a BPE token that ends (or starts) inside a multi-byte character
            text = b.decode("utf-8", errors="backslashreplace").replace("\\x", "<0x")
            text = re.sub(r"<0x([0-9a-f]{2})", lambda m: f"<0x{m.group(1).upper()}>", text)
        return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")

    def encode_chat(self, question, history=(), system="", response=None, max_len=None):
        """THE chat template, the one definition every script uses (finetune_instr, sample, app,
        evaluate, serve):

            [<sys> system] <instr> q1 <resp> a1 <eos> ... <instr> question <resp> [response <eos>]

        history: the earlier (question, answer) turns, oldest first. Without system prompt and history
        it is the single-question format. Longer than max_len: whole oldest turns go first (the system
        prompt and the new question are kept), then the longer of the question and the system prompt
        loses tokens from its start until they fit (a long question does not push out a short "Responde
        solo sí o no.", nor a long system prompt the question). A response longer than the window alone
        is cut at its end. Returns (ids, turns dropped, tokens cut)."""
        if system and self.sys_id is None:
            raise ValueError("this vocabulary has no <sys> token (it predates system prompts): "
                             "prepare.py and train a new model to use one")
        s = [self.sys_id] + self.encode(system) if system else []
        turns = [[self.instr_id] + self.encode(q) + [self.resp_id] + self.encode(a) + [self.eos_id]
                 for q, a in history]
        q = self.encode(question)
        r = [] if response is None else self.encode(response) + [self.eos_id]
        dropped = cut = 0
        if max_len is not None:
            r = r[: max(0, max_len - 3)]  # only if the response alone is too long
            while turns and len(s) + sum(map(len, turns)) + len(q) + len(r) + 2 > max_len:
                turns.pop(0)
                dropped += 1
            over = len(s) + len(q) + len(r) + 2 - max_len
            # then the longer of the question and the system prompt gives way, a token at a time from its
            # start (its end, where a question usually asks, stays; the question keeps its last token)
            while over > 0 and max(len(q), len(s)) > 1:
                if len(s) > len(q):
                    s = s[:1] + s[2:]  # s[0] is the <sys> marker
                else:
                    q = q[1:]
                over, cut = over - 1, cut + 1
        return s + [t for turn in turns for t in turn] + [self.instr_id] + q + [self.resp_id] + r, dropped, cut

    def encode_instruction(self, prompt, response=None, max_len=None):
        """The template for one question alone (no system prompt, no earlier turns): (ids, tokens cut)."""
        ids, _, cut = self.encode_chat(prompt, response=response, max_len=max_len)
        return ids, cut


class StreamDecoder:
    """Token ids in, text out, as they are generated, never half a character: the bytes of a character
    that BPE split across tokens are held until the character is complete. Specials print nothing.
        dec = StreamDecoder(tok); for i in ids: print(dec.add(i), end=""); print(dec.flush())"""

    def __init__(self, tok):
        self.tok = tok
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, i):
        i = int(i)
        if i < len(self.tok.specials):
            return "\ufffd" if i == UNK else ""
        return self.utf8.decode(self.tok.token_bytes(i))

    def flush(self):
        """Whatever is still held (an incomplete character at the very end shows as U+FFFD)."""
        return self.utf8.decode(b"", final=True)


class CharTokenizer(Tokenizer):
    kind = "char"

    def __init__(self, vocab):
        # vocab: list of strings, SPECIALS first (or, in older vocabularies, its first five), then
        # single characters (so a 5-character "<sys>" at id 5 can only be the special token)
        if list(vocab[:EOS + 1]) != SPECIALS[:EOS + 1]:
            raise ValueError("vocabulary must start with the special tokens " + " ".join(SPECIALS))
        self.vocab = list(vocab)
        self.specials = SPECIALS if self.vocab[SYS:SYS + 1] == ["<sys>"] else SPECIALS[:EOS + 1]
        self.stoi = {ch: i for i, ch in enumerate(self.vocab) if i >= len(self.specials)}
        self._bytes = [ch.encode("utf-8") for ch in self.vocab]

    @classmethod
    def from_texts(cls, texts):
        chars = sorted(set("".join(texts)))
        return cls(SPECIALS + chars)

    def __len__(self):
        return len(self.vocab)

    def state(self):
        """What meta.json and every checkpoint store to rebuild this tokenizer (plain lists)."""
        return {"tokenizer": "char", "vocab": self.vocab, **({"lowercase": True} if self.lowercase else {})}

    def token_bytes(self, i):
        return self._bytes[i]

    def encode(self, text):
        return [self.stoi.get(ch, self.unk_id) for ch in (text.lower() if self.lowercase else text)]

    def encode_array(self, text):
        """encode() for long texts, as a numpy uint32 array: the text's code points (UTF-32) index a
        table from every Unicode code point to its id (<unk> where the vocabulary lacks it). ~100x faster."""
        import numpy as np
        if getattr(self, "_table", None) is None:
            self._table = np.full(0x110000, self.unk_id, dtype=np.uint32)
            for ch, i in self.stoi.items():
                self._table[ord(ch)] = i
        text = text.lower() if self.lowercase else text
        return self._table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]


# GPT-style pre-split, for Spanish: a word (letters of any script, accents and ñ included) with the
# space before it; numbers in groups of at most 3 digits; a run of punctuation with its space (so
# " ¿" and "?" are pieces of their own); whitespace, where a run before a word leaves its last
# space to the word. Merges never cross these chunk boundaries, so " perro" and " perros" share a
# prefix and no token ever glues a word to the punctuation after it. Every character falls in one
# alternative (letters, digits, _, whitespace, everything else), so the chunks rebuild the text.
# Runs of letters, punctuation or _ are cut every 64 characters: a text without spaces (Chinese, a
# line of dashes) would otherwise be one huge chunk that every merge rescans (50,000 CJK characters:
# 116 s and 3 GB for 768 merges, instead of seconds). No word of the shipped corpus is that long.
# (A tokenizer keeps the pattern it was trained with: see state().)
SPLIT_PATTERN = r" ?[^\W\d_]{1,64}| ?\d{1,3}| ?[^\s\w]{1,64}|_{1,64}|\s+(?!\S)|\s+"
BYTE0 = len(SPECIALS)  # id of byte 0; the 256 byte ids are BYTE0..BYTE0+255, then one id per merge


def merge_pair(ids, pair, new):
    """ids with every non-overlapping occurrence of pair, left to right, replaced by new."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer(Tokenizer):
    """Byte-level BPE: text -> chunks (SPLIT_PATTERN) -> UTF-8 bytes -> merges applied in the order they
    were learned. Any text encodes (no <unk>: an unseen character is just its bytes), and no text can
    produce a special id, because merges only ever combine byte ids."""
    kind = "bpe"

    def __init__(self, merges, pattern=SPLIT_PATTERN, specials=SPECIALS):
        self.merges = [tuple(int(a) for a in m) for m in merges]
        self.pattern, self.specials = pattern, list(specials)
        if self.specials[:EOS + 1] != SPECIALS[:EOS + 1]:
            raise ValueError("special tokens must start with " + " ".join(SPECIALS[:EOS + 1]))
        self.byte0 = len(self.specials)  # the id of byte 0 (BYTE0 for tokenizers made now)
        self.split = re.compile(pattern)
        self.rank = {}  # (a, b) -> the id of their merge; a lower id was learned earlier
        self._bytes = [b""] * self.byte0 + [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            if not (self.byte0 <= a < len(self._bytes) and self.byte0 <= b < len(self._bytes)):
                raise ValueError(f"merge ({a}, {b}) refers to ids that do not exist yet")
            self.rank[(a, b)] = len(self._bytes)
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self.cache = {}  # chunk -> ids: real text repeats its words, so most chunks are looked up, not merged

    def __len__(self):
        return len(self._bytes)

    def state(self):
        return {"tokenizer": "bpe", "merges": [list(m) for m in self.merges], "pattern": self.pattern,
                "specials": self.specials, **({"lowercase": True} if self.lowercase else {})}

    def token_bytes(self, i):
        return self._bytes[i]

    def encode_chunk(self, chunk):
        ids = [self.byte0 + b for b in chunk.encode("utf-8")]
        while len(ids) > 1:
            # the earliest-learned merge among the adjacent pairs goes first, as in training
            pair = min(zip(ids, ids[1:]), key=lambda p: self.rank.get(p, 1 << 62))
            if pair not in self.rank:
                break
            ids = merge_pair(ids, pair, self.rank[pair])
        return ids

    def encode(self, text):
        out = []
        for chunk in self.split.findall(text.lower() if self.lowercase else text):
            ids = self.cache.get(chunk)
            if ids is None:
                if len(self.cache) > 500_000:  # bounded memory on huge corpora
                    self.cache.clear()
                ids = self.cache[chunk] = self.encode_chunk(chunk)
            out.extend(ids)
        return out

    def encode_array(self, text):
        import numpy as np
        return np.array(self.encode(text), dtype=np.uint32)

    @staticmethod
    def count_chunks(text, counts, pattern=SPLIT_PATTERN):
        """Add text's pre-split chunks to counts (a Counter): training only needs each distinct chunk once."""
        counts.update(re.findall(pattern, text))

    @classmethod
    def train(cls, counts, vocab_size, log=None):
        """Learn vocab_size - 6 - 256 merges (after the specials and the bytes) from counts ({chunk: how
        often}). Each step merges the most frequent adjacent pair (ties: the smallest ids, so training
        is deterministic), counted over distinct chunks weighted by their counts. After a merge only the chunks that held the pair are
        updated (an index pair -> chunks), and a heap with lazy deletion finds the next best pair, so a
        merge costs what it changes, not a recount of the corpus. Pairs seen fewer than 2 times are
        not merged. Returns (tokenizer, number of merges made), fewer than asked if the text ran out."""
        n_merges = vocab_size - BYTE0 - 256
        words = [[BYTE0 + b for b in chunk.encode("utf-8")] for chunk in counts]
        freq = list(counts.values())
        pairs, where = {}, {}  # pair -> weighted count; pair -> indices of the chunks that (may) hold it
        for w, (ids, f) in enumerate(zip(words, freq)):
            for p in zip(ids, ids[1:]):
                pairs[p] = pairs.get(p, 0) + f
                where.setdefault(p, set()).add(w)
        heap = [(-c, p) for p, c in pairs.items()]
        heapq.heapify(heap)
        merges, t0 = [], time.time()
        while len(merges) < n_merges and heap:
            c, p = heapq.heappop(heap)
            if pairs.get(p, 0) != -c:  # stale: this pair's count changed since the entry was pushed
                continue
            if -c < 2:
                break
            new = BYTE0 + 256 + len(merges)
            merges.append(p)
            changed = set()
            for w in where.pop(p):
                ids, f = words[w], freq[w]
                for q in zip(ids, ids[1:]):  # take the chunk's pairs out, merge, put them back
                    pairs[q] -= f
                changed.update(zip(ids, ids[1:]))
                ids = words[w] = merge_pair(ids, p, new)
                for q in zip(ids, ids[1:]):
                    pairs[q] = pairs.get(q, 0) + f
                    where.setdefault(q, set()).add(w)
                changed.update(zip(ids, ids[1:]))
            for q in changed:  # new heap entries for every count that moved (the old ones are now stale)
                heapq.heappush(heap, (-pairs[q], q))
            if log and (len(merges) % 500 == 0 or len(merges) == n_merges):
                dt = time.time() - t0
                log(f"BPE merges {len(merges):,}/{n_merges:,}, {dt:.1f}s, "
                    f"ETA {dt / len(merges) * (n_merges - len(merges)):.0f}s")
        return cls(merges), len(merges)


def load_tokenizer(d):
    """The tokenizer saved in a meta.json or checkpoint dict (see state()): BPE or characters."""
    if d.get("tokenizer", "char") == "bpe":  # (the first BPE files, without "specials", had five)
        tok = BPETokenizer(d["merges"], d.get("pattern", SPLIT_PATTERN), d.get("specials", SPECIALS[:EOS + 1]))
    else:
        tok = CharTokenizer(d["vocab"])
    tok.lowercase = bool(d.get("lowercase", False))
    return tok


def instruction_example(tok, prompt, response, max_len, history=(), system=""):
    """One training example for instruction tuning: (x, y, cut). x = ids[:-1] and y = ids[1:] of the
    chat template, with y = -100 (ignored by the loss) wherever the next token is still context
    (system prompt, earlier turns, the question): the first kept target is the answer's first token,
    predicted at the last <resp>, and the last is <eos>. The model learns to answer, not to write
    questions (nor to repeat the earlier answers it was shown)."""
    ids, _, cut = tok.encode_chat(prompt, history, system, response, max_len=max_len)
    resp_pos = len(ids) - 1 - ids[::-1].index(tok.resp_id)
    y = ids[1:]
    y[:resp_pos] = [-100] * resp_pos
    return ids[:-1], y, cut
