"""Concept sets: the three file formats, validation, name lookup, and the shipped paper set."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the package need not be installed to run the tests
    sys.path.insert(0, str(ROOT))

from hrv_diffusion.hrv.concepts import (  # noqa: E402
    BUILTIN_DESCRIPTIONS, DEFAULT_DESCRIPTION, ConceptSet, ConceptSetError, check_counts, check_token_lengths, description_name,
    detect_format, read_concept_set, resolve_description, write_concept_set,
)

SMALL = ConceptSet(("Pets", "Shades"), (("Dog", "Cat", "Guinea pig"), ("Crimson", "Teal")))


def write(path: Path, text: str, bom: bool = False, crlf: bool = False) -> Path:
    if crlf:
        text = text.replace("\n", "\r\n")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


# ----- the ConceptSet object -------------------------------------------------------------------------


def test_properties():
    assert SMALL.num_concepts == 2
    assert SMALL.flat_words == ("Dog", "Cat", "Guinea pig", "Crimson", "Teal")
    assert SMALL.word_counts == (3, 2)
    assert SMALL.concept_of_word == (0, 0, 0, 1, 1)
    assert SMALL.word_offsets == (0, 3)


def test_lists_become_tuples_and_fingerprint_depends_on_content():
    same = ConceptSet(["Pets", "Shades"], [["Dog", "Cat", "Guinea pig"], ["Crimson", "Teal"]])
    assert same == SMALL and same.fingerprint() == SMALL.fingerprint()
    assert len(SMALL.fingerprint()) == 16
    renamed = ConceptSet(("Pets", "Colours"), SMALL.words)
    reordered = ConceptSet(SMALL.names, (("Cat", "Dog", "Guinea pig"), ("Crimson", "Teal")))
    assert len({SMALL.fingerprint(), renamed.fingerprint(), reordered.fingerprint()}) == 3


@pytest.mark.parametrize("names, words, message", [
    (("A", "B"), (("x",), ()), "has no words"),
    (("A",), (("Dog", "dog"),), "appears twice in concept 'A'"),
    (("A",), (("Polka  dots", "polka dots"),), "appears twice"),
    (("A", "B"), (("Dog",), ("Cat", "DOG")), "already a word of concept 'A'"),
    (("A", "a"), (("x",), ("y",)), "concept 'a' appears twice"),
    ((), (), "empty"),
    (("A",), (("x",), ("y",)), "1 concept names but 2 word lists"),
    (("A",), (("",),), "non-empty"),
])
def test_validation_errors(names, words, message):
    with pytest.raises(ConceptSetError, match=message):
        ConceptSet(names, words)


def test_check_counts():
    check_counts(SMALL)  # None: no check, variable words per concept allowed
    check_counts(SMALL, num_concepts=2)
    with pytest.raises(ConceptSetError, match="--num_concepts 34"):
        check_counts(SMALL, num_concepts=34)
    with pytest.raises(ConceptSetError, match=r"Shades \(2\)"):
        check_counts(SMALL, num_words_per_concept=3)


def test_check_token_lengths():
    from hrv_diffusion.core.tokenizer import clip_tokenizer

    tokenizer = clip_tokenizer()
    assert check_token_lengths(SMALL, tokenizer)[:2] == (3, 3)  # SOT + word + EOT
    long_word = " ".join(["cat"] * 76)  # 76 tokens + SOT + EOT = 78 > 77
    with pytest.raises(ConceptSetError, match="78 tokens"):
        check_token_lengths(ConceptSet(("A",), ((long_word,),)), tokenizer)


# ----- formats ---------------------------------------------------------------------------------------


def test_ours_round_trip(tmp_path):
    path = write_concept_set(tmp_path / "set.txt", SMALL, comment="two small concepts")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# two small concepts\n") and "[Guinea pig]" not in text and "[Pets]\nDog\n" in text
    assert read_concept_set(path) == SMALL


def test_ours_with_bom_crlf_comments_blank_lines(tmp_path):
    path = write(tmp_path / "set.txt", "# made by hand\n\n[Pets]\n  Dog \n\n# a comment\nCat\nGuinea pig\n"
                                        "[Shades]\nCrimson\nTeal\n\n", bom=True, crlf=True)
    assert detect_format(path.read_text(encoding="utf-8-sig").splitlines()) == "ours"
    assert read_concept_set(path) == SMALL


def test_writer_refuses_unreadable_words(tmp_path):
    for word in ("#hashtag", "[bracketed]"):
        with pytest.raises(ConceptSetError, match="cannot be written"):
            write_concept_set(tmp_path / "x.txt", ConceptSet(("A",), ((word,),)))


def test_published_list_with_bom_crlf(tmp_path):
    text = "Pets\n\n1. Dog\n2. Cat\n3. Guinea pig\n\nShades\n\n1. Crimson\n2. Teal\n"
    path = write(tmp_path / "my_list.csv", text, bom=True, crlf=True)
    assert read_concept_set(path) == SMALL


def test_published_list_keeps_digits_inside_words(tmp_path):
    path = write(tmp_path / "l.csv", "Drinks\n1. 7 Up\n2. Tea\nThings\n1. 3D glasses\n10. Route 66 sign\n")
    cs = read_concept_set(path)
    assert cs.words == (("7 Up", "Tea"), ("3D glasses", "Route 66 sign"))


def test_words_only_split_into_equal_blocks(tmp_path):
    path = write(tmp_path / "w.txt", "Dog\nCat\nFish\nCrimson\nTeal\nOchre\n", bom=True, crlf=True)
    assert detect_format(path.read_text(encoding="utf-8-sig").splitlines()) == "words"
    cs = read_concept_set(path, num_concepts=2, num_words_per_concept=3)
    assert cs.names == ("concept_0", "concept_1")
    assert cs.words == (("Dog", "Cat", "Fish"), ("Crimson", "Teal", "Ochre"))
    assert read_concept_set(path, num_concepts=3).word_counts == (2, 2, 2)
    assert read_concept_set(path, num_words_per_concept=6).num_concepts == 1


def test_words_only_errors(tmp_path):
    path = write(tmp_path / "w.txt", "Dog\nCat\nFish\nCrimson\nTeal\n")
    with pytest.raises(ConceptSetError, match="num_concepts"):
        read_concept_set(path)
    with pytest.raises(ConceptSetError, match="do not split"):
        read_concept_set(path, num_concepts=2)
    with pytest.raises(ConceptSetError, match="do not split"):
        read_concept_set(path, num_concepts=2, num_words_per_concept=3)


def test_words_only_takes_names_from_sibling_list(tmp_path):
    write(tmp_path / "x_list.csv", "Drinks\n1. 7 Up\n2. Tea\nPets\n1. Dog\n2. Cat\n", bom=True, crlf=True)
    # The reference's extraction drops digits: "7 Up" became "Up" in its words-only file.
    words_only = write(tmp_path / "x_descriptions.txt", "Up\nTea\nDog\nCat\n")
    cs = read_concept_set(words_only)
    assert cs.names == ("Drinks", "Pets") and cs.words[0] == ("7 Up", "Tea")
    write(words_only, "Up\nTea\nDog\nCow\n")
    with pytest.raises(ConceptSetError, match="differ from those of x_list.csv"):
        read_concept_set(words_only)


def test_file_errors_name_the_file_and_line(tmp_path):
    cases = {
        "empty_concept.txt": ("[A]\ndog\n[B]\n[C]\ncat\n", "concept 'B' has no words"),
        "empty_last.txt": ("[A]\ndog\n[B]\n", "concept 'B' has no words"),
        "word_first.txt": ("dog\n[A]\ncat\n", "line 1: word 'dog' comes before"),
        "list_word_first.csv": ("1. Dog\nPets\n1. Cat\n", "line 1: word 'Dog' comes before"),
        "dup_within.txt": ("[A]\ndog\nDog\n", "appears twice in concept 'A'"),
        "dup_across.csv": ("A\n1. dog\nB\n1. dog\n", "already a word of concept 'A'"),
        "empty_name.txt": ("[ ]\ndog\n", "empty concept name"),
        "nothing.txt": ("\n\n", "no words"),
    }
    for name, (text, message) in cases.items():
        path = write(tmp_path / name, text)
        with pytest.raises(ConceptSetError, match=message) as info:
            read_concept_set(path)
        assert name in str(info.value)
    (tmp_path / "latin1.txt").write_bytes("[A]\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ConceptSetError, match="UTF-8"):
        read_concept_set(tmp_path / "latin1.txt")


def test_read_checks_counts(tmp_path):
    path = write_concept_set(tmp_path / "s.txt", SMALL)
    with pytest.raises(ConceptSetError, match="num_words_per_concept 3"):
        read_concept_set(path, num_words_per_concept=3)


# ----- finding description files -----------------------------------------------------------------------


def test_resolve_description_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = resolve_description(DEFAULT_DESCRIPTION)
    assert shipped == BUILTIN_DESCRIPTIONS / f"{DEFAULT_DESCRIPTION}.txt"
    (tmp_path / "descriptions").mkdir()
    local = write_concept_set(tmp_path / "descriptions" / f"{DEFAULT_DESCRIPTION}.txt", SMALL)
    assert resolve_description(DEFAULT_DESCRIPTION) == tmp_path / "descriptions" / local.name  # cwd first
    csv = write(tmp_path / "descriptions" / "mine.csv", "Pets\n1. Dog\n")
    assert resolve_description("mine") == tmp_path / "descriptions" / csv.name  # .csv when no .txt
    write_concept_set(tmp_path / "descriptions" / "mine.txt", SMALL)
    assert resolve_description("mine").suffix == ".txt"  # .txt before .csv
    assert resolve_description(str(csv)) == csv  # an existing path as is
    assert resolve_description("mine.csv") == tmp_path / "descriptions" / "mine.csv"


def test_resolve_description_error_lists_places_and_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConceptSetError) as info:
        resolve_description("no_such_set")
    message = str(info.value)
    assert str(tmp_path / "descriptions" / "no_such_set.txt") in message
    assert str(BUILTIN_DESCRIPTIONS / "no_such_set.csv") in message
    assert DEFAULT_DESCRIPTION in message.split("Available names:")[1]


def test_description_name():
    assert description_name("descriptions/340_final_text_descriptions.txt") == "340_final_text_descriptions"
    assert description_name("/x/my.set.csv") == "my.set"


# ----- the shipped paper set ---------------------------------------------------------------------------


def test_shipped_paper_set():
    path = BUILTIN_DESCRIPTIONS / f"{DEFAULT_DESCRIPTION}.txt"
    assert detect_format(path.read_text(encoding="utf-8").splitlines()) == "ours"
    cs = read_concept_set(path, num_concepts=34, num_words_per_concept=10)
    assert cs.names[:3] == ("Animals", "Plants", "Fruits and Vegetables")
    assert cs.names[-1] == "Geometric Patterns" and "Geo-locations" in cs.names
    assert cs.words[0][:3] == ("Dog", "Cat", "Elephant")
    assert "Oak tree" in cs.words[1] and "McDonald's" in cs.words[32]
    assert cs.words[-1][-1] == "Waves"
    assert cs.fingerprint() == "698748ad3966275d"  # changes only if the paper set file changes
