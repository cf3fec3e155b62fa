"""Behavioural probe sets: templated reviews that test what a sentiment LSTM remembers and hears.

Written for this project (none is taken from IMDB); each set isolates one behaviour:

- ``memory_<N>``: a clear opinion in the first sentence, then N (0, 50, 100, 200, 400) words
  of neutral plot description. Label: the opinion. Tests that the opinion survives the filler.
- ``verdict_at_end``: praise, neutral plot, then a clear condemnation at the end (label
  negative), and the reverse (complaints then a clear recommendation, label positive).
- ``negation``: pairs that differ in the negated word ("not bad at all" / "not good at all").
- ``one_sentence``: one-sentence reviews with a plain opinion and no negation.

The sets are generated from the templates below with a fixed seed and stored as JSON Lines
in ``train/probe_data/`` (``python -m train.probe_sets`` rewrites them; a test checks that the
stored files are what the generator makes). Each line: ``{"set", "text", "label", "id"}``
plus ``"pair"`` for negation items; ``label`` 1 is positive.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PROBE_DIR = Path(__file__).with_name("probe_data")
SEED = 20261130
FILLER_WORDS = (0, 50, 100, 200, 400)
PER_SET = 100  # items per set (half positive, half negative); negation: PER_SET pairs

TITLES = ["The Long Harbour", "Night Train to Osaka", "Grey Meadow", "The Second Letter", "Harbor Lights",
          "A Winter in Lisbon", "The Clockmaker", "Red Canyon", "Paper Kites", "The Quiet Valley",
          "Northbound", "The Salt Road", "Midnight Ferry", "The Glass Orchard", "Copper Hill"]
NAMES = ["Anna", "Marcus", "Leila", "Tom", "Ines", "Victor", "Ruth", "Daniel", "Hana", "Oscar", "Maya",
         "Felix", "Clara", "Samuel", "Nora", "Jonas", "Elena", "Peter", "Yusuf", "Greta"]
PLACES = ["a coastal town", "Chicago", "a farm in Ohio", "Marseille", "a small village", "Berlin",
          "the suburbs", "a mining town", "Montreal", "an island", "the capital", "a border town",
          "Naples", "a ski resort", "Denver"]
JOBS = ["teacher", "taxi driver", "nurse", "lawyer", "mechanic", "journalist", "baker", "pilot",
        "librarian", "police officer", "fisherman", "accountant", "architect", "farmer", "chemist"]
RELATIONS = ["her brother", "his sister", "an old friend", "a neighbour", "her father", "his mother",
             "a cousin", "a former colleague", "his uncle", "her landlord"]
OBJECTS = ["a box of letters", "an old photograph", "a set of keys", "a map", "a suitcase", "a notebook",
           "a radio", "a bicycle", "a painting", "a telegram"]
FILLER = [
    "{name} is {a_job} who lives in {place}.",
    "The story begins in {year}, when {name} moves to {place}.",
    "{name} works as {a_job} and visits {relation} on weekends.",
    "One morning {name} finds {object} in the attic.",
    "Later, {name} and {relation} drive to {place} to look for answers.",
    "In the second act, {name} meets {a_job} at the station.",
    "The film was shot in {place} and runs for about {minutes} minutes.",
    "Most of the scenes take place in {place}, with a few in {place2}.",
    "{name} spends the evenings writing to {relation}.",
    "There is a long conversation at a kitchen table about {object}.",
    "The next day {name} takes a bus to {place} and asks {a_job} for directions.",
    "{name} keeps {object} in a drawer and shows it to {relation}.",
    "The plot then follows {name2}, {a_job} who has just arrived in {place}.",
    "{name} and {name2} meet again a few years later in {place2}.",
    "The camera follows {name} through the streets of {place}.",
    "At this point the story moves back to {year} and to {place2}.",
    "{name2} tells {name} about {object} and about {relation}.",
    "The final part of the film is set during a winter in {place}.",
    "The soundtrack uses music from the {decade}s.",
    "{name} is played by an actor who also appeared in {title}.",
]

OPINION = {
    1: ["This is one of the best films I have seen in years.", "I loved this movie from start to finish.",
        "An absolute masterpiece, beautifully acted and directed.",
        "A wonderful film that I would happily watch again and again.",
        "Brilliant, moving and funny: I recommend it to everyone.", "The acting is superb and the story is gripping.",
        "What a delightful surprise {title} turned out to be.", "I enjoyed every single minute of {title}.",
        "A truly great movie with a terrific cast.", "Easily a ten out of ten for me.",
        "{title} is a gem, smart and touching.", "Outstanding performances make {title} a must-see.",
        "I adored this film; it is a real treat.", "A superb, heartfelt film that deserves every award it won.",
        "Fantastic from the first scene, one of my all-time favourites."],
    0: ["This is one of the worst films I have seen in years.", "I hated this movie from start to finish.",
        "An absolute mess, badly acted and poorly directed.", "A terrible film that I would never watch again.",
        "Boring, clumsy and stupid: avoid it at all costs.", "The acting is awful and the story is dull.",
        "What a disappointing waste of time {title} turned out to be.", "I regretted every single minute of {title}.",
        "A truly bad movie with a wasted cast.", "Easily a one out of ten for me.",
        "{title} is garbage, dumb and tedious.", "Dreadful performances make {title} painful to sit through.",
        "I loathed this film; it is a real chore.", "A lazy, pointless film that deserves to be forgotten.",
        "Awful from the first scene, one of the worst things I have ever watched."],
}
EARLY = {  # the first half's opinion in verdict_at_end (opposite to the verdict)
    1: ["The opening scenes are beautiful.", "The lead actor is charming and the cast looks great.",
        "The first half is promising and the photography is lovely.", "It starts out wonderfully.",
        "The music in the first act is excellent.", "For the first hour I was really enjoying it.",
        "The premise is clever and the early dialogue is witty."],
    0: ["The opening scenes are slow and clumsy.", "The lead actor seems stiff at first.",
        "The first half is confusing and the pacing drags.", "It starts out badly.",
        "The music in the first act is irritating.", "For the first hour I was bored.",
        "The premise seems silly and the early dialogue is flat."],
}
VERDICT = {
    1: ["But by the end it had won me over completely; I loved it and highly recommend it.",
        "In the end, though, it is a wonderful film and I am so glad I watched it.",
        "Yet the last act is brilliant, and overall this is an excellent movie. Highly recommended.",
        "Still, the ending is superb and it left me moved. A great film, nine out of ten.",
        "Despite that, it becomes a genuinely great film. I would happily watch it again."],
    0: ["But by the end it had lost me completely; I regret watching it and cannot recommend it.",
        "In the end, though, it is a terrible film and I wish I had not wasted my evening on it.",
        "Yet the last act is a disaster, and overall this is an awful movie. Avoid it.",
        "Still, the ending is so stupid that it ruins everything. A bad film, two out of ten.",
        "Despite that, it turns into a boring mess. I will never watch it again."],
}
NEGATION = [  # (positive wording, negative wording): the same frame, the negated word differs
    ("{s} was not bad at all.", "{s} was not good at all."),
    ("Nothing about {s_lower} disappointed me.", "Nothing about {s_lower} impressed me."),
    ("I did not find a single boring moment in {s_lower}.", "I did not find a single exciting moment in {s_lower}."),
    ("{s} never fails to entertain.", "{s} never manages to entertain."),
    ("I can't say I disliked anything about {s_lower}.", "I can't say I liked anything about {s_lower}."),
    ("The acting in {s_lower} is not weak in any way.", "The acting in {s_lower} is not convincing in any way."),
    ("I was not disappointed by {s_lower}.", "I was not impressed by {s_lower}."),
    ("There is not a dull moment in {s_lower}.", "There is not a clever moment in {s_lower}."),
    ("No one in the cast of {s_lower} gives a poor performance.",
     "No one in the cast of {s_lower} gives a good performance."),
    ("{s} is not a waste of time.", "{s} is not worth the time."),
    ("I would not call {s_lower} boring or predictable.", "I would not call {s_lower} exciting or original."),
    ("{s} did not let me down.", "{s} did not win me over."),
]
SUBJECTS = ["This movie", "The film", "This picture", "The sequel", "This comedy", "The remake", "This drama"]
PREFIXES = ["", "", "Honestly, ", "To be fair, ", "I have to say that ", "Frankly, "]
ONE_SENTENCE = {
    1: ["{s} is {adj}.", "{s} was {adv} {adj}.", "What {a_adj} film.", "I found {s_lower} {adj} from start to finish.",
        "{A_adj} movie with a {adj2} ending.", "{s} is {adj} and {adj2}.", "Simply {adj}, go and see it.",
        "I {verb} {s_lower}."],
    0: ["{s} is {adj}.", "{s} was {adv} {adj}.", "What {a_adj} film.", "I found {s_lower} {adj} from start to finish.",
        "{A_adj} movie with a {adj2} ending.", "{s} is {adj} and {adj2}.", "Simply {adj}, stay away from it.",
        "I {verb} {s_lower}."],
}
ADJECTIVES = {1: ["wonderful", "brilliant", "excellent", "superb", "charming", "gripping", "hilarious", "touching",
                  "beautiful", "delightful", "moving", "fantastic"],
              0: ["awful", "terrible", "boring", "dreadful", "tedious", "pointless", "lousy", "stupid",
                  "unwatchable", "dull", "horrible", "painful"]}
VERBS = {1: ["loved", "adored", "really enjoyed", "was thrilled by"],
         0: ["hated", "loathed", "could not stand", "was bored by"]}
ADVERBS = ["really", "truly", "absolutely", "quite", "simply"]


def _fill(template: str, rng: random.Random, subject: str | None = None) -> str:
    subject = subject or rng.choice(SUBJECTS)
    names = rng.sample(NAMES, 2)
    places = rng.sample(PLACES, 2)
    job = rng.choice(JOBS)
    a_job = ("an " if job[0] in "aeiou" else "a ") + job
    return template.format(name=names[0], name2=names[1], a_job=a_job, place=places[0], place2=places[1],
                           relation=rng.choice(RELATIONS), object=rng.choice(OBJECTS), year=rng.randint(1921, 2015),
                           minutes=rng.randint(85, 160), decade=rng.choice(range(1930, 2010, 10)),
                           title=rng.choice(TITLES), s=subject, s_lower=subject[0].lower() + subject[1:])


def neutral_filler(words: int, rng: random.Random) -> str:
    """Neutral plot sentences adding up to at least ``words`` words (and under words + 20)."""
    sentences: list[str] = []
    count = 0
    while count < words:
        sentence = _fill(rng.choice(FILLER), rng)
        sentences.append(sentence)
        count += len(sentence.split())
    return " ".join(sentences)


def filler_only(count: int = 50, words: int = FILLER_WORDS[-1], seed: int = SEED + 1) -> list[str]:
    """``count`` texts of neutral filler alone (``words`` words each, no opinion): a diagnostic of how a model
    reads the memory sets' filler (see :func:`train.probes.run_probes`), not a labelled probe set."""
    rng = random.Random(seed)
    return [neutral_filler(words, rng) for _ in range(count)]


def _memory(words: int, rng: random.Random) -> list[dict]:
    items = []
    for i in range(PER_SET):
        label = i % 2
        opener = _fill(rng.choice(OPINION[label]), rng)
        text = " ".join(part for part in (opener, neutral_filler(words, rng)) if part)
        items.append({"set": f"memory_{words}", "id": i, "label": label, "text": text})
    return items


def _verdict(rng: random.Random) -> list[dict]:
    items = []
    for i in range(PER_SET):
        label = i % 2  # the verdict's polarity; the first half says the opposite
        early = " ".join(_fill(s, rng) for s in rng.sample(EARLY[1 - label], 2))
        text = f"{early} {neutral_filler(rng.randint(30, 80), rng)} {_fill(rng.choice(VERDICT[label]), rng)}"
        items.append({"set": "verdict_at_end", "id": i, "label": label, "text": text})
    return items


def _negation(rng: random.Random) -> list[dict]:
    items = []
    for pair in range(PER_SET):
        frame = rng.choice(NEGATION)
        subject, prefix = rng.choice(SUBJECTS), rng.choice(PREFIXES)
        for label, template in ((1, frame[0]), (0, frame[1])):
            text = _fill(template, rng, subject)
            text = prefix + (text[0].lower() + text[1:] if prefix and not text.startswith("I ") else text)
            items.append({"set": "negation", "id": 2 * pair + (1 - label), "pair": pair, "label": label,
                          "text": text})
    return items


def _one_sentence_text(label: int, rng: random.Random) -> str:
    adjective, second = rng.sample(ADJECTIVES[label], 2)
    article = "an" if adjective[0] in "aeiou" else "a"
    template = (rng.choice(ONE_SENTENCE[label]).replace("{a_adj}", f"{article} {adjective}")
                .replace("{A_adj}", f"{article.title()} {adjective}"))
    return _fill(template.replace("{adj}", adjective).replace("{adj2}", second)
                 .replace("{adv}", rng.choice(ADVERBS)).replace("{verb}", rng.choice(VERBS[label])), rng)


def _one_sentence(rng: random.Random) -> list[dict]:
    items, seen = [], set()
    for i in range(PER_SET):
        label = i % 2
        for _ in range(100):  # draw again (bounded) rather than repeat a text
            text = _one_sentence_text(label, rng)
            if text not in seen:
                break
        seen.add(text)
        items.append({"set": "one_sentence", "id": i, "label": label, "text": text})
    return items


def generate() -> dict[str, list[dict]]:
    """Every probe set, name -> items, deterministic (seeded)."""
    rng = random.Random(SEED)
    sets = {f"memory_{w}": _memory(w, rng) for w in FILLER_WORDS}
    sets["verdict_at_end"] = _verdict(rng)
    sets["negation"] = _negation(rng)
    sets["one_sentence"] = _one_sentence(rng)
    return sets


def to_jsonl(items: list[dict]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def write(directory: Path = PROBE_DIR) -> list[Path]:
    """(Re)write the stored probe files; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, items in generate().items():
        path = directory / f"{name}.jsonl"
        path.write_text(to_jsonl(items), encoding="utf-8")
        paths.append(path)
    return paths


def load(directory: Path = PROBE_DIR) -> dict[str, list[dict]]:
    """The stored probe sets, name -> items, in a stable order (memory sets by filler length)."""
    paths = sorted(directory.glob("*.jsonl"), key=lambda p: (not p.stem.startswith("memory_"),
                                                           int(p.stem.split("_")[1]) if p.stem.startswith("memory_")
                                                           else 0, p.stem))
    if not paths:
        raise FileNotFoundError(f"no probe sets (*.jsonl) in {directory}; `python -m train.probe_sets` writes them")
    return {p.stem: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] for p in paths}


if __name__ == "__main__":
    for written in write():
        print(written)
