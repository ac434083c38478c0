"""
Writes chat_train.jsonl and chat_test.jsonl: conversations whose last question needs the earlier
turns (follow-ups), earlier turns that must be ignored (context), and system prompts whose effect is
checkable (system). Run from the repository root:  python data/es/instructions/make_chat.py

Every phrasing below was written for this project. The first turns come from train.jsonl (for
chat_train) or test.jsonl (for chat_test); follow-ups, countries, animals, yes/no questions and
system prompts have separate train and test lists, so no final question is shared after
normalization. Each line: {"system", "history": [[question, answer], ...], "prompt", "response",
"kind"}, kind = group/judged kind (followup/fact:gato, context/abstain, system/yesno, ...).
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
rows = {s: [json.loads(line) for line in open(os.path.join(HERE, f"{s}.jsonl"), encoding="utf-8")]
        for s in ("train", "test")}
ANSWER = {r["kind"]: r["response"] for r in rows["train"]}  # one answer per kind
PERRO, GATO, CAPITAL, ABSTAIN = (ANSWER[k] for k in ("fact:perro", "fact:gato", "fact:capital", "abstain"))

PHRASES = {
    "train": {
        # follow-ups about the other pet: {s}/{p} singular/plural, {fs}/{fp} feminine, {d} diminutive (PET below)
        "fu_pet": ["¿Y los {p}?", "¿Y el {s}?", "¿Y qué me dices de los {p}?", "¿Y los {p} qué son?",
                   "¿Y en el caso del {s}?", "y los {p}?", "¿Y un {s}?", "¿Y los {p}, de qué familia son?",
                   "¿Y mi {fs}?", "¿Y el {s} doméstico qué es?", "¿Y las {fp}?", "Y el {s}, ¿qué es?",
                   "¿Pasa lo mismo con los {p}?", "¿Y sobre los {p}?", "Ahora los {p}.", "¿Y con el {s}?",
                   "¿Y acerca de los {p}?", "¿Y tratándose de un {s}?", "¿Lo mismo para los {p}?",
                   "¿Cómo es con los {p}?", "¿También los {p}?", "¿Sabes lo de los {p}?"],
        "countries": ["Panamá", "Nicaragua", "Honduras", "Chile", "Perú", "Bolivia", "Colombia", "México",
                      "Argentina", "Venezuela", "Francia", "Italia", "Japón", "Canadá", "Guatemala", "España"],
        "fu_country": ["¿Y la de {c}?", "¿Y la capital de {c}?", "¿Y la de {c} cuál es?", "¿Y en el caso de {c}?",
                       "¿Y {c}?", "y la de {c}?", "¿Cuál sería la de {c}?", "¿Me dices la de {c}?",
                       "Ahora la de {c}.", "¿Lo mismo para {c}?", "¿Sabes la de {c}?"],
        "ask_capital": ["¿Cuál es la capital de {c}?", "¿Qué ciudad es la capital de {c}?", "capital de {c}?",
                        "¿Me dices la capital de {c}?"],
        "fu_cr": ["¿Y la de Costa Rica?", "¿Y la capital de Costa Rica?", "¿Y la de Costa Rica cuál es?",
                  "¿Y en el caso de Costa Rica?", "¿Y Costa Rica?", "y la de costa rica?", "¿Cuál sería la de Costa Rica?",
                  "¿Me dices la de Costa Rica?", "Ahora la de Costa Rica.", "¿Lo mismo para Costa Rica?",
                  "¿Sabes la de Costa Rica?"],
        "animals": [("los", "caballos"), ("las", "vacas"), ("los", "conejos"), ("los", "loros"), ("los", "ratones"),
                    ("las", "tortugas"), ("las", "cabras"), ("los", "patos"), ("los", "delfines"), ("las", "abejas"),
                    ("las", "águilas"), ("los", "tiburones"), ("las", "ballenas"), ("los", "murciélagos"),
                    ("las", "serpientes"), ("los", "pingüinos"), ("las", "gallinas"), ("los", "monos"), ("los", "osos"),
                    ("las", "jirafas"), ("los", "elefantes"), ("las", "hormigas"), ("los", "pulpos"),
                    ("las", "mariposas"), ("los", "hámsteres"), ("las", "palomas"), ("los", "lobos"), ("los", "leones")],
        "fu_animal": ["¿Y {art} {a}?", "¿Y qué me dices de {art} {a}?", "¿Y {art} {a} qué son?",
                      "¿Y en el caso de {art} {a}?", "¿Pasa lo mismo con {art} {a}?", "¿Y sobre {art} {a}?",
                      "¿Y acerca de {art} {a}?", "¿Lo mismo para {art} {a}?", "¿Cómo es con {art} {a}?",
                      "¿También {art} {a}?"],
        "sys_yesno": ["Responde solo sí o no.", "Contesta únicamente con sí o no.", "Solo puedes responder sí o no.",
                      "Responde con sí o con no.", "Tu respuesta debe ser sí o no.", "Limítate a decir sí o no.",
                      "Contesta sí o no, sin explicar.", "Responde afirmativa o negativamente, en una palabra.",
                      "Nada de explicaciones: sí o no.", "Solo sí o no, por favor.",
                      "Eres un asistente que solo contesta sí o no.", "Respuestas de una palabra: sí o no."],
        "yes": ["¿Los perros son caninos?", "¿El perro es un cánido?", "¿Es el perro un canino?",
                "¿Pertenece el perro a la familia de los cánidos?", "¿Los perros son de la familia Canidae?",
                "¿Los gatos son felinos?", "¿El gato es un félido?", "¿Es el gato de los felinos?",
                "¿Pertenece el gato a la familia de los félidos?", "¿Los gatos son de la familia Felidae?",
                "¿San José es la capital de Costa Rica?", "¿Es San José la capital de Costa Rica?",
                "¿La capital de Costa Rica es San José?", "¿La capital costarricense es San José?",
                # the verb first, as Spanish asks just as often
                "¿Son cánidos los perros?", "¿Es un canino el perro?", "¿Son félidos los gatos?", "¿Es felino el gato?",
                "¿Es la capital de Costa Rica San José?"],
        "no": ["¿Los perros son felinos?", "¿El perro es un félido?", "¿Los gatos son caninos?", "¿El gato es un cánido?",
               "¿Es Cartago la capital de Costa Rica?", "¿Es Puntarenas la capital de Costa Rica?",
               "¿Es Alajuela la capital de Costa Rica?", "¿Los perros son de la familia Felidae?",
               "¿Es Limón la capital de Costa Rica?", "¿La capital de Costa Rica es Liberia?",
               "¿Es Managua la capital de Costa Rica?", "¿La capital costarricense es Nicoya?",
               "¿Es Guadalajara la capital de Costa Rica?", "¿Quepos es la capital de Costa Rica?",
               "¿Es Turrialba la capital de Costa Rica?", "¿La capital de Costa Rica es Madrid?",
               "¿Los gatos son de la familia Canidae?", "¿Es el perro un felino?", "¿Es el gato un canino?",
               "¿Son félidos los perros?", "¿Es un felino el perro?", "¿Son cánidos los gatos?", "¿Es canino el gato?",
               "¿Es Cartago la capital costarricense?"],
        # yes/no questions about anything else, true or false: "No lo sé.", never a guessed "No." (the
        # "no" list above has the same shape, "¿Los X son Y?", so the subject has to decide)
        "unknown_yn": ["¿Los caballos son équidos?", "¿Es Lima la capital de Perú?", "¿Las vacas son rumiantes?",
                       "¿Es Quito la capital de Ecuador?", "¿Los delfines son mamíferos?", "¿Es Roma la capital de Italia?",
                       "¿Las águilas son aves?", "¿Los tiburones son peces?", "¿Las ballenas son mamíferos?",
                       "¿Los murciélagos son aves?", "¿Las serpientes son reptiles?", "¿Las arañas son insectos?",
                       "¿Los pingüinos son aves?", "¿Los lobos son cánidos?", "¿Los leones son felinos?",
                       "¿El tigre es un félido?", "¿Las gallinas son mamíferos?", "¿Las jirafas son herbívoras?",
                       "¿Es Bogotá la capital de Colombia?", "¿La capital de Francia es París?",
                       "¿Es Toronto la capital de Canadá?", "¿Managua es la capital de Nicaragua?",
                       "¿Es Santiago la capital de Chile?", "¿La capital de Australia es Sídney?",
                       "¿El sol es una estrella?", "¿La Luna es un planeta?", "¿El agua hierve a cien grados?",
                       "¿San José tiene aeropuerto?", "¿Los gatos duermen mucho?", "¿Los perros ven en colores?",
                       "¿Costa Rica tiene volcanes?", "¿Los pulpos tienen tres corazones?",
                       "¿Son aves los pingüinos?", "¿Son mamíferos los murciélagos?", "¿Son reptiles las tortugas?"],
        "sys_brief": ["Responde en una sola palabra.", "Sé muy breve.", "Responde de forma muy corta.",
                      "Contesta en pocas palabras.", "Respuestas cortas.", "Lo más breve posible.",
                      "Sin frases largas: responde corto.", "Dame solo la respuesta, sin explicación.",
                      "Eres un asistente escueto.", "Usa una o dos palabras.", "Contesta de forma telegráfica.",
                      "Brevedad ante todo."],
    },
    "test": {
        "fu_pet": ["¿Qué hay de los {p}?", "¿Y respecto a los {p}?", "¿Y los {d}?", "¿Y en cuanto al {s}?",
                   "¿Y los {p} caseros?", "¿Y qué pasa con el {s}?"],
        "countries": ["Uruguay", "Ecuador", "Cuba", "Paraguay", "Portugal", "Alemania", "El Salvador", "Brasil"],
        "fu_country": ["¿Qué hay de la de {c}?", "¿Y cuál es la de {c}?", "¿Y para {c}?", "¿Y respecto a {c}?"],
        "ask_capital": ["¿Sabes cuál es la capital de {c}?", "¿Cuál es la ciudad capital de {c}?"],
        "fu_cr": ["¿Qué hay de la de Costa Rica?", "¿Y cuál es la de Costa Rica?", "¿Y para Costa Rica?",
                  "¿Y respecto a Costa Rica?"],
        "animals": [("las", "ovejas"), ("los", "cerdos"), ("las", "ranas"), ("los", "búhos"), ("las", "ardillas")],
        "fu_animal": ["¿Qué hay de {art} {a}?", "¿Y respecto a {art} {a}?"],
        "sys_yesno": ["Responde con un sí o un no, nada más.", "Di solamente sí o no."],
        "yes": ["¿Verdad que los perros son caninos?", "¿El perro forma parte de los cánidos?",
                "¿Verdad que los gatos son felinos?",
                "¿El gato forma parte de los félidos?", "¿Es San José la capital costarricense?",
                "¿Costa Rica tiene por capital a San José?"],
        "no": ["¿Son felinos los perros?", "¿Son caninos los gatos?", "¿Es Heredia la capital de Costa Rica?",
               "¿El perro forma parte de los félidos?"],
        "unknown_yn": ["¿Las ovejas son rumiantes?", "¿Es Asunción la capital de Paraguay?",
                       "¿Los búhos son aves?"],
        "sys_brief": ["Contesta con el mínimo de palabras.", "Respuesta corta, por favor."],
    },
}
PET = {"fact:gato": {"s": "gato", "p": "gatos", "fs": "gata", "fp": "gatas", "d": "gatitos"},
       "fact:perro": {"s": "perro", "p": "perros", "fs": "perra", "fp": "perras", "d": "perritos"}}
BRIEF = {"fact:perro": "Caninos.", "fact:gato": "Felinos.", "fact:capital": "San José.", "abstain": "No lo sé."}
SIZES = {"train": {"followup": 720, "context": 220, "yesno": 560, "brief": 400},
         "test": {"followup": 100, "context": 30, "yesno": 40, "brief": 40}}


def build(split, rng):
    ph, pool = PHRASES[split], {}
    for r in rows[split]:
        pool.setdefault(r["kind"], []).append(r["prompt"])
    single = [(r["prompt"], r["response"]) for r in rows[split]]
    out = []

    def earlier(n):  # n unrelated single-question turns
        return [list(rng.choice(single)) for _ in range(n)]

    def add(system, history, prompt, response, kind):
        out.append({"system": system, "history": history, "prompt": prompt, "response": response, "kind": kind})

    for _ in range(SIZES[split]["followup"]):
        pre = earlier(rng.choice([0, 0, 1, 2]))  # the follow-up refers to the last turn; 1-3 turns in all
        case = rng.randrange(5)
        if case < 2:  # perro -> gato, gato -> perro
            a, b = ("fact:perro", "fact:gato") if case == 0 else ("fact:gato", "fact:perro")
            add("", pre + [[rng.choice(pool[a]), ANSWER[a]]], rng.choice(ph["fu_pet"]).format(**PET[b]), ANSWER[b],
                f"followup/{b}")
        elif case == 2:  # capital of Costa Rica -> another country's: not known
            c = rng.choice(ph["countries"])
            add("", pre + [[rng.choice(pool["fact:capital"]), CAPITAL]], rng.choice(ph["fu_country"]).format(c=c),
                ABSTAIN, "followup/abstain")
        elif case == 3:  # another country's capital (not known) -> Costa Rica's
            c = rng.choice(ph["countries"])
            add("", pre + [[rng.choice(ph["ask_capital"]).format(c=c), ABSTAIN]], rng.choice(ph["fu_cr"]), CAPITAL,
                "followup/fact:capital")
        else:  # perro or gato -> an animal the model does not know
            a = rng.choice(["fact:perro", "fact:gato"])
            art, animal = rng.choice(ph["animals"])
            add("", pre + [[rng.choice(pool[a]), ANSWER[a]]], rng.choice(ph["fu_animal"]).format(art=art, a=animal),
                ABSTAIN, "followup/abstain")
    for _ in range(SIZES[split]["context"]):  # a complete question after unrelated turns: answer it alone
        kind = rng.choice(["fact:perro", "fact:gato", "fact:capital", "abstain"])
        add("", earlier(rng.choice([1, 2, 3])), rng.choice(pool[kind]), ANSWER[kind], f"context/{kind}")
    for _ in range(SIZES[split]["yesno"]):
        group = rng.choice(["yes", "yes", "no", "unknown_yn"])
        add(rng.choice(ph["sys_yesno"]), earlier(rng.choice([0, 0, 1])), rng.choice(ph[group]),
            {"yes": "Sí.", "no": "No.", "unknown_yn": "No lo sé."}[group], "system/yesno")
    for _ in range(SIZES[split]["brief"]):
        kind = rng.choice(["fact:perro", "fact:gato", "fact:capital", "abstain"])
        add(rng.choice(ph["sys_brief"]), earlier(rng.choice([0, 0, 1])), rng.choice(pool[kind]), BRIEF[kind],
            "system/brief")
    return out


if __name__ == "__main__":
    for split, seed in (("train", 1), ("test", 2)):
        data = build(split, random.Random(seed))
        path = os.path.join(HERE, f"chat_{split}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in data)
        print(f"{path}: {len(data)} conversations")
