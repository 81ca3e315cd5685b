"""Function words, stems and word coverage (the keyword query and the chat's relevance gate)."""

import pytest

from retrieval.words import FUNCTION_WORDS, content_words, one_edit, stem, word_coverage


@pytest.mark.parametrize(
    "question, passages, expected",
    [
        # content words only: "how", "do", "I", "a" say nothing of the subject
        ("How do I delete a collection?", ["Delete collections with chatbot collections delete."], 1.0),
        # singular and plural, the forms of a verb, case: one stem
        ("¿Cómo se borran las colecciones?", ["Para borrar una colección: chatbot collections delete."], 1.0),
        ("What is the capital of Australia?", ["Delete collections with chatbot collections delete."], 0.0),
        ("¿Quién pintó Las Meninas en Madrid?", ["Madrid guarda la copia de seguridad."], 1 / 3),
        ("How?", ["anything"], 1.0),  # no content word: nothing to check
        ("¿Dónde escribo la pregnta?", ["Escriba su pregunta en el cuadro."], 1.0),  # a typo: one edit away
        ("¿Dónde escribo la pergunta?", ["Escriba su pregunta en el cuadro."], 0.5),  # two edits: not found
        # a short name counts: an acronym in capitals, a number or code with a digit, found in any case
        ("¿Hace falta una GPU?", ["No hace falta una gpu: basta la CPU."], 1.0),
        ("¿Hace falta una GPU?", ["No hace falta nada más."], 0.5),
        ("How heavy is the MX-540?", ["The MX-540 weighs 14.2 kg."], 2 / 3),
        # question words say nothing of the subject, in Spanish as in English ("many", "must")
        ("¿Cuántos libros reunía su biblioteca?", ["Su biblioteca reunía unos 4.000 libros."], 1.0),
        ("How many books must a member return?", ["A member returns the books by Friday."], 1.0),
        # a number is found as it is: no typo tolerance, no stem
        ("How heavy is the MX-541?", ["The MX-540 weighs 14.2 kg."], 1 / 3),
        ("What changed in 20101?", ["Released in 20100."], 0.0),
        # the same first five digits are not the same number
        ("Where is order 123456?", ["Order 123457 has shipped."], 0.5),
    ],
)
def test_word_coverage(question, passages, expected):
    assert word_coverage(question, passages) == pytest.approx(expected)


def test_stems_join_the_forms_of_a_word_and_drop_function_words():
    assert {stem(w) for w in content_words("The collections were deleted")} == {"colle", "delet"}
    assert {stem(w) for w in content_words("¿Cómo se borran las colecciones?")} == {"borra", "colec"}
    assert {"how", "which", "cómo", "para"} <= FUNCTION_WORDS


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ("pregunta", "pregunta", True),
        ("pregnta", "pregunta", True),  # a letter dropped
        ("preguntaa", "pregunta", True),  # one added
        ("pregunto", "pregunta", True),  # one replaced
        ("pergunta", "pregunta", False),  # two letters swapped: two edits
        ("menina", "pregunta", False),
    ],
)
def test_one_edit(a, b, expected):
    assert one_edit(a, b) is expected and one_edit(b, a) is expected


def test_short_names_are_acronyms_and_codes_not_short_words():
    assert content_words("Can I index PDF files on a NAS?") == {"index", "files", "pdf", "nas"}
    assert content_words("Is v2 of the API out?") == {"v2", "api"}
    assert content_words("Is it OK to go?") == {"ok"}  # capitals mark it
    assert content_words("is it ok to go?") == set()  # written plainly, a short word says nothing
    assert content_words("IS THE API OUT?") == set()  # shouted: no word is marked out by its capitals
    assert content_words("¿Quién ganó en 1998?") == {"ganó", "1998"}


@pytest.mark.parametrize(
    "question, expected",
    [
        ("Does the assistant need a GPU?", True),
        ("Can I index PDF files?", True),
        ("Isn't the index rebuilt at night?", True),
        ("¿Hace falta una GPU?", True),
        ("hace falta una GPU?", True),  # typed without the opening mark
        ("¿Hace falta que instale algo?", True),  # "que" without its accent joins clauses
        ("¿Se pueden indexar archivos PDF?", True),
        ("How do I reindex a collection?", False),
        ("Which file formats can I index?", False),
        ("¿Qué formatos de archivo puedo indexar?", False),
        ("que formatos puedo indexar?", False),  # the accent left out, at the start
        ("¿Dónde se guardan las conversaciones?", False),
        ("¿Por qué falla la indexación?", False),
        ("List the supported formats", False),
        ("Are PDF page numbers 0-based or 1-based?", False),  # a choice: answered by one of its words
        ("¿Es el MC pro-vida o pro-elección?", False),
        ("Is the device sold in the U.S.?", True),  # a capital "U" is no "u" ("or")
        ("¿La iglesia protege el bienestar de quienes?", False),  # a question word without its accent
        ("Can you tell me where the index is stored?", False),
    ],
)
def test_yes_no_questions(question, expected):
    from retrieval.words import yes_no_question

    assert yes_no_question(question) is expected
