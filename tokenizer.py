"""
Text cleaning and the character tokenizer, shared by every script.

The vocabulary is: the special tokens first (fixed ids 0..4), then every character seen
when the vocabulary was built. Special tokens are only ever inserted by code
(tok.instr_id, tok.eos_id, ...): encode() works character by character, so a user who
types "<resp>" gets the seven characters '<', 'r', 'e', ... and never the special id.
"""
import re
import unicodedata

SPECIALS = ["<pad>", "<unk>", "<instr>", "<resp>", "<eos>"]
PAD, UNK, INSTR, RESP, EOS = range(len(SPECIALS))
# always in the vocabulary, so everyday text in any new prompt has a trained-able id:
# printable ASCII plus Spanish letters and punctuation
BASE_CHARS = "".join(chr(c) for c in range(32, 127)) + "\n\táéíóúüñÁÉÍÓÚÜÑ¿¡«»—–…“”‘’°"


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # control characters but tab and newline


def clean_text(text, lowercase=False):
    """Unicode NFC, unified line endings, control characters dropped (newline and tab kept)."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Unicode category Cc (control characters) is exactly U+0000-U+001F and U+007F-U+009F;
    # Cf (format, e.g. zero-width joiners in emoji) is kept
    text = CONTROL.sub("", text)
    return text.lower() if lowercase else text


def strip_accents(text):
    """á -> a, ü -> u, ... but ñ stays ñ (in Spanish a letter of its own, not an accented n)."""
    text = unicodedata.normalize("NFC", text).replace("ñ", "\0").replace("Ñ", "\1")
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return unicodedata.normalize("NFC", text).replace("\0", "ñ").replace("\1", "Ñ")


class CharTokenizer:
    def __init__(self, vocab):
        # vocab: list of strings, SPECIALS first, then single characters
        if list(vocab[: len(SPECIALS)]) != SPECIALS:
            raise ValueError("vocabulary must start with the special tokens " + " ".join(SPECIALS))
        self.vocab = list(vocab)
        self.stoi = {ch: i for i, ch in enumerate(self.vocab) if i >= len(SPECIALS)}
        self.pad_id, self.unk_id, self.instr_id, self.resp_id, self.eos_id = range(len(SPECIALS))

    @classmethod
    def from_texts(cls, texts):
        chars = sorted(set("".join(texts)))
        return cls(SPECIALS + chars)

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        return [self.stoi.get(ch, self.unk_id) for ch in text]

    def encode_array(self, text):
        """encode() for long texts, as a numpy uint16 array: the text's code points (UTF-32) index a
        table from every Unicode code point to its id (<unk> where the vocabulary lacks it). ~100x faster."""
        import numpy as np
        if getattr(self, "_table", None) is None:
            self._table = np.full(0x110000, self.unk_id, dtype=np.uint16)
            for ch, i in self.stoi.items():
                self._table[ord(ch)] = i
        return self._table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]

    def decode(self, ids, specials=False):
        """ids -> text. Specials are dropped (<unk> shows as U+FFFD), or spelled out with specials=True."""
        out = []
        for i in ids:
            i = int(i)
            if i >= len(SPECIALS):
                out.append(self.vocab[i])
            elif specials:
                out.append(SPECIALS[i])
            elif i == UNK:
                out.append("\ufffd")  # show that something unknown was here
        return "".join(out)

    def encode_instruction(self, prompt, response=None, max_len=None):
        """<instr> prompt <resp> [response <eos>] as ids, with the special ids inserted here.
        If it is longer than max_len, the prompt loses characters from its start (the end of a
        prompt, where the question usually is, is kept). Returns (ids, characters cut)."""
        p = self.encode(prompt)
        r = [] if response is None else self.encode(response) + [self.eos_id]
        cut = 0
        if max_len is not None and len(p) + len(r) + 2 > max_len:
            r = r[: max(0, max_len - 3)]  # only if the response alone is too long
            cut = max(0, len(p) + len(r) + 2 - max_len)
            p = p[cut:]
        return [self.instr_id] + p + [self.resp_id] + r, cut


def instruction_example(tok, prompt, response, max_len):
    """One training example for instruction tuning: (x, y, cut). x = ids[:-1] and y = ids[1:] of
    <instr> prompt <resp> response <eos>, with y = -100 (ignored by the loss) wherever the next token
    is still part of the prompt: the first kept target is the response's first token, predicted at
    <resp>, and the last is <eos>. The model learns to answer, not to write questions."""
    ids, cut = tok.encode_instruction(prompt, response, max_len=max_len)
    resp_pos = ids.index(tok.resp_id)
    y = ids[1:]
    y[:resp_pos] = [-100] * resp_pos
    return ids[:-1], y, cut
