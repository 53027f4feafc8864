"""Chunks never exceed the model's token limit, keep positions, prefer boundaries, overlap."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer

from spotline.ingestion.chunking import Chunker
from spotline.embedding.local import default_model_path
from spotline.ingestion.parsing import parse_document


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))


def count(tokenizer, text):
    tokenizer.no_truncation()
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def words(rng, n):
    vocab = "invoice refund workspace admin export ledger approval receipt policy token webhook sync".split()
    return " ".join(rng.choice(vocab) for _ in range(n))


def long_markdown(seed=1, sections=4, paras=5):
    rng = random.Random(seed)
    parts = ["# Expense policy"]
    for s in range(sections):
        parts.append(f"## Section {s}")
        for p in range(paras):
            parts.append(" ".join(f"{words(rng, rng.randint(5, 25)).capitalize()}." for _ in range(rng.randint(2, 6))))
    return "\n\n".join(parts)


@pytest.mark.parametrize("size, overlap", [(64, 16), (128, 32), (200, 40), (254, 0)])
def test_never_over_the_limit_and_positions_map_back(tokenizer, size, overlap):
    doc = parse_document("kb/p.md", long_markdown().encode())
    chunks = Chunker(tokenizer, size, overlap).split(doc)
    assert len(chunks) > 3
    for c in chunks:
        assert c.token_count == count(tokenizer, c.embed_text) <= size
        assert doc.text[c.start_char:c.end_char] == c.text
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_pathological_inputs_stay_under_limit(tokenizer):
    rng = random.Random(3)
    no_punctuation = words(rng, 3000)  # one giant "sentence"
    cjk = "料金の払い戻しは五営業日以内に処理されます" * 200
    url_soup = " ".join(f"https://example.com/{i}/{'x' * 40}" for i in range(200))
    for text in (no_punctuation, cjk, url_soup):
        doc = parse_document("kb/x.txt", ("Title\n\n" + text).encode())
        chunks = Chunker(tokenizer, 100, 20).split(doc)
        assert chunks and all(count(tokenizer, c.embed_text) <= 100 for c in chunks)
        assert "".join(doc.text[c.start_char:c.end_char] for c in chunks).replace(" ", "")  # covers text


def test_overlap_repeats_the_tail_of_the_previous_chunk(tokenizer):
    text = "Title\n\n" + " ".join(f"Sentence number {i} talks about refunds." for i in range(80))
    chunks = Chunker(tokenizer, 80, 20).split(parse_document("kb/o.txt", text.encode()))
    assert len(chunks) >= 3
    for prev, nxt in zip(chunks[1:], chunks[2:]):
        assert nxt.start_char < prev.end_char, "consecutive chunks inside a paragraph overlap"


def test_headings_start_new_chunks_so_edits_stay_local(tokenizer):
    original = long_markdown(seed=5, sections=5, paras=4)
    chunker = Chunker(tokenizer, 120, 20)
    before = chunker.split(parse_document("kb/p.md", original.encode()))
    # Edit one sentence in section 2 only.
    lines = original.split("\n\n")
    i = lines.index("## Section 2") + 1
    lines[i] = "A brand new sentence about chargebacks and disputes. " + lines[i]
    after = chunker.split(parse_document("kb/p.md", "\n\n".join(lines).encode()))
    changed = {c.chunk_hash for c in after} - {c.chunk_hash for c in before}
    sec2 = [c for c in after if "chargebacks" in c.text or "Section 2" in c.text]
    assert changed, "the edit must produce at least one new chunk"
    assert len(changed) <= len(sec2) + 1, "only chunks of the edited section change"
    assert len(changed) < len(after) / 2


def test_pdf_chunks_carry_pages(tokenizer):
    from tests.ingest.test_parsing import make_pdf

    data = make_pdf(["Page one talks about invoices. " * 30, "Page two talks about receipts. " * 30])
    chunks = Chunker(tokenizer, 100, 10).split(parse_document("kb/g.pdf", data))
    assert {c.page_start for c in chunks} == {1, 2}
    assert all(c.page_start <= c.page_end for c in chunks)


def test_deterministic(tokenizer):
    doc = parse_document("kb/p.md", long_markdown(seed=9).encode())
    a = [(c.chunk_hash, c.start_char) for c in Chunker(tokenizer, 128, 32).split(doc)]
    b = [(c.chunk_hash, c.start_char) for c in Chunker(tokenizer, 128, 32).split(doc)]
    assert a == b


def test_overlap_must_be_smaller_than_chunk(tokenizer):
    with pytest.raises(ValueError):
        Chunker(tokenizer, 50, 50)


def test_long_runs_of_multi_piece_words_never_exceed_the_limit(tokenizer):
    # "organization" is organ + ##ization: cutting between its pieces used to re-tokenise longer.
    rng = random.Random(11)
    vocab = ["organization", "internationalization", "reimbursements", "unreconciled", "subsidiaries"]
    run_on = " ".join(rng.choice(vocab) for _ in range(2500))
    blob = "Q" * 5000 + "zx" * 3000  # single "words" far longer than a chunk
    for text in (run_on, blob):
        for size in (64, 200, 254):
            doc = parse_document("kb/run-on.txt", ("Legal terms\n\n" + text).encode())
            chunks = Chunker(tokenizer, size, size // 5).split(doc)
            assert all(c.token_count == count(tokenizer, c.embed_text) <= size for c in chunks)
            assert [c.index for c in chunks] == list(range(len(chunks)))
