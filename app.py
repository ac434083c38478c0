"""
A chat app over the trained instruction model: one file, Streamlit.

    streamlit run app.py                        # then open http://localhost:8501 (bound to 127.0.0.1)
    python app.py --faq-eval data/es/instructions/test.jsonl    # measure the FAQ matcher

The sidebar picks the checkpoint (any out*/ folder next to this file whose ckpt.pt is an
instruction model; LLMFS_OUT_ROOT points the scan elsewhere) and the sampling settings.
Each answer says where it came from: "FAQ" (a fixed answer, found by the table below before
the model is asked) or "modelo" (generated token by token). "Mirar dentro" shows
the attention of the last answer, the next-token probabilities and the training loss curve.

`import app` starts no UI: the pure parts (FAQ matcher, checkpoint scan) are plain functions;
the UI is main() and its helpers, which import streamlit themselves when Streamlit runs this script.
.streamlit/config.toml binds the server to 127.0.0.1 (the container's command overrides it).
"""
import copy
import dataclasses
import difflib
import functools
import glob
import json
import math
import os
import re
import sys
import threading
import time
import unicodedata
from typing import Callable

from configurator import json_lines  # these two are stdlib only: importing app stays light
from tokenizer import strip_accents

ROOT = os.path.dirname(os.path.abspath(__file__))
MAX_PROMPT_CHARS = 500
MAX_SYSTEM_CHARS = 300

# -----------------------------------------------------------------------------------------
# FAQ: three fixed answers, identical to the dataset's responses. Each is one entry of the table
# FAQ_ENTRIES below; a question gets an entry's answer when it names the entry's subject AND asks
# one of its intents, and shows no sign of another question (another intent word, animal or place).


@dataclasses.dataclass(frozen=True, eq=False)
class FaqEntry:
    key: str  # the dataset's kind
    answer: str  # the dataset's response, word for word
    subject: set  # the question names one of these (typos allowed) ...
    intents: tuple  # ... and asks one of these: (reason, test(q)); the first test that holds is the reason
    unless: Callable = lambda q: False  # ... unless this holds: another question, no intent counts
    allow: frozenset = frozenset()  # OTHER_INTENTS words that ask this entry's own question
    canon: tuple = ()  # model phrasings: a question this similar (difflib, 0.8) matches without an intent


def _forms(*words):
    """Each word with its plural (and feminine for -o words): perro -> perro perros perra perras."""
    out = set()
    for w in words:
        out.add(w)
        out.add(w + ("es" if w[-1] not in "aeiou" else "s"))
        if w.endswith("o"):
            out.update({w[:-1] + "a", w[:-1] + "as"})
    return out


# what is asked about
DOG = _forms("perro", "perrito", "can", "cachorro", "cachorrito", "chucho", "lomito") | {"firulais"} \
    | _forms("labrador", "chihuahua", "bulldog", "pug", "caniche", "poodle", "beagle", "dalmata")  # breeds are dogs
CAT = _forms("gato", "gatito", "minino", "michi", "gatico", "micho", "morrongo") | {"siames", "angora"}
CLASS = _forms("canino", "canido", "felino", "felido") | {"canidae", "felidae"}  # either family, for either animal
COUNTRY = {"costarica", "costarrica", "cr", "tiquicia"} | _forms("tico", "costarricense")
CAPITAL = {"capital"}
# other entities: an animal of the same families, another country or place
OTHER_ANIMALS = _forms("lobo", "zorro", "coyote", "chacal", "dingo", "hiena", "tigre", "leon", "jaguar",
                       "puma", "guepardo", "lince", "leopardo", "pantera", "ocelote", "oso", "vaca", "caballo",
                       "raton", "conejo", "pajaro", "pez", "delfin", "mapache", "zorrillo", "gallina",
                       "elefante", "jirafa", "murcielago", "tejon", "nutria", "comadreja", "coati", "mangosta",
                       "foca", "ballena", "mono", "perezoso", "tucan", "iguana", "cocodrilo", "ardilla", "rata",
                       "huron", "armadillo", "hormiguero", "danta", "pinguino", "loro", "tortuga", "serval",
                       "caracal", "margay", "manigordo", "yaguarundi", "tigrillo", "fenec", "licaon", "aguara",
                       "culpeo", "leona") | {"salvaje", "salvajes", "montes"}  # a wild dog or cat is another animal
OTHER_PLACES = {"panama", "nicaragua", "honduras", "guatemala", "salvador", "belice", "mexico", "cuba",
                "colombia", "venezuela", "ecuador", "peru", "bolivia", "chile", "argentina", "uruguay",
                "paraguay", "brasil", "españa", "francia", "italia", "portugal", "alemania", "eeuu", "usa",
                "dominicana", "haiti", "jamaica", "canada", "california", "marfil"} | _forms("provincia", "canton")
# "capital de X": X must be Costa Rica (or "el país", "la república" ... of it)
CAPITAL_OF_OK = {"pais", "republica", "estado", "nacion", "tierra"}
# other intents: quantity, time, cause, who, food, age, body, people, history, weather, language, ...
OTHER_INTENTS = ({"cuanto", "cuantos", "cuanta", "cuantas", "cuando", "porque", "quien", "quienes", "comer",
                  "come", "comen", "comida", "alimento", "raza", "razas", "edad", "años", "vive", "viven",
                  "vivir", "vida", "vidas", "pesa", "peso", "mide", "tamaño", "diente", "dientes",
                  "colmillo", "colmillos", "color", "colores", "pelo", "cola", "habitantes", "poblacion",
                  "fundo", "fundada", "fundacion", "antigua", "antiguo", "anterior", "antes", "fue",
                  "historia", "clima", "tiempo", "temperatura", "moneda", "visitar", "vuelo", "hotel",
                  "veterinario", "receta", "traduce", "traducir", "ingles", "frances", "aleman", "italiano",
                  "portugues", "japones", "significa", "significado", "palabra", "mas", "menos", "mejor",
                  "peor", "enfermedad", "vacuna", "vacunas", "cuidar", "cuido", "adoptar", "comprar",
                  "cuesta", "precio", "nombre", "llama", "llaman", "sueño", "soñar", "año", "dejo",
                  "flor", "arbol", "ave", "bandera", "himno", "escudo", "idioma", "lengua", "presidente",
                  "playa", "playas", "pib", "economia", "bebida", "plato", "tipica", "tipico",
                  # a qualified capital is another question: "capital cultural", "capital mundial del café"
                  "cultural", "economica", "financiera", "turistica", "mundial", "gastronomica",
                  "historica", "colonial", "provincial",
                  # "¿cuál era?" and "¿será Heredia la capital?" ask about today (what one forgot, a guess):
                  # a year is what rules another time out (the capital's unless)
                  # another sense of the word: a car jack ("gato hidráulico"), a hot dog ("perro caliente"),
                  # whose dog it is ("¿el perro pertenece al dueño?")
                  "hidraulico", "mecanico", "caliente", "calientes", "dueño", "dueña", "amo",
                  # something else about the capital's place: its river, volcano, airport, height, distance
                  "rio", "rios", "volcan", "volcanes", "aeropuerto", "altitud", "altura", "distancia",
                  "kilometros", "km", "metros", "universidad", "museo", "parque", "estadio", "barrio",
                  # something else about the animal: what lives on it, what it hunts, a look-alike
                  "pulga", "pulgas", "garrapata", "garrapatas", "parasito", "parasitos", "virus", "bacteria",
                  "bacterias", "caza", "cazan", "persigue", "persiguen", "praderas"})
# "nombre"/"llama" ask for a name: the capital's name is the capital ("¿cómo se llama la capital ...?")
NAMING = frozenset({"nombre", "llama"})
# verbs that state a class: "los perros SON caninos", "el gato PERTENECE a los félidos"
COPULA = {"es", "son", "ser", "sea", "sean", "era", "=", "pertenece", "pertenecen", "entra", "entran",
          "forma", "forman", "considera", "consideran", "considerado", "considerados", "cuenta", "cuentan"}
# words that may stand between the copula and the class: "es UN ANIMAL canino", "son DE LA FAMILIA de los cánidos"
BRIDGE = {"un", "una", "el", "la", "los", "las", "de", "del", "a", "al", "en", "animal", "animales",
          "mamifero", "mamiferos", "parte", "familia", "categoria", "grupo", "clase", "tipo", "especie",
          "realmente", "tambien", "o", "no", "si", "solo", "verdaderamente", "como", "miembro", "miembros"}
# a telegraphic question holds nothing but these, the subject and the class: "perro?? canino??"
FILLER = BRIDGE | {"y", "que", "verdad", "cierto", "acaso", "o", "es", "son", "=", "felino", "canino"}
# "mi familia" is the asker's family, not the animal's
POSSESSIVE = {"mi", "mis", "tu", "tus", "nuestra", "nuestro"}
# after "qué es un perro" only these (and biolog*/zoolog*/taxonom* words) may follow: a "perro guía"
# is another question
DEFINITION_TAIL = {"domestico", "domesticos", "domestica", "hablando", "en", "terminos", "desde", "el",
                   "punto", "de", "vista", "la", "por", "favor", "exactamente", "realmente", "para", "ti",
                   "usted", "cientificamente", "cientifico", "ciencia"}
SCIENCE = ("biolog", "zoolog", "taxonom")
# real words one edit away from a keyword: never read them as typos
NOT_TYPOS = {"camino", "caminos", "capitan", "capitel", "capitulo", "capitales", "perla", "perlas", "perno",
             "pernos", "cerro", "cerros", "gaita", "gatillo", "costar", "costas", "rico", "ricos", "bicho", "bichos"}
# rewritten before matching: idioms that are not intents, and "Costa Rica" spelled short
ALIASES = [(r"\bc\s+rica\b", "costarica"), (r"\bc\s+r\b", "costarica"), (r"\bpor\s+que\b", "porque"),
           (r"\ben cuanto a\b", "sobre"), (r"\ben (pocas|breves|dos) palabras\b", "breve"),
           (r"\bcomo se dice\b", "traducir"),
           # "¿cómo se llama la familia del perro?" asks for the family, not for a name
           (r"\b(?:nombre|llama)\s+((?:\w+\s+){0,2}(?:familia|grupo|clase))\b", r"\1")]

# what kind of animal a dog or a cat is: the same questions for both (q.subject is the entry's animal)
ANIMAL_INTENTS = (
    ("afirma una clase", lambda q: q.states(CLASS)),  # "¿los perros son felinos?" (the answer corrects it)
    ("clase, en telegrama", lambda q: q.has(CLASS) and q.only(FILLER, CLASS)),  # "perro: canino o felino?"
    ("pregunta por la familia",  # "familia" (typos too, not "mi familia"), "clasifica", "taxonomía"
     lambda q: q.has({"familia"}, not_after=POSSESSIVE) or q.says(r"\b(clasific|taxonom)")),
    ("pregunta qué animal es",
     lambda q: q.says(r"\b(tipo|clase|grupo)\s+(de\s+)?(animal|animales|mamifero|mamiferos|ser vivo|zoologico)\b",
                      r"\bque\s+(tipo|clase|grupo|animal)\s+(es|son)\b")),
    ("pregunta a qué pertenece", lambda q: q.says(r"\bpertenece(n)?\b")),
    ("pregunta qué es", lambda q: q.defines(DEFINITION_TAIL, SCIENCE)),  # not "¿qué es un perro guía?"
)

FAQ_ENTRIES = (
    FaqEntry("fact:perro", "Los perros son caninos: pertenecen a la familia de los cánidos (Canidae).",
             subject=DOG, intents=ANIMAL_INTENTS, unless=lambda q: q.has(CAT),  # dogs and cats: another question
             canon=("a que familia pertenece el perro", "que tipo de animal es el perro", "los perros son caninos")),
    FaqEntry("fact:gato", "Los gatos son felinos: pertenecen a la familia de los félidos (Felidae).",
             subject=CAT, intents=ANIMAL_INTENTS, unless=lambda q: q.has(DOG),
             canon=("a que familia pertenece el gato", "que tipo de animal es el gato", "los gatos son felinos")),
    FaqEntry("fact:capital", "La capital de Costa Rica es San José.",
             subject=COUNTRY, intents=(
                 ("capital de Costa Rica", lambda q: q.has(CAPITAL)),
                 ("sede del gobierno",  # "¿en qué ciudad está el gobierno de Costa Rica?"
                  lambda q: q.says(r"\b(gobiern\w*|poderes|sede)\b") and q.says(r"\b(ciudad|donde|urbe)\b"))),
             # "capital de la provincia de ...", or of another year: Cartago was the capital until 1823
             unless=lambda q: q.names_other("capital", CAPITAL_OF_OK) or q.says(r"\b[12]\d{3}\b"),
             allow=NAMING, canon=("cual es la capital de costa rica", "capital de costa rica")),
)
FAQ = {e.key: e.answer for e in FAQ_ENTRIES}  # key -> answer


def match_faq(prompt):
    """The FAQ key ('fact:perro', 'fact:gato', 'fact:capital') that answers prompt, or None.

    A match needs a subject (perro / gato / Costa Rica) AND a matching intent (a class or family
    question, or 'capital of'), and no sign of another question: another intent word (how many,
    when, why, eat, age, ...), another animal, another country or place, or both dogs and cats."""
    key, why = match_faq_explain(prompt)
    return key


def match_faq_explain(prompt):
    """(key or None, the reason) — match_faq with its reason, for the eval CLI and the app's caption."""
    toks = _tokens(prompt)
    if not toks or len(toks) > 40:
        return None, "vacía o demasiado larga"
    asked, hits = [], []  # (entry, question) for each entry whose subject is named; (entry, reason)
    for e in FAQ_ENTRIES:
        q = Question(toks, e.subject)
        if not q.has(e.subject):
            continue
        asked.append((e, q))
        why = None if e.unless(q) else next((why for why, test in e.intents if test(q)), None)
        if why:
            hits.append((e, why))
    if not hits:  # whole-question similarity for what the intents missed (never what unless ruled out:
        # "¿la capital de Heredia, Costa Rica?" is as similar as it gets, and another question)
        hits = [(e, "parecida a una pregunta modelo") for e, q in asked if not e.unless(q)
                and max(difflib.SequenceMatcher(None, q.text, c).ratio() for c in e.canon) >= 0.8]
    if len(hits) != 1:
        return None, "ninguna regla" if not hits else "ambigua: " + ", ".join(sorted(e.key for e, _ in hits))
    (e, why), = hits
    blockers = OTHER_INTENTS - e.allow
    stop = [t for t in toks if t in blockers or (t.endswith("s") and t[:-1] in blockers)]
    stop += [t for t in toks if t in OTHER_PLACES or t in OTHER_ANIMALS]
    if stop:
        return None, f"{e.key} ({why}) rechazada por: {' '.join(stop)}"
    return e.key, why


# the matching machinery: normalized tokens, typo-tolerant lookups, the tests the table's intents use


def normalize(text):
    """Lowercase, accents stripped (ñ kept), punctuation removed, whitespace collapsed."""
    text = strip_accents(unicodedata.normalize("NFC", text).lower())
    text = text.replace("=", " = ")  # "perros = caninos" keeps its copula
    text = "".join(c if c.isalnum() or c in " =" else " " for c in text)
    return " ".join(text.split())


def _tokens(prompt):
    text = normalize(prompt)
    for pat, rep in ALIASES:
        text = re.sub(pat, rep, text)
    out = []
    for t in text.split():  # "costa rica", "costa rca", "cota rica" -> one token
        if out and _one_edit(out[-1] + t, "costarica"):
            out[-1] = "costarica"
        else:
            out.append(t)
    return out


def _one_edit(a, b):
    """True if a and b differ by at most one insertion, deletion, substitution or adjacent swap."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1:]


def _in(token, lexicon):
    """Token in the lexicon, or a typo of one of its words (one edit, words of 5+ letters)."""
    if token in lexicon:
        return True
    if len(token) < 5 or token in NOT_TYPOS:
        return False
    return any(len(w) >= 5 and _one_edit(token, w) for w in lexicon)


class Question:
    """A question's tokens as one FAQ entry sees them: subject is that entry's subject words."""

    def __init__(self, toks, subject):
        self.toks, self.text, self.subject = toks, " ".join(toks), subject

    def has(self, lexicon, not_after=()):
        """A word of lexicon (or a typo of one), not right after a word of not_after."""
        return any(_in(t, lexicon) and (i == 0 or self.toks[i - 1] not in not_after)
                   for i, t in enumerate(self.toks))

    def says(self, *patterns):
        """One of the regular expressions matches the normalized text (words joined by one space)."""
        return any(re.search(p, self.text) for p in patterns)

    def only(self, words, fuzzy):
        """Nothing but words, the subject and fuzzy (typos allowed in the last two)."""
        return all(t in words or _in(t, self.subject) or _in(t, fuzzy) for t in self.toks)

    def states(self, klass):
        """A copula followed (within a few bridge words) by a class word: 'los perros son (unos) caninos'."""
        for i, t in enumerate(self.toks):
            if t in COPULA:
                for u in self.toks[i + 1:i + 7]:
                    if _in(u, klass):
                        return True
                    if u not in BRIDGE and not _in(u, self.subject):
                        break
        return False

    def defines(self, tail, stems):
        """'qué es un <subject>', followed only by tail words or words with one of the stems."""
        m = re.search(r"\bque\s+(es|son)\s+(un|una|el|la|los|las)?\s*(\w+)\s*(.*)$", self.text)
        return bool(m) and _in(m.group(3), self.subject) and all(w in tail or w.startswith(stems)
                                                                  for w in m.group(4).split())

    def names_other(self, word, ok):
        """'<word> de X' with X neither the subject nor a word of ok: 'la capital de (la provincia de) ...'."""
        found = re.findall(rf"\b{word}\s+(?:de|del)\s+(?:(?:la|el|los|las)\s+)?(\w+)", self.text)
        return any(not (_in(x, self.subject) or x in ok) for x in found)


def faq_eval(path, verbose=False):
    """Recall per fact and false matches on the other kinds, for a jsonl with prompt/kind fields. A kind
    'group/kind' (the conversation files: followup/fact:gato) is judged by its kind; a line with a system
    prompt is left out (the app never answers those from the FAQ) and counted under 'with system prompt'.
    Earlier turns ('history') are not read: the app matches the question alone, as here."""
    rows = []
    with open(path, encoding="utf-8") as f:
        lines = list(json_lines(f))
    for n, r in lines:
        if r is None:
            raise ValueError(f"line {n}: not valid JSON")
        if not (isinstance(r, dict) and isinstance(r.get("prompt"), str) and isinstance(r.get("kind"), str)):
            raise ValueError(f"line {n}: expected an object with string 'prompt' and 'kind' fields")
        rows.append(r)
    stats = {}
    misses, false = [], []
    for r in rows:
        if r.get("system"):
            stats.setdefault("with system prompt", {"n": 0, "skipped": True})["n"] += 1
            continue
        kind = r["kind"].rsplit("/", 1)[-1]
        got = match_faq(r["prompt"])
        s = stats.setdefault(r["kind"], {"n": 0, "hit": 0, "matched": 0})
        s["n"] += 1
        s["matched"] += got is not None
        if kind in FAQ:
            s["hit"] += got == kind
            if got != kind:
                misses.append(r)
        elif got is not None:
            false.append((r, got))
    if verbose:
        for r in misses:
            print(f"  miss  [{r['kind']}] {r['prompt']}  -> {match_faq_explain(r['prompt'])[1]}")
        for r, got in false:
            print(f"  FALSE [{r['kind']}] {r['prompt']}  -> {got}")
    return stats, misses, false


def _faq_cli(argv):
    paths = [a for a in argv if not a.startswith("-")]
    if not paths:
        print("usage: python app.py --faq-eval FILE.jsonl [FILE.jsonl ...] [-v]", file=sys.stderr)
        return 2
    bad = 0
    for path in paths:
        try:
            stats, misses, false = faq_eval(path, verbose="-v" in argv)
        except (OSError, ValueError) as e:  # (UnicodeDecodeError is a ValueError)
            print(f"error: cannot read {path}: {e}", file=sys.stderr)
            return 2
        print(path)
        for kind in sorted(stats):
            s = stats[kind]
            if s.get("skipped"):
                print(f"  {kind}: {s['n']} left out (the app answers them with the model)")
            elif kind.rsplit("/", 1)[-1] in FAQ:
                print(f"  {kind:13s} recall {s['hit']}/{s['n']} = {s['hit'] / s['n']:.1%}")
            else:
                print(f"  {kind:13s} false matches {s['matched']}/{s['n']}")
        bad += len(false)
    return 1 if bad else 0


# -----------------------------------------------------------------------------------------
# checkpoints: every out*/ckpt.pt of kind 'instr' under LLMFS_OUT_ROOT (default: next to app.py)
AVATARS = {"user": ":material/person:", "assistant": ":material/smart_toy:"}
TRAIN_COMMANDS = ["python prepare.py --tokenizer=bpe --vocab_size=2048",
                  "python train.py config/pretrain_char.py config/pretrain_bpe.py",
                  "python finetune_instr.py config/finetune_instr.py"]
_KIND_CACHE = {}


def out_root():
    return os.path.abspath(os.environ.get("LLMFS_OUT_ROOT") or ROOT)


def checkpoint_kind(path):
    """The 'kind' of a checkpoint file, or None if it is not a readable kit checkpoint (cached)."""
    try:
        st_ = os.stat(path)
    except OSError:
        return None
    key = (path, st_.st_mtime_ns, st_.st_size)
    if key not in _KIND_CACHE:
        import torch
        try:  # mmap: only the small header is read, not every tensor
            ck = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            _KIND_CACHE[key] = ck.get("kind") if isinstance(ck, dict) else None
        except Exception:
            _KIND_CACHE[key] = None
    return _KIND_CACHE[key]


def find_checkpoints(root=None, want="instr"):
    """([(name, path)] of checkpoints of kind `want`, [(name, why)] of out*/ folders skipped)."""
    root = root or out_root()
    found, skipped = [], []
    for d in sorted(glob.glob(os.path.join(root, "out*"))):
        if not os.path.isdir(d):
            continue
        name, path = os.path.basename(d), os.path.join(d, "ckpt.pt")
        if not os.path.isfile(path):
            continue
        kind = checkpoint_kind(path)
        if kind == want:
            found.append((name, path))
        else:
            skipped.append((name, f"modelo '{kind}'" if kind else "no se puede leer"))
    found.sort(key=lambda x: (x[0] not in ("out-instr", "out-cls"), x[0]))  # out-instr / out-cls first: the default
    return found, skipped


# -----------------------------------------------------------------------------------------
# model helpers (torch is imported only when they run)


def escape_md(text):
    """Model or user text shown literally by st.markdown (no markup, no HTML, no emoji codes)."""
    # (& and = too: "&lt;b&gt;" would show as <b>, and a line of === under text as a heading)
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>$~:&=])", r"\\\1", text).replace("\n", "  \n")


def token_view(tok, ids):
    """The token view: each token between ⟨ ⟩, as the tokenizer cut the text (a character per token
    for a char model; words and word pieces with BPE; a byte that is only part of a character as <0xC3>)."""
    return "".join(f"⟨{tok.piece(i)}⟩" for i in ids)


def inspect_sequence(model, ids):
    """One forward pass over ids with attention recording on: (att (L, nh, T, T), probs (T, V)).
    model must be a private copy (its attention modules keep their weights in .att)."""
    import torch
    bs = model.config.block_size
    ids = list(ids)[-bs:]
    for block in model.h:
        block.attn.record = True
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids], dtype=torch.long, device=model.wte.weight.device))
    att = torch.stack([block.attn.att[0] for block in model.h]).float().cpu().numpy()
    probs = torch.softmax(logits[0].float(), dim=-1).cpu().numpy()
    for block in model.h:
        block.attn.att = None
    return att, probs


LOSS_COLORS = {"preentrenamiento · lote": "#cfe3e0", "preentrenamiento · train": "#88c7be",
               "preentrenamiento · val": "#1b7f74", "ajuste · lote": "#c9c3bf", "ajuste · train": "#4c78a8",
               "ajuste · val": "#e45756"}


def loss_history_frame(ckpt_meta):
    """Long-form rows (paso, pérdida, serie) from history and pretrain_history; fine-tuning steps
    continue after the last pretraining step. Returns (rows, step where fine-tuning starts)."""
    names = {"loss": "lote", "train_loss": "train", "val_loss": "val"}
    rows, offset = [], None
    pre = [h for h in (ckpt_meta.get("pretrain_history") or []) if isinstance(h, dict) and "iter" in h]
    fine = [h for h in (ckpt_meta.get("history") or []) if isinstance(h, dict) and "iter" in h]
    for phase, hist, shift in (("preentrenamiento", pre, 0), ("ajuste", fine, None)):
        if shift is None:
            shift = (max(h["iter"] for h in pre) if pre else 0)
            offset = shift if pre and fine else None
        for h in hist:
            for k, label in names.items():
                v = h.get(k)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    rows.append({"paso": h["iter"] + shift, "pérdida": float(v), "serie": f"{phase} · {label}"})
    return rows, offset


# -----------------------------------------------------------------------------------------
# the UI: main() and its helpers import streamlit (and altair, pandas) themselves


@dataclasses.dataclass(frozen=True)
class Settings:
    """The sidebar's answer settings."""
    max_new: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = all tokens
    use_faq: bool = True
    show_raw: bool = False
    show_tokens: bool = False
    use_history: bool = True  # the earlier turns go into the prompt
    system: str = ""  # the system prompt

    def label(self):
        return f"T={self.temperature:g}, top-k={self.top_k or '—'}, máx={self.max_new}"


@dataclasses.dataclass(frozen=True)
class Loaded:
    """One checkpoint file version, loaded once and shared by every session."""
    name: str  # its out*/ folder
    path: str
    mtime: int  # st_mtime_ns: a rewritten checkpoint is loaded again
    model: object
    spy: object  # a private copy for "Mirar dentro": its attention modules keep their weights
    tok: object
    meta: dict  # the checkpoint without its weights, plus n_params and device
    lock: object  # one "Mirar dentro" pass at a time on the shared spy


def app_device():
    """LLMFS_DEVICE (default auto) as a device name. A bad one is a ValueError in the app's own terms:
    the app has no --device flag."""
    from checkpoint import pick_device
    name = os.environ.get("LLMFS_DEVICE", "auto")
    try:
        return pick_device(name)
    except ValueError as e:
        raise ValueError(f"LLMFS_DEVICE={name!r}: " + str(e).replace("--device=", "LLMFS_DEVICE=")) from None


@functools.cache
def model_caches():
    """(load_model, look_inside) behind Streamlit's caches, made on first use so that `import app`
    imports neither streamlit nor torch."""
    import streamlit as st

    from checkpoint import load_checkpoint, model_from_checkpoint

    @st.cache_resource(show_spinner="Cargando el modelo…", max_entries=4)
    def load_model(path, mtime_ns):  # once per checkpoint file version, shared by all sessions
        ckpt = load_checkpoint(path, kinds=("instr",))
        device = app_device()
        model, tok = model_from_checkpoint(ckpt, device)
        meta = {k: v for k, v in ckpt.items() if k != "model"}
        meta.update(n_params=model.num_params(), device=device, file_mb=os.path.getsize(path) / 1e6)
        return Loaded(os.path.basename(os.path.dirname(path)), path, mtime_ns, model, copy.deepcopy(model),
                      tok, meta, threading.Lock())

    @st.cache_data(show_spinner=False, max_entries=32)
    def look_inside(path, mtime_ns, ids):  # cached per answer (its token ids)
        res = load_model(path, mtime_ns)
        with res.lock:
            return inspect_sequence(res.spy, ids)

    return load_model, look_inside


def main():
    import streamlit as st

    st.set_page_config(page_title="LLM desde cero · chat", page_icon="💬", layout="centered")
    st.markdown("""<style>
        div[data-testid="stChatMessage"] p { font-size: 1.05rem; }
        </style>""", unsafe_allow_html=True)
    res, settings = sidebar()
    st.title(":material/forum: LLM desde cero")
    tab_chat, tab_cls = st.tabs([":material/forum: Chat", ":material/label: Clasificar"])
    with tab_cls:  # drawn first: the chat below may end the run early (st.rerun)
        classify_tab()
    with tab_chat:
        chat_tab(res, settings)


def chat_tab(res, settings):
    import streamlit as st

    from tokenizer import clean_text

    msgs = st.session_state.setdefault("messages", [])
    st.caption(f"Un GPT entrenado con este kit (`{res.name}`). Sabe tres cosas: "
               "de qué familia son los perros y los gatos, y la capital de Costa Rica; lo demás, "
               "*No lo sé*. Recuerda la conversación: prueba «¿Y los gatos?» después de preguntar por los perros.")

    # ---- presets
    presets = ["¿A qué familia pertenece el perro?", "¿Qué tipo de animal es el gato?",
               "¿Cuál es la capital de Costa Rica?"]
    pending = None
    for i, (col, q) in enumerate(zip(st.columns(len(presets)), presets)):
        if col.button(q, key=f"preset_{i}", width="stretch"):
            pending = q

    # ---- history
    last_model = max((i for i, m in enumerate(msgs) if m.get("source") == "modelo"), default=None)
    for i, m in enumerate(msgs):
        with st.chat_message(m["role"], avatar=AVATARS[m["role"]]):
            if m["role"] == "user":
                st.markdown(escape_md(m["content"]))
                continue
            render_answer(m, settings.show_raw, settings.show_tokens)
            if i == last_model:
                render_inside(m)

    # max_chars: the browser stops typing there and Streamlit cuts what a client sends; the length
    # is checked again after clean_text, which can lengthen a text (NFC)
    typed = st.chat_input("Escribe tu pregunta…", key="chat", max_chars=MAX_PROMPT_CHARS)
    prompt = typed if typed is not None else pending
    if prompt is None:
        return
    prompt = clean_text(prompt).strip()
    if not prompt:
        return
    if len(prompt) > MAX_PROMPT_CHARS:
        msgs.append({"role": "assistant", "source": "aviso",
                     "content": f"Tu mensaje tiene {len(prompt)} caracteres y el máximo es {MAX_PROMPT_CHARS}. "
                                "Acórtalo (la pregunta suele caber en una línea) y vuelve a enviarlo."})
        st.rerun()
    history = conversation(msgs) if settings.use_history else []  # the turns before this question
    msgs.append({"role": "user", "content": prompt})
    with st.chat_message("user", avatar=AVATARS["user"]):
        st.markdown(escape_md(prompt))
    with st.chat_message("assistant", avatar=AVATARS["assistant"]):
        try:
            reply = answer(prompt, res, settings, history)
        except BaseException:  # Streamlit stopped this run mid-answer (a new question, the stop button)
            msgs.append({"role": "assistant", "source": "aviso", "content": "Respuesta interrumpida."})
            raise
    msgs.append(reply)
    st.rerun()


def sidebar():
    """The sidebar: the checkpoint (loaded) and the answer settings. Without a usable checkpoint
    it shows the 'train one first' page instead and stops the run."""
    import streamlit as st

    from checkpoint import CheckpointError

    root = out_root()
    found, skipped = find_checkpoints(root)
    if not found:
        no_checkpoint_page(root, skipped)
    sb = st.sidebar
    sb.header(":material/tune: Ajustes")
    before = st.session_state.get("ckpt")  # the model chosen on the last run
    choice = sb.selectbox("Modelo (checkpoint)", [n for n, _ in found], key="ckpt",
                          help="Carpetas `out*/` con un checkpoint de instrucciones (finetune_instr.py).")
    if before is not None and before != choice and before not in dict(found):  # its folder went away
        st.warning(f"`{before}` ya no está en disco: ahora responde `{choice}`.")
    path = dict(found)[choice]
    try:
        app_device()
    except ValueError as e:  # the setting's fault, not the checkpoint's: no "train one first" page
        st.error(f"No se pudo cargar el modelo: {e}")
        st.stop()
    load_model, _ = model_caches()
    try:
        res = load_model(path, os.stat(path).st_mtime_ns)
    except (CheckpointError, ValueError) as e:
        if len(found) > 1:  # the others may load: say so, instead of the "train one first" page
            st.error(f"No se pudo cargar `{choice}`: {e}")
            st.info("Elige otro modelo en la barra lateral.")
            st.stop()
        no_checkpoint_page(root, skipped, error=str(e))
    cfg, tok, meta = res.model.config, res.tok, res.meta
    sb.caption(f"{meta['n_params'] / 1e6:.2f} M parámetros · {cfg.n_layer} capas · {cfg.n_head} cabezas · "
               f"{cfg.n_embd} dims · contexto {cfg.block_size} · {len(tok)} tokens "
               f"({'caracteres' if tok.kind == 'char' else 'BPE'}) · "
               f"iter {meta.get('iter_num', '?')} · {meta['device']}"
               + (f" · cuantizado int{meta['quant']['bits']}, {meta['file_mb']:.2f} MB" if "quant" in meta else ""))
    settings = Settings(
        max_new=sb.slider("Máx. tokens nuevos", 8, 512, 128, step=8, key="max_new_tokens",
                          help="Un token es un carácter (o, con BPE, un trozo de palabra). La respuesta termina antes "
                               "si el modelo escribe <eos>."),
        temperature=sb.slider("Temperatura", 0.0, 2.0, 0.0, step=0.05, key="temperature",
                              help="0 = codicioso: siempre el token más probable (respuesta determinista)."),
        # a fixed range (not the vocabulary's size): a range that changes with the model resets the slider
        top_k=sb.slider("top-k", 0, 200, 0, key="top_k",
                        help="Con temperatura > 0: muestrea solo entre los k tokens más probables (0 = todos)."),
        use_faq=sb.toggle("Respuestas fijas (FAQ) primero", value=True, key="faq",
                          help="Las tres preguntas del conjunto (perros, gatos, capital de Costa Rica) se "
                               "responden con el texto fijo del dataset, sin el modelo."),
        show_raw=sb.toggle("Mostrar traza cruda", value=False, key="raw",
                           help="El texto completo que ve el modelo: [<sys>sistema] los turnos anteriores y <instr>pregunta<resp>respuesta<eos>."),
        show_tokens=sb.toggle("Ver tokens", value=False, key="tokens",
                              help="La pregunta y la respuesta partidas en los tokens que lee y escribe el "
                                   "modelo (caracteres, o trozos de palabra con BPE)."),
        use_history=sb.toggle("Recordar la conversación", value=True, key="history",
                              help="Las preguntas y respuestas anteriores entran en el prompt (las más antiguas "
                                   "salen primero si no caben), así el modelo entiende «¿Y los gatos?»."),
        system=system_prompt_box(sb, tok))
    if sb.button("Nueva conversación", key="new_chat", icon=":material/restart_alt:", width="stretch"):
        st.session_state.messages = []
    if skipped:
        sb.caption("Ignorados: " + ", ".join(f"`{n}` ({why})" for n, why in skipped))
    return res, settings


def system_prompt_box(sb, tok):
    """The system prompt box. Rendered for every model, disabled for one without <sys>: Streamlit forgets
    the text of a widget left out of a run, so a round trip through such a model would erase it. Its
    text reaches only a model with <sys>."""
    from tokenizer import clean_text
    text = clean_text(sb.text_area(
        "Prompt de sistema", value="", key="system", max_chars=MAX_SYSTEM_CHARS, height=80,
        placeholder="p. ej. Responde solo sí o no.", disabled=tok.sys_id is None,
        help="Una instrucción para toda la conversación, antes de los turnos (<sys>…)." if tok.sys_id is not None
        else "Este modelo se entrenó sin <sys>: no admite prompt de sistema.") or "").strip()
    return text if tok.sys_id is not None else ""


def no_checkpoint_page(root, skipped, error=None):
    import streamlit as st

    st.title(":material/forum: LLM desde cero")
    if error:
        st.error(f"No se pudo cargar el modelo: {error}")
    else:
        st.warning(f"No encontré ningún modelo de instrucciones en `{root}` "
                   "(una carpeta `out*/` con un `ckpt.pt` de tipo *instr*).")
    st.markdown("Entrena uno con estos tres pasos (desde la raíz del repositorio) y recarga la página:")
    st.code("\n".join(TRAIN_COMMANDS), language="bash")
    st.caption("Con `LLMFS_OUT_ROOT=/otra/carpeta` la app busca los `out*/` en otra parte. "
               "En Docker: `--build-arg TRAIN_DEMO=1` o monta `out-instr` como volumen.")
    if skipped:
        st.caption("Ignorados: " + ", ".join(f"`{n}` ({why})" for n, why in skipped))
    if find_checkpoints(root, want="cls")[0]:  # a classifier needs no chat model: its tab still works
        st.subheader(":material/label: Clasificar")
        classify_tab()
    st.stop()


def classify_tab():
    """The 'Clasificar' tab: an out*/ classifier (finetune_cls.py) labels a typed text, with the
    probability of every label."""
    import streamlit as st

    from tokenizer import clean_text

    found, _ = find_checkpoints(out_root(), want="cls")
    if not found:
        st.info("No hay clasificadores `out*/` (kind 'cls'). Entrena uno: "
                "`python finetune_cls.py config/finetune_cls.py`.")
        return
    name = st.selectbox("Clasificador (checkpoint)", [n for n, _ in found], key="cls_ckpt")
    path = dict(found)[name]
    text = st.text_area("Texto", key="cls_text", max_chars=MAX_PROMPT_CHARS, height=100,
                        placeholder="p. ej. El producto llegó roto y nadie responde.")
    clicked = st.button("Clasificar", key="cls_go", icon=":material/label:")
    text = clean_text(text or "").strip()
    last = st.session_state.get("cls_result")
    if not clicked:  # a rerun for something else (a chat question): the last result stays on screen
        if last and (last["checkpoint"], last["text"]) == (name, text):
            show_classification(last["probs"])
        return
    if not text:
        st.warning("Escribe un texto para clasificar.")
        return
    if len(text) > MAX_PROMPT_CHARS:
        st.warning(f"El texto tiene {len(text)} caracteres y el máximo es {MAX_PROMPT_CHARS}.")
        return
    try:
        labels, probs = classifier_cache()(path, os.stat(path).st_mtime_ns, text)
        if not all(math.isfinite(p) for p in probs):  # damaged weights: NaN is not a prediction
            raise ValueError("the classifier gave probabilities that are not numbers (a damaged checkpoint?)")
    except Exception as e:  # a damaged or misfitting checkpoint: a message, not a traceback
        st.error(f"No se pudo clasificar ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        return
    best = max(range(len(labels)), key=lambda k: probs[k])
    st.session_state["cls_result"] = {"checkpoint": name, "text": text, "label": labels[best],
                                      "probs": dict(zip(labels, probs))}
    show_classification(st.session_state["cls_result"]["probs"])


def show_classification(probs):
    """The predicted label with its probability, and every label's probability as bars. probs: {label: p}."""
    import altair as alt
    import pandas as pd
    import streamlit as st

    labels, probs = list(probs), list(probs.values())
    best = max(range(len(labels)), key=lambda k: probs[k])
    st.markdown(f"**{escape_md(labels[best])}** · {probs[best]:.1%}")
    df = pd.DataFrame({"etiqueta": labels, "probabilidad": probs})
    st.altair_chart(alt.Chart(df).mark_bar().encode(
        x=alt.X("probabilidad:Q", scale=alt.Scale(domain=[0, 1])), y=alt.Y("etiqueta:N", sort="-x", title=None),
        tooltip=["etiqueta", alt.Tooltip("probabilidad:Q", format=".3f")]), width="stretch", height=40 * len(labels) + 40)


@functools.cache
def classifier_cache():
    """classify(path, mtime_ns, text) -> (labels, probabilities), the classifier loaded once per file version."""
    import streamlit as st

    @st.cache_resource(show_spinner="Cargando el clasificador…", max_entries=2)
    def load(path, mtime_ns):
        from finetune_cls import load_classifier
        ckpt, clf, tok = load_classifier(path, "cpu", cli=False)
        return ckpt["labels"], clf, tok

    def classify_text(path, mtime_ns, text):
        from finetune_cls import classify
        labels, clf, tok = load(path, mtime_ns)
        return labels, classify(clf, tok, [text])[0].tolist()
    return classify_text


def conversation(msgs):
    """The (question, answer) turns of the chat so far, oldest first: a user message and the answer
    that followed it (from the model or the FAQ; warnings and errors are not turns)."""
    return [(u["content"], a.get("text", a["content"])) for u, a in zip(msgs, msgs[1:])
            if u["role"] == "user" and a["role"] == "assistant" and a.get("source") in ("modelo", "FAQ")]


def answer(prompt, res, settings, history=()):
    """Answer one prompt inside the current chat message (res: the Loaded checkpoint), after the earlier
    turns in history; returns the message dict for the chat. The FAQ answers only a question that is
    unambiguous alone (a follow-up such as "¿Y los gatos?" is the model's job)."""
    import streamlit as st

    from chat import answer_stream, prompt_ids

    t0 = time.perf_counter()
    if settings.use_faq and not settings.system:  # the FAQ's fixed sentences ignore a system prompt: the model's job
        key, why = match_faq_explain(prompt)
        if key:
            st.markdown(escape_md(FAQ[key]))
            return {"role": "assistant", "source": "FAQ", "content": FAQ[key], "rule": why,
                    "latency": time.perf_counter() - t0, "tokens": 0}
    tok = res.tok
    # the same prompt ids answer_ids builds; with the generated ids (kept as they come, not the text
    # encoded again: special tokens have no text of their own) they are the raw trace and "Mirar dentro"
    try:
        ids, cut, dropped = prompt_ids(tok, prompt, res.model.config.block_size, settings.max_new, history,
                                       settings.system)
    except ValueError as e:  # e.g. a system prompt for a vocabulary without <sys>: a message in the chat
        st.error(f"No se pudo preparar el prompt ({e})")
        return {"role": "assistant", "source": "error", "content": f"No se pudo preparar el prompt ({e})"}
    new, first = [], []

    def stream():
        for i, text in answer_stream(res.model, tok, prompt, settings.max_new, settings.temperature,
                                     settings.top_k or None, history=history, system=settings.system):
            if i is not None:  # a new token (None: the decoder's last bytes)
                if not first:
                    first.append(time.perf_counter() - t0)
                new.append(i)
            yield escape_md(text)

    try:
        st.write_stream(stream)
    except Exception as e:  # any generation error becomes a message in the chat
        msg = f"No se pudo generar la respuesta ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        st.error(msg)
        return {"role": "assistant", "source": "error", "content": msg}
    latency = time.perf_counter() - t0
    text = tok.decode(new)
    return {"role": "assistant", "source": "modelo", "content": text or "(respuesta vacía)",
            "latency": latency, "first": first[0] if first else latency, "tokens": len(new),
            "tps": len(new) / latency if latency > 0 else 0.0, "ckpt": res.name, "path": res.path,
            "mtime": res.mtime, "prompt_ids": ids, "answer_ids": new, "cut": cut, "text": text,
            "turns": len(history) - dropped, "dropped": dropped, "system": settings.system,
            "stopped": new[-1:] == [tok.eos_id], "raw": tok.decode(ids + new, specials=True),
            "token_view": [token_view(tok, ids), token_view(tok, new)],
            "settings": settings.label()}


def render_answer(m, show_raw, show_tokens=False):
    import streamlit as st

    src = m.get("source")
    if src == "aviso":
        st.warning(m["content"], icon=":material/front_hand:")
        return
    if src == "error":
        st.error(m["content"], icon=":material/error:")
        return
    st.markdown(escape_md(m["content"]))
    if src == "FAQ":
        st.caption(f":green-badge[FAQ] respuesta fija ({m['rule']}) · {m['latency'] * 1000:.1f} ms · "
                   "el modelo no se ejecutó")
        return
    st.caption(f":blue-badge[modelo] {m['latency']:.2f} s (primer token {m['first'] * 1000:.0f} ms) · "
               f"{m['tokens']} tokens · {m['tps']:.0f} tokens/s · `{m['ckpt']}` · {m['settings']}"
               + ("" if m["stopped"] else " · cortada: llegó al máximo de tokens")
               + (f" · recortados {m['cut']} tokens del inicio de la pregunta o del prompt de sistema"
                  if m["cut"] else "")
               + (f" · con {m['turns']} turno(s) anteriores" if m.get("turns") else "")
               + (f" · {m['dropped']} turno(s) antiguos no caben" if m.get("dropped") else "")
               + (" · con prompt de sistema" if m.get("system") else ""))
    if show_raw:
        st.code(m["raw"], language=None, wrap_lines=True)
    if show_tokens and "token_view" in m:
        st.caption(f"Pregunta: {len(m['prompt_ids'])} tokens · respuesta: {len(m['answer_ids'])} tokens")
        st.code("\n".join(m["token_view"]), language=None, wrap_lines=True)


def render_inside(m):
    """'Mirar dentro' of one model answer: attention heatmap, next-token bars, loss curve."""
    import altair as alt
    import pandas as pd
    import streamlit as st

    load_model, look_inside = model_caches()
    with st.expander("Mirar dentro de esta respuesta", icon=":material/biotech:"):
        try:
            ids = tuple(m["prompt_ids"] + m["answer_ids"])
            res = load_model(m["path"], m["mtime"])
            tok, meta = res.tok, res.meta
            att, probs = look_inside(m["path"], m["mtime"], ids)
            L, H, T, _ = att.shape
            ids = list(ids)[-T:]
            labels = [tok.piece(i) for i in ids]  # an id of another vocabulary fails here, not in a chart
        except Exception as e:  # e.g. the checkpoint file changed since this answer
            st.info(f"No se puede mirar dentro ({type(e).__name__}: {e}).")
            return
        if len(m["prompt_ids"]) + len(m["answer_ids"]) > T:  # generation slid its window: one pass cannot redo that
            st.caption(f"Pregunta y respuesta suman {len(m['prompt_ids']) + len(m['answer_ids'])} tokens, más que la "
                       f"ventana del modelo ({T}): esto es una pasada sobre los últimos {T}. Al generar, la ventana "
                       "se desplazó, así que las probabilidades de los primeros tokens mostrados pueden diferir.")
        tab_att, tab_next, tab_loss = st.tabs(["Atención", "Siguiente token", "Curva de pérdida"])
        with tab_att:
            c1, c2, c3 = st.columns(3)
            layer = c1.selectbox("Capa", list(range(L)), index=L - 1, key="inside_layer")
            head = c2.selectbox("Cabeza", ["media"] + list(range(H)), index=0, key="inside_head",
                                format_func=lambda h: "media de las cabezas" if h == "media" else f"cabeza {h}")
            n_ans = min(len(m["answer_ids"]), T)
            rows_of = c3.selectbox("Filas", ["respuesta", "todo"], index=0 if T > 64 and n_ans else 1,
                                   key="inside_rows", format_func=lambda r: {
                                       "respuesta": "solo la respuesta", "todo": "pregunta + respuesta"}[r])
            w = att[layer].mean(0) if head == "media" else att[layer, head]
            q0 = T - n_ans if rows_of == "respuesta" and n_ans else 0
            rows = [{"q": i, "k": j, "peso": float(w[i, j]), "consulta": f"{i}: {labels[i]}",
                     "clave": f"{j}: {labels[j]}"} for i in range(q0, T) for j in range(i + 1)]
            axis_labels = json.dumps(labels, ensure_ascii=True)
            chart = alt.Chart(pd.DataFrame(rows)).mark_rect().encode(
                x=alt.X("k:O", title="mira a (clave)",
                        axis=alt.Axis(labelExpr=f"{axis_labels}[datum.value]", labelAngle=0, labelFontSize=9)),
                y=alt.Y("q:O", title="desde (consulta)",
                        axis=alt.Axis(labelExpr=f"{axis_labels}[datum.value]", labelFontSize=9)),
                color=alt.Color("peso:Q", scale=alt.Scale(scheme="viridis"), title="peso"),
                tooltip=["consulta", "clave", alt.Tooltip("peso:Q", format=".3f")],
            )
            st.altair_chart(chart, width="stretch", height=min(640, max(220, 10 * (T - q0))) + 60)
            st.caption("Cada fila es un token que «mira» a los anteriores (la máscara causal oculta el "
                       "futuro). Una pasada hacia delante con `record=True` sobre toda la secuencia.")
        with tab_next:
            n_prompt = len(m["prompt_ids"])
            gen = [p for p in range(T) if ids and p >= T - len(m["answer_ids"]) and p >= 1]
            if not gen:
                st.info("La respuesta no tiene tokens generados.")
            else:
                pos = st.select_slider("Token generado", gen, value=gen[0], key="inside_pos",
                                       format_func=lambda p: f"{p - (T - len(m['answer_ids'])) + 1}: {labels[p]}")
                k = st.slider("k", 3, 20, 10, key="inside_k")
                dist = probs[pos - 1]  # the distribution that produced the token at pos
                top = dist.argsort()[::-1][:k]
                df = pd.DataFrame({"token": [f"{r + 1}. {tok.piece(t)}" for r, t in enumerate(top)],
                                   "probabilidad": [float(dist[t]) for t in top],
                                   "elegido": ["sí" if t == ids[pos] else "no" for t in top]})
                bars = alt.Chart(df).mark_bar().encode(
                    x=alt.X("probabilidad:Q", scale=alt.Scale(domain=[0, 1])),
                    y=alt.Y("token:N", sort=None, title=None,
                            axis=alt.Axis(labelOverlap=False, labelFontSize=13, labelLimit=120)),
                    color=alt.Color("elegido:N", scale=alt.Scale(domain=["sí", "no"], range=["#e4572e", "#4c78a8"]),
                                    legend=None),
                    tooltip=["token", alt.Tooltip("probabilidad:Q", format=".3f")],
                )
                st.altair_chart(bars, width="stretch", height=28 * k + 50)
                rank = int((dist > dist[ids[pos]]).sum()) + 1
                st.caption(f"Antes de escribir «{labels[pos]}» el modelo le daba {dist[ids[pos]]:.1%} "
                           f"(puesto {rank}). Probabilidades del modelo, sin temperatura ni top-k. "
                           f"La pregunta ocupa {n_prompt} tokens.")
        with tab_loss:
            rows, start = loss_history_frame(meta)
            if not rows:
                st.info("Este checkpoint no guarda historial de pérdida.")
            else:
                df = pd.DataFrame(rows)
                series = [s for s in LOSS_COLORS if s in set(df["serie"])]
                series += sorted(set(df["serie"]) - set(series))
                lines = alt.Chart(df).mark_line(point=alt.OverlayMarkDef(size=18)).encode(
                    x=alt.X("paso:Q", title="paso de entrenamiento"),
                    y=alt.Y("pérdida:Q", title="pérdida (entropía cruzada)", scale=alt.Scale(zero=False)),
                    color=alt.Color("serie:N", title=None, scale=alt.Scale(domain=series,
                                    range=[LOSS_COLORS.get(s, "#888888") for s in series]),
                                    legend=alt.Legend(orient="bottom", columns=3, labelLimit=220)),
                    tooltip=["serie", "paso", alt.Tooltip("pérdida:Q", format=".3f")])
                layers = [lines]
                if start is not None:
                    layers.append(alt.Chart(pd.DataFrame({"paso": [start]})).mark_rule(strokeDash=[4, 4])
                                  .encode(x="paso:Q"))
                st.altair_chart(alt.layer(*layers), width="stretch", height=340)
                best = meta.get("best_val_loss")
                st.caption("Del checkpoint: `pretrain_history` (preentrenamiento) y `history` (ajuste con "
                           "instrucciones, a partir de la línea discontinua). "
                           + (f"Mejor pérdida de validación: {best:.4f}." if isinstance(best, float) else ""))


def _in_streamlit():
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:
        return False
    return get_script_run_ctx(suppress_warning=True) is not None


if __name__ == "__main__":
    if _in_streamlit():
        main()
    elif "--faq-eval" in sys.argv:
        sys.exit(_faq_cli(sys.argv[1:]))
    else:
        print("run the app with:  streamlit run app.py\n"
              "measure the FAQ:   python app.py --faq-eval data/es/instructions/test.jsonl [-v]")
