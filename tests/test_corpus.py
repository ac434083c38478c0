"""corpus.py: encodings detected without mojibake, Project Gutenberg markers, streaming blocks, the
shipped books (in process: no model, fast)."""
import glob
import gzip
import os
import re

import pytest

import corpus
from conftest import ROOT
from corpus import CorpusError, Reader, detect_encoding, read_text

SPANISH = "¿Qué pasó, señor Núñez? ¡Qué pingüino! “Canción” — 10 € — «adiós»\nÁrbol, educación.\n"


@pytest.mark.parametrize("codec, expected", [
    ("utf-8", "utf-8"), ("utf-8-sig", "utf-8-sig"), ("utf-16", "utf-16"), ("cp1252", "cp1252")])
def test_encodings_round_trip(tmp_path, codec, expected):
    path = tmp_path / "t.txt"
    path.write_bytes(SPANISH.encode(codec))
    name, why = detect_encoding(str(path))
    assert name == expected, why
    assert read_text(str(path))[0] == SPANISH


def test_latin1_and_declared_charsets(tmp_path):
    text = "canción ñandú pingüino ¿sí? ¡no! " * 20
    (tmp_path / "latin1.txt").write_bytes(text.encode("latin-1"))  # no C1 bytes: cp1252 reads it identically
    assert read_text(str(tmp_path / "latin1.txt"))[0] == text
    # a declared charset wins over the cp1252 fallback
    koi = "Character set encoding: KOI8-R\n\nпривет мир\n"
    (tmp_path / "koi.txt").write_bytes(koi.encode("koi8-r"))
    assert detect_encoding(str(tmp_path / "koi.txt"))[0] == "koi8-r"
    assert read_text(str(tmp_path / "koi.txt"))[0] == koi
    # bytes cp1252 leaves undefined (0x81, 0x9d) fall back to ISO-8859-1
    (tmp_path / "odd.txt").write_bytes("año ".encode("latin-1") + b"\x81\x9d")
    assert detect_encoding(str(tmp_path / "odd.txt"))[0] == "latin-1"
    # a forced encoding is used as given; a wrong one is one clear error
    assert read_text(str(tmp_path / "latin1.txt"), encoding="latin-1")[0] == text
    with pytest.raises(CorpusError, match="cannot be decoded as utf-8"):
        read_text(str(tmp_path / "latin1.txt"), encoding="utf-8")
    with pytest.raises(CorpusError, match="unknown encoding"):
        read_text(str(tmp_path / "latin1.txt"), encoding="nonsense")


def test_utf8_is_never_read_as_cp1252(tmp_path):
    # valid UTF-8 everywhere but one late byte would be mojibake if read as cp1252; the whole file is
    # checked, so a file that is UTF-8 at its start and not later is not called UTF-8
    good = ("canción " * 20_000).encode("utf-8")
    (tmp_path / "utf8.txt").write_bytes(good)
    assert detect_encoding(str(tmp_path / "utf8.txt"))[0] == "utf-8"
    (tmp_path / "mixed.txt").write_bytes(good + "más".encode("latin-1"))
    assert detect_encoding(str(tmp_path / "mixed.txt"))[0] == "cp1252"
    text = read_text(str(tmp_path / "utf8.txt"))[0]
    assert "Ã" not in text and text.count("ó") == 20_000


def test_binary_is_refused(tmp_path):
    (tmp_path / "zeros.txt").write_bytes(b"abc\x00\x00def" * 10)
    (tmp_path / "noise.txt").write_bytes(bytes(range(1, 32)) * 50)  # control bytes, no NUL
    for name in ("zeros.txt", "noise.txt"):
        with pytest.raises(CorpusError, match="binary"):
            read_text(str(tmp_path / name))


GUTENBERG = ("The Project Gutenberg EBook of Prueba\r\n\r\nCharacter set encoding: ISO-8859-1\r\n\r\n"
             "*** START OF THIS PROJECT GUTENBERG EBOOK PRUEBA ***\r\n\r\nProduced by Someone\r\n\r\n"
             "Había una vez un perro.\r\n\r\nFIN\r\n\r\nEnd of the Project Gutenberg EBook of Prueba\r\n\r\n"
             "*** END OF THIS PROJECT GUTENBERG EBOOK PRUEBA ***\r\n\r\n***** This file should be named x *****\r\n"
             "*** START: FULL LICENSE ***\r\nTHE FULL PROJECT GUTENBERG LICENSE\r\n")


def test_gutenberg_header_and_footer_are_stripped(tmp_path):
    (tmp_path / "pg.txt").write_bytes(GUTENBERG.encode("latin-1"))
    text, reader = read_text(str(tmp_path / "pg.txt"))
    assert "Había una vez un perro." in text and "FIN" in text
    assert "Gutenberg EBook" not in text and "LICENSE" not in text and "Character set" not in text
    info = reader.files[str(tmp_path / "pg.txt")]
    assert info["gutenberg"] and info["encoding"] == "cp1252" and "declared" in info["why"]
    # off: the file as it is (line ends read as "\n")
    assert read_text(str(tmp_path / "pg.txt"), strip_gutenberg=False)[0] == GUTENBERG.replace("\r\n", "\n")
    # old Mac line ends (CR alone): the markers are found all the same
    (tmp_path / "cr.txt").write_bytes(GUTENBERG.replace("\r\n", "\r").encode("latin-1"))
    text = read_text(str(tmp_path / "cr.txt"))[0]
    assert "Había una vez un perro." in text and "LICENSE" not in text and "Gutenberg EBook" not in text
    # two books in one file: both bodies, neither licence
    (tmp_path / "two.txt").write_bytes((GUTENBERG + GUTENBERG.replace("perro", "gato")).encode("latin-1"))
    two = read_text(str(tmp_path / "two.txt"))[0]
    assert "perro" in two and "gato" in two and "LICENSE" not in two
    # a START marker without its END is a truncated file: an error, not a silent cut
    (tmp_path / "cut.txt").write_bytes(GUTENBERG[:GUTENBERG.index("FIN")].encode("latin-1"))
    with pytest.raises(CorpusError, match="START marker but no END"):
        read_text(str(tmp_path / "cut.txt"))


def test_long_text_streams_in_blocks_that_end_at_line_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "BLOCK_CHARS", 1000)
    lines = [f"línea {i} con ñ y acentos: áéíóú\r\n" for i in range(10_000)]
    path = tmp_path / "big.txt.gz"
    with gzip.open(path, "wb") as f:
        f.write("".join(lines).encode("utf-8"))
    blocks = list(Reader([str(path)], progress=False).documents())
    assert len(blocks) > 50 and all(b.endswith("\n") for b in blocks)
    assert "".join(blocks) == "".join(lines).replace("\r\n", "\n")


def test_a_text_without_line_ends_still_streams_in_bounded_blocks(tmp_path, monkeypatch):
    """One long line (or CR-free minified text) must not be held whole: blocks are cut at a space,
    else anywhere, once a block's worth has no line end."""
    monkeypatch.setattr(corpus, "BLOCK_CHARS", 1000)
    text = " ".join(f"palabra{i}" for i in range(3000))  # ~35,000 characters, no newline
    (tmp_path / "line.txt").write_text(text)
    (tmp_path / "run.txt").write_text("x" * 5500)
    blocks = list(Reader([str(tmp_path / "line.txt")], strip_gutenberg=False, progress=False).documents())
    assert len(blocks) > 20 and max(map(len, blocks)) < 2000 and all(b.endswith(" ") for b in blocks[:-1])
    assert "".join(blocks) == text
    blocks = list(Reader([str(tmp_path / "run.txt")], strip_gutenberg=False, progress=False).documents())
    assert [len(b) for b in blocks] == [1000] * 5 + [500]


def test_folder_lists_text_files_only_and_empty_folder_fails(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.md").write_text("no")
    with pytest.raises(CorpusError, match="holds no .txt"):
        corpus.list_files(str(tmp_path / "d"))
    (tmp_path / "d" / "sub").mkdir()
    for name in ("b.txt", "a.jsonl.gz", "sub/c.parquet", "x.csv"):
        (tmp_path / "d" / name).write_text("")
    found = [os.path.relpath(p, tmp_path / "d") for p in corpus.list_files(str(tmp_path / "d"))]
    assert found == ["a.jsonl.gz", "b.txt", os.path.join("sub", "c.parquet")]
    # hidden files and folders (macOS ._ files, .ipynb_checkpoints) and dangling links are not read
    (tmp_path / "d" / ".hidden").mkdir()
    for name in ("._b.txt", ".hidden/e.txt"):
        (tmp_path / "d" / name).write_bytes(os.urandom(100))
    os.symlink(tmp_path / "nowhere.txt", tmp_path / "d" / "gone.txt")
    assert [os.path.relpath(p, tmp_path / "d") for p in corpus.list_files(str(tmp_path / "d"))] == found


def test_codecs_that_are_not_text_and_utf16_without_bom_fail_in_one_line(tmp_path):
    (tmp_path / "a.txt").write_text("hola " * 100)
    for name in ("rot13", "base64", "zlib_codec"):  # codecs Python has, but not text encodings
        with pytest.raises(CorpusError, match="unknown encoding"):
            read_text(str(tmp_path / "a.txt"), encoding=name)
    (tmp_path / "u16.txt").write_bytes(("hola " * 100).encode("utf-16-le"))  # no byte-order mark
    with pytest.raises(CorpusError, match="cannot be decoded as utf-16 .*utf-16-le"):
        read_text(str(tmp_path / "u16.txt"), encoding="utf-16")
    assert read_text(str(tmp_path / "u16.txt"), encoding="utf-16-le")[0] == "hola " * 100
    # left to auto, it is named for what it is (not "binary"), with the flag that reads it
    with pytest.raises(CorpusError, match="UTF-16 text without a byte-order mark: pass --encoding=utf-16-le"):
        read_text(str(tmp_path / "u16.txt"))
    (tmp_path / "u16be.txt").write_bytes(("hola " * 100).encode("utf-16-be"))
    with pytest.raises(CorpusError, match="pass --encoding=utf-16-be"):
        read_text(str(tmp_path / "u16be.txt"))
    # and a JSONL line without a 'text' field says which keys it has
    (tmp_path / "c.jsonl").write_text('{"content": "hola", "id": 3}\n')
    with pytest.raises(CorpusError, match=r"line 1: expected an object with a string 'text' field \(keys found: content, id\)"):
        read_text(str(tmp_path / "c.jsonl"))
    # a null text is a missing value, skipped (as in a parquet file's text column); a number is an error
    (tmp_path / "n.jsonl").write_text('{"text": "uno"}\n{"text": null}\n{"text": "dos"}\n')
    assert read_text(str(tmp_path / "n.jsonl"))[0] == "uno\n\ndos"
    (tmp_path / "k.jsonl").write_text('{"text": 5}\n')
    with pytest.raises(CorpusError, match="line 1: expected an object with a string 'text' field"):
        read_text(str(tmp_path / "k.jsonl"))
    # forcing a one-byte code page does not make random bytes text
    (tmp_path / "noise.txt").write_bytes(bytes(range(256)) * 20)
    with pytest.raises(CorpusError, match="binary"):
        read_text(str(tmp_path / "noise.txt"), encoding="latin-1")
    # a declared charset the file does not keep to (mail says us-ascii) is not believed
    (tmp_path / "mail.txt").write_bytes(b"Content-Type: text/plain; charset=us-ascii\n\nCanci\xf3n, se\xf1or.\n")
    text, reader = read_text(str(tmp_path / "mail.txt"))
    assert "Canción, señor." in text and reader.files[str(tmp_path / "mail.txt")]["encoding"] == "cp1252"


def test_malformed_jsonl_lines_fail_in_one_line(tmp_path):
    for i, line in enumerate(["[" * 100_000 + "]" * 100_000, '{"text": "x", "n": ' + "9" * 5000 + "}"]):
        (tmp_path / f"{i}.jsonl").write_text('{"text": "bien"}\n' + line + "\n")
        with pytest.raises(CorpusError, match="line 2: not valid JSON"):
            read_text(str(tmp_path / f"{i}.jsonl"))


BOOKS = sorted(glob.glob(os.path.join(ROOT, "data", "es", "books", "*.txt")) +
               glob.glob(os.path.join(ROOT, "data", "es", "heldout", "*.txt")))


def test_shipped_books_read_cleanly():
    assert len(BOOKS) == 15
    reader = Reader(BOOKS, progress=False)
    text = "".join(reader.documents())
    encodings = sorted(info["encoding"] for info in reader.files.values())
    assert encodings == ["cp1252"] * 13 + ["utf-8-sig"] * 2  # 13 declared ISO-8859-1, 2 UTF-8 with a BOM
    assert all(info["gutenberg"] for info in reader.files.values())
    assert not re.search("Ã[\u0080-\u00bf]", text)  # the mark of UTF-8 read as Latin-1
    assert "\ufffd" not in text
    assert "FULL LICENSE" not in text and "START OF TH" not in text and "END OF TH" not in text
    assert text.count("ñ") > 10_000 and text.count("¿") > 5_000
