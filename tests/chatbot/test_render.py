"""Answers and file names never turn into images: checked by parsing the output as CommonMark + GFM tables
(what Streamlit's renderer reads), on every image form known to get past a pattern."""

import pytest
from markdown_it import MarkdownIt

from chatbot.ui.render import code_span, escape_markdown, passage_markdown, quote_markdown, safe_markdown

EVIL = "http://evil.example"
FORMS = {
    "inline": f"See ![logo]({EVIL}/0.png) here",
    "shortcut reference": f"See ![logo]\n\n[logo]: {EVIL}/1.png",
    "collapsed reference": f"See ![logo][]\n\n[logo]: {EVIL}/2.png",
    "full reference": f"See ![logo][r]\n\n[r]: {EVIL}/3.png",
    "nested brackets": f"See ![a [b] c]({EVIL}/4.png)",
    "nested brackets, reference": f"See ![a [b]][r]\n\n[r]: {EVIL}/5.png",
    "escaped bracket": f"See ![a\\]b]({EVIL}/6.png)",
    "escaped bracket, reference": f"See ![a\\]][r]\n\n[r]: {EVIL}/7.png",
    "parenthesis in the URL": f"See ![a]({EVIL}/(8).png)",
    "parenthesis in the title": f'See ![a]({EVIL}/9.png "x)y")',
    "double bang": f"!![a]({EVIL}/10.png)",
    "inside a link": f"[![a]({EVIL}/11.png)](http://x)",
    "after an escaped backslash": f"\\\\![a]({EVIL}/12.png)",
    "in a table": f"| a |\n|---|\n| ![x]({EVIL}/13.png) |",
    "split by streaming": f"![a]({EVIL}/14",  # a prefix shown while the answer streams
}


def images(markdown: str) -> list[str]:
    parser = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    found = []
    for token in parser.parse(markdown):
        found += [c.attrs["src"] for c in token.children or [] if c.type == "image"]
    return found


@pytest.mark.parametrize("form", FORMS)
def test_no_image_survives(form):
    text = FORMS[form]
    if form != "split by streaming":
        assert images(text), "the form must be an image before sanitising"
    assert images(safe_markdown(text)) == []


def test_common_forms_read_as_alt_text_and_text_is_kept():
    assert safe_markdown(FORMS["inline"]) == "See [image: logo] here"
    plain = "Run `chatbot index` [1]! [Docs](https://example.org) **now**"
    assert safe_markdown(plain) == plain


def test_file_names_cannot_break_out_of_their_code_span():
    for name in (f"a`![x]({EVIL}/n.png)`.md", f"x``\n\n![y]({EVIL}/m.png)\n.txt", "plain.md"):
        shown = f"**[1]** {code_span(name)} · relevance 0.50"
        assert images(shown) == []
        parsed = MarkdownIt("commonmark").parseInline(shown)[0].children
        assert [c.type for c in parsed].count("code_inline") == 1


def _inline(markdown: str) -> list:
    parser = MarkdownIt("commonmark").enable("table").enable("strikethrough")
    blocks = [t for t in parser.parse(markdown) if t.type == "inline"]
    assert len(blocks) == 1, f"one paragraph expected: {markdown!r}"
    return blocks[0].children


NASTY = [
    ("plain words ", "the quote", " more words"),
    (f"![x]({EVIL}/q.png) and <b>html</b> ", "**bold** `code`", f" [link]({EVIL}) $x^2$ :red[y]"),
    ("# not a heading ", "- not an item", " > not a quote | a | b |"),
    ("mid", "(word", ")end"),
    ("a\\", "back\\slash\\", "\\z"),
    ("1. ", "_under_ ~~strike~~", " ***"),
    (
        "Le cafe\u0301",
        "(see below)",
        "\u00adx",
    ),  # a combining mark, a soft hyphen: neither word nor punctuation
    ("mail@", "=", "@"),
    ("", "«quoted»", ""),
    ("spaces ", "  at its edges ", "\u00a0stay outside"),  # "** x**" would not be bold
]


@pytest.mark.parametrize("before,quote,after", NASTY)
def test_a_quote_in_its_context_is_bold_and_nothing_else_is_markup(before, quote, after):
    """Document text is shown as text: the only markup is the bold around the quote, whatever the passage holds
    (images, links, HTML, code, emphasis, list or heading markers), and every character is still there."""
    children = _inline(quote_markdown(before, quote, after))
    types = [c.type for c in children]
    assert types.count("strong_open") == 1 and types.count("strong_close") == 1
    assert set(types) <= {"text", "strong_open", "strong_close"}
    inside = types.index("strong_open") + 1, types.index("strong_close")
    unjoined = str.maketrans("", "", " \u2060")  # the spaces and WORD JOINERs quote_markdown may add
    assert "".join(c.content for c in children[inside[0] : inside[1]]).translate(unjoined) == quote.translate(
        unjoined
    )
    shown = "".join(c.content for c in children)
    assert shown.translate(unjoined) == (before + quote + after).translate(unjoined)
    assert images(quote_markdown(before, quote, after)) == []


def test_escaped_text_reads_as_it_is_written():
    text = "Run `make run` then see [docs](x) and <i>this</i>: 50% * 2 = $100 # done"
    children = _inline(escape_markdown(text))
    assert [c.type for c in children] == ["text"] and children[0].content == text


def test_bare_urls_and_addresses_in_a_passage_stay_text():
    """GFM makes a bare URL, a "www." name or an e-mail address a link even with its punctuation escaped: each
    gets a WORD JOINER where GFM needs its parts joined ("http" to "://", "www" to ".", "@" to the domain)."""
    passage = (
        "see http://evil.example/a, HTTPS://evil.example, 1http://x.y, www.evil.example, bob@evil.example"
    )
    shown = quote_markdown(passage + " ", "the quote", " mailto:a@b.c xmpp:a@b.c/d")
    plain = shown.replace("\\", "")
    for joined in ("http://", "HTTPS://", "www.", "@evil", "@b.c"):
        assert joined not in plain, joined
    assert plain.replace("\u2060", "").replace("**", "") == passage + " the quote mailto:a@b.c xmpp:a@b.c/d"


PASSAGE = (
    "Backups run nightly.\n"
    "    indented, as code would be\n"
    "# not a heading\n"
    "- not an item\n"
    "1. not a numbered item\n"
    "> not a quote\n"
    "| not | a table |\n"
    "|---|---|\n"
    "---\n"
    "\n"
    f"See ![x]({EVIL}/p.png), <b>html</b>, [a link]({EVIL}) and `code`.\r\n"
    "The copies are kept for 30 days before they are deleted.\n"
    f"\n[x]: {EVIL}/reference.png\n"
)


def _blocks(markdown: str) -> list:
    return MarkdownIt("commonmark").enable("table").enable("strikethrough").parse(markdown)


def test_a_passage_in_the_sources_is_its_text_with_the_quote_in_bold():
    """The Sources expander shows each passage with the answer's quote in bold: whatever the passage holds
    (indentation, headings, lists, quotes, tables, rules, images, HTML, links, a reference definition) it stays
    text, line for line, and the bold is the only markup."""
    start = PASSAGE.index("kept for 30 days")
    shown = passage_markdown(PASSAGE, [start, start + len("kept for 30 days")])
    tokens = _blocks(shown)
    assert {t.type for t in tokens} <= {"paragraph_open", "paragraph_close", "inline"}
    children = [c for t in tokens if t.type == "inline" for c in t.children]
    types = [c.type for c in children]
    assert set(types) <= {"text", "softbreak", "hardbreak", "strong_open", "strong_close"}
    assert (
        types.count("strong_open") == 1
        and children[types.index("strong_open") + 1].content == "kept for 30 days"
    )
    assert images(shown) == []
    text = "\n".join(
        "".join(c.content if c.type == "text" else "\n" if "break" in c.type else "" for c in t.children)
        for t in tokens
        if t.type == "inline"
    )
    assert text.replace("\u2060", "").split() == PASSAGE.split()  # every word, in order
    # wrapped prose flows; a line starting an item, heading, quote, table row or rule keeps its line (7 here)
    assert types.count("hardbreak") == 7 and "softbreak" in types


def test_a_quote_over_two_lines_is_bold_on_each_and_a_long_passage_is_cut_around_it():
    start, end = PASSAGE.index("and `code`"), PASSAGE.index(" for 30 days")
    children = [
        c for t in _blocks(passage_markdown(PASSAGE, [start, end])) if t.type == "inline" for c in t.children
    ]
    bold = [children[i + 1].content for i, c in enumerate(children) if c.type == "strong_open"]
    assert bold == ["and `code`.", "The copies are kept"]
    long = "word " * 600 + "the answer itself " + "more " * 600
    at = long.index("the answer itself")
    cut = passage_markdown(long, [at, at + len("the answer itself")], limit=200)
    assert cut.startswith("…") and cut.endswith("…") and "**the answer itself**" in cut and len(cut) < 260
    assert passage_markdown(long, None, limit=200).endswith("…")
    assert "**" not in passage_markdown(PASSAGE, None)


@pytest.mark.parametrize(
    "text,quote",
    [
        ("\x00\x00\x00\x00rm -rf", None),  # would be indentation: a code block
        ("a\n\n\x01\x01\x01\x01b", None),
        ("\x00", (0, 1)),  # would be "** **": a rule
        ("x \x01y", (2, 4)),  # a bold whose edge is a control character
        ("x-\x85y", (0, 2)),  # NEL: a space to Python, not to CommonMark
        ("x\u2028(y)", (2, 5)),
        ("x \ufeffy", (2, 4)),
        ("a lone\rcarriage return", (2, 6)),
        ("a quote", (0,)),  # not two offsets: no quote
        ("a quote", [0.0, 1.0]),
    ],
)
def test_a_passage_s_control_characters_make_no_markup(text, quote):
    """Found by fuzzing (review): characters that are no text become spaces before anything is measured."""
    shown = passage_markdown(text, quote)
    types = [c.type for t in _blocks(shown) if t.type == "inline" for c in t.children]
    assert {t.type for t in _blocks(shown)} <= {"paragraph_open", "paragraph_close", "inline"}
    assert set(types) <= {"text", "softbreak", "hardbreak", "strong_open", "strong_close"}
    assert "**" not in "".join(c.content for t in _blocks(shown) if t.type == "inline" for c in t.children)
