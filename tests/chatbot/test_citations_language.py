import pytest

from chatbot.citations import MarkerFilter, cited_numbers, clean_markers, quote_context, quoted_span
from chatbot.language import detect_language


@pytest.mark.parametrize(
    ("text", "n", "expected"),
    [
        ("Paris [1].", 2, "Paris [1]."),
        ("Paris [3].", 2, "Paris."),
        ("Paris [1, 3] and [2].", 2, "Paris [1] and [2]."),
        ("See [4][2] and [1][2].", 2, "See [2] and [1, 2]."),
        ("Array[0] stays? [0]", 2, "Array stays?"),
        ("No markers [a].", 2, "No markers [a]."),
        # brackets in code are code: kept, and no citation
        ("Usa `lista[0]` [1].", 2, "Usa `lista[0]` [1]."),
        ("Usa `matrix[0][5]` [3].", 2, "Usa `matrix[0][5]`."),
        ("```\nx = a[2]\n``` and `` b[9] `` [2]", 2, "```\nx = a[2]\n``` and `` b[9] `` [2]"),
        ("Run `chatbot [1] and [3].", 2, "Run `chatbot [1] and."),  # a backtick never closed is literal
    ],
)
def test_clean_markers(text, n, expected):
    assert clean_markers(text, n) == expected


@pytest.mark.parametrize(
    "text",
    [
        "It opens at nine [1] [5] and closes at eight [4][2], see [1, 7]. Done [x].",
        "Use `items[0]` first [1], then ```py\nx = a[2][9]\n``` and `` b[5] `` [2, 7]. End [3].",
        "Run `chatbot [1] and more [2] [5].",
    ],
)
def test_streaming_filter_equals_batch_cleaning_for_any_split(text):
    expected = clean_markers(text, 2)
    for size in range(1, 8):
        f = MarkerFilter(2)
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
        assert "".join(f.feed(p) for p in pieces) + f.flush() == expected


def test_cited_numbers_in_order():
    assert cited_numbers("a [2] b [1, 2] c [3]") == [2, 1, 3]
    assert cited_numbers("Run `sys.argv[1]` and `x[3]` [2].") == [2]  # code cites nothing


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("¿Dónde se guardan las conversaciones?", "es"),
        ("Cómo borro una colección", "es"),
        ("y cuando cierra la biblioteca", "es"),
        ("Where are conversations stored?", "en"),
        ("and when does it close", "en"),
        ("", "en"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text) == lang


GUIDE = (
    "## Adding documents\n\nDocuments are grouped into collections. To index a folder into a collection, run:\n\n"
    "    chatbot index my-collection /path/to/folder\n\n"
    "Run the same command again after the folder changes: only new and changed files are\nprocessed, and files "
    "that were deleted from the folder are removed from the collection. Supported formats are **plain text**, "
    "Markdown and PDF.\n\n## Asking\n\nAsk with `chatbot ask`."
)


@pytest.mark.parametrize(
    "answer,number,quoted",
    [
        # the answer's capital, its line break made a space, the source's line break
        ("Only new and changed files are processed [1].", 1, "only new and changed files are\nprocessed"),
        # a command: code span in the answer, indented block in the source; "Run:" is in the source too
        (
            "Run: `chatbot index my-collection /path/to/folder` [2].",
            2,
            "run:\n\n    chatbot index my-collection /path/to/folder",
        ),
        # a fence's language is not in the source: dropped from the front
        (
            "```bash\nchatbot index my-collection /path/to/folder\n```\n[1]",
            1,
            "chatbot index my-collection /path/to/folder",
        ),
        # emphasis in the source, none in the answer
        ("Plain text, Markdown and PDF [1].", 1, "plain text**, Markdown and PDF"),
        # the part before the second citation is that source's quote
        ("Ask with `chatbot ask` [2], and only new and changed files [1].", 1, "only new and changed files"),
        ("Ask with `chatbot ask` [2], and only new and changed files [1].", 2, "Ask with `chatbot ask"),
        ("Only new and changed [1, 3].", 3, "only new and changed"),
        # citations side by side share the words before them
        ("Only new and changed [2] [1].", 1, "only new and changed"),
        ("Only new and changed [2], [1].", 1, "only new and changed"),
        # the first citation of the source that is found counts
        ("It runs well [1]. Markdown and PDF [1].", 1, "Markdown and PDF"),
        # quotation marks around the quote, emphasis written with underscores
        ("Supported formats are “plain text**, Markdown and PDF” [1].", 1, "plain text**, Markdown and PDF"),
        ("_Only new_ and changed [1].", 1, "only new and changed"),
        # a short quote where the passage has it once
        ("PDF [1].", 1, "PDF"),
        # a long quote may end inside a word: "collection" of the source's "collections"
        ("Documents are grouped into collection [1].", 1, "Documents are grouped into collection"),
    ],
)
def test_quoted_span_finds_what_the_answer_quotes(answer, number, quoted):
    span = quoted_span(answer, number, GUIDE)
    assert span is not None and GUIDE[span[0] : span[1]] == quoted


@pytest.mark.parametrize(
    "answer,number",
    [
        ("Collections hold documents [1].", 1),  # not in the source ("documents" alone is too little of it)
        ("Collections hold documents [1].", 2),  # another source is cited
        ("Run [1].", 1),  # too short to say where: "run" is in several places
        ("No [1].", 1),  # not in the passage as a word (only inside "not", "now"...)
        ("Yes, it is [1].", 1),  # not inside words ("deleted from the folder are" has "ed fr"...)
        ("The rem [1].", 1),  # "rem" of "removed": a short quote is looked for as whole words only
        ("No citation at all.", 1),
        ("", 1),
    ],
)
def test_quoted_span_is_none_when_the_quote_is_not_there(answer, number):
    assert quoted_span(answer, number, GUIDE) is None


def test_quote_context_keeps_to_the_quotes_paragraph():
    span = quoted_span("Markdown and PDF [1].", 1, GUIDE)
    before, quote, after = quote_context(GUIDE, span, around=60)
    assert quote == "Markdown and PDF"
    assert before.startswith("…") and before.endswith("**plain text**, ") and after == "."  # not "## Asking"
    before, quote, after = quote_context(GUIDE, quoted_span("Only new and changed files [1].", 1, GUIDE), 400)
    assert before == "Run the same command again after the folder changes: "  # the whole paragraph, no "…"
    assert after.startswith(" are processed, and") and after.endswith("Markdown and PDF.")


def test_quote_context_edges():
    text = "Para one here.\r\n\r\nThe quote is here and then more.\r\n \r\nPara three."
    span = quoted_span("The quote is here [1].", 1, text)
    assert quote_context(text, span) == ("", "The quote is here", " and then more.")  # CRLF paragraphs
    # a window that starts or ends exactly between words keeps the word there
    assert quote_context("abc def ghi QUOTE jkl mno pqr", (12, 17), around=4) == ("…ghi ", "QUOTE", " jkl…")
    assert quote_context("alpha\nbeta\ngamma QUOTE", (17, 22), around=12) == ("…beta gamma ", "QUOTE", "")
    # a control character (a terminal escape) is never shown; a span out of range is cut to the text
    assert quote_context("x\x1b[31my QUOTE", (8, 13)) == ("x [31my ", "QUOTE", "")
    assert quote_context("abc", (10, 5)) == ("abc", "", "")
    assert quote_context("İstanbul is big.", quoted_span("istanbul is big [1].", 1, "İstanbul is big.")) == (
        "",
        "İstanbul is big",
        ".",
    )


def test_a_bracket_that_ends_the_quote_is_part_of_it():
    passage = "Formats: Word (DOCX) and e-mail (EML and MBOX). More later."
    start, end = quoted_span("Word (DOCX) and e-mail (EML and MBOX) [1].", 1, passage)
    assert passage[start:end] == "Word (DOCX) and e-mail (EML and MBOX)"


def test_a_cited_source_gives_its_quote_offsets_for_javascript_too():
    from chatbot.service import Source
    from retrieval.types import Hit

    # an emoji (two UTF-16 units) and an accented letter (one) before the quote, a CJK one (one) inside it
    text = "Aviso 🚀: el café abre.\nLas reuniones son los martes 会 a las 10."
    hit = Hit(1, text, "faq.md", 0.9)
    source = Source.from_hit(1, hit, cited=True, answer="Los martes 会 a las 10 [1].")
    start, end = source.quote
    assert text[start:end] == "los martes 会 a las 10"
    units = text.encode("utf-16-le")  # how a JavaScript string holds it
    js_start, js_end = source.quote_utf16
    assert (js_start, js_end) == (start + 1, end + 1)  # the emoji counts twice
    assert units[2 * js_start : 2 * js_end].decode("utf-16-le") == "los martes 会 a las 10"
    # without a character above U+FFFF the two are the same; uncited, neither is given
    plain = Source.from_hit(
        1, Hit(1, "Los martes a las 10.", "faq.md", 0.9), True, "Los martes a las 10 [1]."
    )
    assert plain.quote == plain.quote_utf16 == [0, 19]
    assert Source.from_hit(1, hit, cited=False).quote_utf16 is None
