"""Follow-up questions: how the chat answers the second turn of a conversation, on-topic and off-topic.

    python benchmarks/follow_ups.py [--files data/followups/sample-org.json ...] [--forms history alone concat] \
        [--gate-only] [--json out.json]
    python benchmarks/follow_ups.py --standalone 3 [--json out.json]
    python benchmarks/follow_ups.py --data-dir var --version v0002   # another version than the current one

Question sets: data/followups/*.json (written for this project). Each conversation opens with a question about
a collection; each follow-up is then asked after it alone, with the first question and the model's answer to
it as the conversation so far. The collections: ``sample`` is data/sample, the others the documents of the
data/qa file of that name. Everything else is the shipped default (version, engine, search, gate, decoding).

What is counted:

- on-topic follow-ups (with a reference answer): token F1 and "answer contained" (a decline scores 0), and the
  share declined, by the relevance gate before the model or by the model;
- on-topic follow-ups whose documents do not say (reference null): the share declined;
- off-topic follow-ups: the share declined, and the share the gate declines before the model.

``--standalone N`` measures instead the standalone questions of the project's own sets (data/qa, held-out
half, N a set, spread over it): each asked first, and asked second, after another question about another
paragraph of the same article and the model's answer to it. It tells what the conversation's earlier turns
cost a question that names its subject, from what a follow-up's missing subject costs.

``--forms`` puts the follow-up to the model in other ways (the search query is the chat's ``concat`` query in
all of them): ``history`` (the chat's way: the conversation as earlier turns, then the follow-up with its
sources), ``alone`` (the follow-up with its sources, no earlier turns), ``concat`` (no earlier turns; the
question is the first question and the follow-up together, as the search query is). ``--gate-only`` runs no
model: whether the relevance gate lets each follow-up through, in seconds. A model's answer takes about 3 s
on 2 CPU cores (all forms for both files: 16 minutes; --standalone 3: 12 minutes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import emit, machine
from tqdm import tqdm

from chatbot.chain import condense_query, relevant_hits
from chatbot.evaluation import answer_contained, load_squad, strip_citations, token_f1
from chatbot.recipes import qa_collection
from chatbot.service import ChatService
from chatbot.settings import load_settings
from finetune.qa import spread
from retrieval.collection import Collection

ROOT = Path(__file__).resolve().parent.parent
FORMS = ("history", "alone", "concat")


def collection_for(settings, name: str) -> tuple[str, Collection]:
    """The collection ``name`` of the question files: its name in the data directory, and it, synced."""
    if name == "sample":
        col = Collection.open(settings, "sample")
        col.sync(ROOT / "data/sample")
        return "sample", col
    qa = load_squad(ROOT / f"data/qa/{name}.json")
    return f"followups-{name}", qa_collection(settings, f"followups-{name}", qa)


def ask(
    service: ChatService, form: str, collection: Collection, name: str, first: str, opened: str, question: str
):
    """``question`` asked after ``first`` (answered ``opened``), put to the model in ``form``."""
    if form == "history":
        history = [("user", first), ("assistant", opened)]
        return service.answer(question, collection=name, history=history, remember=False)
    query = condense_query(question, [("user", first)], "concat")
    if form == "alone":
        return service.answer(
            question, collection=name, remember=False, search=lambda _q, k: collection.search(query, k)
        )
    return service.answer(query, collection=name, remember=False)  # concat: the query is the question


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--files", nargs="+", type=Path, default=sorted((ROOT / "data/followups").glob("*.json"))
    )
    parser.add_argument("--forms", nargs="+", choices=FORMS, default=["history"])
    parser.add_argument(
        "--gate-only", action="store_true", help="no model: the relevance gate's decisions only"
    )
    parser.add_argument(
        "--standalone", type=int, metavar="N", help="data/qa questions asked first and second, N a set"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "assistant-followups")
    parser.add_argument(
        "--version", default="current", help="model version of --data-dir's registry (default: current)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    settings = load_settings(data_dir=args.data_dir, models={"device": "cpu", "version": args.version})
    if args.standalone:
        emit(
            {"machine": machine(), "standalone": second_turn(ChatService(settings), args.standalone)},
            args.json,
        )
        return
    service = None if args.gate_only else ChatService(settings)
    cols: dict[str, tuple[str, Collection]] = {}
    results: dict[str, dict] = {}
    for path in args.files:
        rows = []
        for conv in tqdm(json.loads(path.read_text(encoding="utf-8"))["conversations"], desc=path.name):
            if conv["collection"] not in cols:
                cols[conv["collection"]] = collection_for(settings, conv["collection"])
            name, col = cols[conv["collection"]]
            first = conv["first"]
            opened = service.answer(first, collection=name, remember=False).text if service else ""
            asked = [(x["question"], x["answer"], "on-topic") for x in conv["on_topic"]]
            asked += [(q, None, "off-topic") for q in conv["off_topic"]]
            for question, reference, kind in asked:
                query = condense_query(question, [("user", first)], settings.chat.condense)
                row = {
                    "collection": conv["collection"],
                    "kind": kind,
                    "question": question,
                    "reference": reference,
                    "gate passes": bool(relevant_hits(question, query, col.search, settings.chat)),
                }
                for form in [] if service is None else args.forms:
                    answer = ask(service, form, col, name, first, opened, question)
                    row[form] = scored(answer, None if reference is None else [reference])
                rows.append(row)
        results[path.name] = {"summary": summarize(rows, [] if service is None else args.forms), "rows": rows}
    for name, result in results.items():
        print(f"\n{name}")
        for line, figures in result["summary"].items():
            print(f"  {line}: {figures_line(figures)}")
    emit({"machine": machine(), "results": results}, args.json)


def scored(answer, references: list[str] | None) -> dict:
    """What ``answer`` said and whether it declined; against ``references`` (None: no reference), its token
    F1 and whether it contains one, a decline scoring 0."""
    out = {"answer": answer.text, "declined": answer.abstained}
    if references is not None:
        said = "" if answer.abstained else strip_citations(answer.text)
        out |= {"f1": token_f1(said, references), "contained": answer_contained(said, references)}
    return out


def figures_line(figures: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())


def second_turn(service: ChatService, per_set: int) -> dict:
    """Held-out questions of every data/qa file, asked first and asked after another question of their
    article (about another paragraph where there is one); F1 (a decline scores 0) and declines of each way."""
    rows = []
    for path in sorted((ROOT / "data/qa").glob("*.json")):
        qa = load_squad(path)
        name = f"followups-{path.stem}"
        qa_collection(service.settings, name, qa)
        held = qa.subset("heldout").items
        for q in tqdm(spread(held, per_set), desc=path.stem):
            article = [p for p in held if p.article == q.article and p.id != q.id]
            before = next((p for p in article if p.doc != q.doc), article[0] if article else None)
            if before is None:
                continue
            alone = service.answer(q.question, collection=name, remember=False)
            opened = service.answer(before.question, collection=name, remember=False)
            history = [("user", before.question), ("assistant", opened.text)]
            second = service.answer(q.question, collection=name, history=history, remember=False)
            row = {"set": path.stem, "question": q.question, "before": before.question}
            row |= {"first": scored(alone, q.answers), "second": scored(second, q.answers)}
            rows.append(row)
    summary = {
        "questions": len(rows),
        **{f"{way}: F1": sum(r[way]["f1"] for r in rows) / len(rows) for way in ("first", "second")},
        **{
            f"{way}: declined": sum(r[way]["declined"] for r in rows) / len(rows)
            for way in ("first", "second")
        },
    }
    print("\n" + figures_line(summary))
    return {"summary": summary, "rows": rows}


def summarize(rows: list[dict], forms: list[str]) -> dict[str, dict]:
    def share(these: list[dict], key) -> float:
        return sum(map(key, these)) / len(these) if these else 0.0

    groups = {
        "on-topic, answer in the documents": [
            r for r in rows if r["kind"] == "on-topic" and r["reference"] is not None
        ],
        "on-topic, the documents do not say": [
            r for r in rows if r["kind"] == "on-topic" and r["reference"] is None
        ],
        "off-topic": [r for r in rows if r["kind"] == "off-topic"],
    }
    out: dict[str, dict] = {}
    for group, these in groups.items():
        out[group] = {"questions": len(these), "gate passes": share(these, lambda r: r["gate passes"])}
        for form in forms:
            out[group][f"{form}: declined"] = share(these, lambda r, f=form: r[f]["declined"])
            if group.startswith("on-topic, answer"):
                out[group][f"{form}: F1"] = share(these, lambda r, f=form: r[f]["f1"])
                out[group][f"{form}: contained"] = share(these, lambda r, f=form: r[f]["contained"])
    return out


if __name__ == "__main__":
    main()
