"""Token-aware chunking: never over the embedding model's limit, paragraph- and sentence-aligned.

Token counts come from the embedding model's own tokenizer (``tokenizers``), so a chunk that fits
here fits the model. Each chunk is embedded as ``title + "\\n" + text``: the title carries the
topic into chunks that never name it, and it is counted in the budget. Headings start a new chunk,
so an edit in one section cannot shift chunk boundaries in the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from spotline.hashing import sha256_hex
from spotline.ingestion.parsing import ParsedDocument

MAX_TITLE_TOKENS = 32


@dataclass
class Chunk:
    index: int
    text: str
    title: str
    start_char: int
    end_char: int
    page_start: int | None
    page_end: int | None
    token_count: int  # of embed_text, without the model's special tokens

    @property
    def embed_text(self) -> str:
        return f"{self.title}\n{self.text}"

    @property
    def chunk_hash(self) -> str:
        return sha256_hex(self.embed_text)


@dataclass
class _Unit:
    start: int
    end: int
    tokens: int
    block_start: bool  # first unit of a paragraph
    heading: bool
    page: int | None
    exact: bool = True  # False for a piece cut inside a word: its count must be re-checked


# A sentence ends at . ! ? (plus closing quotes/brackets) followed by whitespace, or at a line break.
_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*\s+|\n+""")


def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    spans, pos = [], start
    for m in _SENTENCE_END.finditer(text, start, end):
        if m.end() - pos > 0 and text[pos : m.start() + 1].strip():
            spans.append((pos, m.end()))
            pos = m.end()
    if pos < end and text[pos:end].strip():
        spans.append((pos, end))
    # trim whitespace so offsets point at text
    out = []
    for s, e in spans:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s:
            out.append((s, e))
    return out


class Chunker:
    # A heading starts a new chunk once the current one holds this share of the budget (smaller
    # sections share a chunk with the next); a paragraph end is preferred over a sentence end when
    # the chunk before it holds this share.
    section_min = 0.5
    paragraph_min = 0.75

    def __init__(self, tokenizer: Tokenizer, chunk_tokens: int = 200, overlap_tokens: int = 40):
        if overlap_tokens >= chunk_tokens:
            raise ValueError("overlap_tokens must be smaller than chunk_tokens")
        self.tok = tokenizer
        self.tok.no_truncation()
        self.tok.no_padding()
        self.chunk_tokens = chunk_tokens
        self.overlap_tokens = overlap_tokens
        # BERT pre-tokenisation splits on whitespace and punctuation before WordPiece, so the
        # tokens of whitespace-separated units simply add up: no second pass is needed to count a
        # chunk. Other tokenizers (SentencePiece...) are re-counted.
        from tokenizers import pre_tokenizers

        self._additive = isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer)

    @classmethod
    def from_file(cls, tokenizer_json: Path | str, chunk_tokens: int, overlap_tokens: int) -> "Chunker":
        return cls(Tokenizer.from_file(str(tokenizer_json)), chunk_tokens, overlap_tokens)

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def _title(self, title: str) -> tuple[str, int]:
        enc = self.tok.encode(title, add_special_tokens=False)
        if len(enc.ids) > MAX_TITLE_TOKENS:
            title = title[: enc.offsets[MAX_TITLE_TOKENS - 1][1]]
        return title, self.count([title + "\n"])[0]

    def _units(self, doc: ParsedDocument, budget: int) -> list[_Unit]:
        text = doc.text
        raw: list[tuple[int, int, bool, bool, int | None]] = []
        for block in doc.blocks:
            spans = [(block.start, block.end)] if block.heading else _sentence_spans(text, block.start, block.end)
            for i, (s, e) in enumerate(spans):
                raw.append((s, e, i == 0, block.heading, block.page))
        encodings = self.tok.encode_batch([text[s:e] for s, e, *_ in raw], add_special_tokens=False)
        units: list[_Unit] = []
        for (s, e, first, heading, page), enc in zip(raw, encodings):
            n = len(enc.ids)
            if n <= budget:
                units.append(_Unit(s, e, n, first, heading, page))
                continue
            # A sentence longer than a whole chunk: cut it between words, where WordPiece counts
            # are exact (a piece starting mid-word would re-tokenise differently). A single word
            # longer than the budget (a hash, a base64 blob) is cut with a margin instead.
            words = enc.word_ids
            w = 0
            while w < n:
                end = min(w + budget, n)
                if end < n:
                    b = end
                    while b > w + 1 and words[b] is not None and words[b] == words[b - 1]:
                        b -= 1
                    exact = b > w + 1
                    end = b if exact else min(w + budget // 2, n)
                else:
                    exact = True
                piece = enc.offsets[w:end]
                starts_mid_word = w > 0 and words[w] is not None and words[w] == words[w - 1]
                units.append(_Unit(s + piece[0][0], s + piece[-1][1], end - w, first and w == 0, heading, page,
                                   exact and not starts_mid_word))
                w = end
        return units

    def split(self, doc: ParsedDocument) -> list[Chunk]:
        title, title_tokens = self._title(doc.title)
        budget = self.chunk_tokens - title_tokens
        if budget < 16:
            raise ValueError(f"chunk_tokens={self.chunk_tokens} leaves no room after a {title_tokens}-token title")
        groups: list[list[_Unit]] = []
        current: list[_Unit] = []
        size = 0

        def emit(keep_from: int | None = None) -> None:
            nonlocal current, size
            if keep_from is None:
                groups.append(current)
                current, size = [], 0
                return
            groups.append(current[:keep_from])
            current = current[keep_from:]
            size = sum(u.tokens for u in current)

        def overlap_tail(prev: list[_Unit]) -> list[_Unit]:
            tail, total = [], 0
            for u in reversed(prev):
                if u.heading or total + u.tokens > self.overlap_tokens:
                    break
                tail.insert(0, u)
                total += u.tokens
            return tail

        for unit in self._units(doc, budget):
            if unit.heading and any(not u.heading for u in current) and size >= budget * self.section_min:
                emit()  # section boundary: no overlap across it
            if current and size + unit.tokens > budget:
                # Prefer breaking at the last paragraph start in the back half of the chunk.
                cut = next(
                    (
                        j
                        for j in range(len(current) - 1, 0, -1)
                        if current[j].block_start and sum(u.tokens for u in current[:j]) >= budget * self.paragraph_min
                    ),
                    None,
                )
                prev = current[:cut] if cut else current
                emit(cut)
                tail = overlap_tail(prev)
                while tail and sum(u.tokens for u in tail) + size + unit.tokens > budget:
                    tail.pop(0)
                current = tail + current
                size = sum(u.tokens for u in current)
                # Carried-over units may still not leave room for this one.
                while current and size + unit.tokens > budget:
                    emit()
            current.append(unit)
            size += unit.tokens
        if current:
            groups.append(current)

        chunks = []
        for group in groups:
            if all(u.heading for u in group) and chunks:
                continue  # a trailing heading with no body adds nothing searchable
            start, end = group[0].start, group[-1].end
            pages = [u.page for u in group if u.page is not None]
            known = title_tokens + sum(u.tokens for u in group)
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=doc.text[start:end],
                    title=title,
                    start_char=start,
                    end_char=end,
                    page_start=min(pages) if pages else None,
                    page_end=max(pages) if pages else None,
                    token_count=known if self._additive and all(u.exact for u in group) else -1,
                )
            )
        # Exact counts of what will be embedded; anything over the limit (a mid-word cut that
        # re-tokenised longer) is halved until it fits, so the model never truncates.
        unknown = [c for c in chunks if c.token_count < 0]
        for chunk, n in zip(unknown, self.count([c.embed_text for c in unknown])):
            chunk.token_count = n
        fitted: list[Chunk] = []
        for chunk in chunks:
            fitted.extend(self._fit(doc, chunk, chunk.token_count))
        for i, chunk in enumerate(fitted):
            chunk.index = i
        return fitted

    def _fit(self, doc: ParsedDocument, chunk: Chunk, n: int) -> list[Chunk]:
        if n <= self.chunk_tokens or chunk.end_char - chunk.start_char < 2:
            chunk.token_count = n
            return [chunk]
        mid = (chunk.start_char + chunk.end_char) // 2
        space = doc.text.rfind(" ", chunk.start_char + 1, mid + 1)
        mid = space if space > chunk.start_char else mid
        halves = []
        for s, e in ((chunk.start_char, mid), (mid, chunk.end_char)):
            while s < e and doc.text[s].isspace():
                s += 1
            if e > s:
                halves.append(Chunk(0, doc.text[s:e], chunk.title, s, e, chunk.page_start, chunk.page_end, 0))
        counts = self.count([h.embed_text for h in halves])
        return [piece for h, c in zip(halves, counts) for piece in self._fit(doc, h, c)]
