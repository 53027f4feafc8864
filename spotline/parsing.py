"""Turn stored bytes into text with structure (headings, paragraphs, pages).

Every way a file can be unusable raises ``SetAside`` with a short machine-readable reason and a
human detail; the pipeline records it and moves on, so one bad file never fails a batch.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from bs4 import BeautifulSoup

SUPPORTED = {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".json", ".jsonl", ".pdf"}


class SetAside(Exception):
    """A document that cannot be ingested as it is. ``reason`` is one of a small fixed set."""

    REASONS = ("unsupported-format", "empty", "binary", "undecodable", "corrupt", "needs-ocr", "too-large", "encrypted")

    def __init__(self, reason: str, detail: str):
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class Block:
    """A span of ``ParsedDocument.text``: a paragraph or a heading."""

    start: int
    end: int
    heading: bool = False
    page: int | None = None


@dataclass
class ParsedDocument:
    text: str
    title: str
    format: str
    blocks: list[Block] = field(default_factory=list)
    pages: int | None = None


class _Builder:
    """Accumulates blocks into one text with exact offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.blocks: list[Block] = []
        self.length = 0

    def add(self, text: str, heading: bool = False, page: int | None = None) -> None:
        text = text.strip()
        if not text:
            return
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        self.blocks.append(Block(self.length, self.length + len(text), heading, page))
        self.parts.append(text)
        self.length += len(text)

    def build(self, title: str, fmt: str, pages: int | None = None) -> ParsedDocument:
        text = "".join(self.parts)
        if not text.strip():
            raise SetAside("empty", "no text content")
        return ParsedDocument(text=text, title=title.strip() or "untitled", format=fmt, blocks=self.blocks, pages=pages)


def _decode(data: bytes) -> str:
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SetAside("binary", "contains NUL bytes; not a text file")
    for bom, enc in ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if data.startswith(bom):
            try:
                return data.decode(enc)
            except UnicodeDecodeError as exc:
                raise SetAside("undecodable", f"invalid {enc}: {exc.reason} at byte {exc.start}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Guessing a legacy code page silently corrupts text; set it aside for a human to re-encode.
        raise SetAside("undecodable", f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def _paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if p.strip()]


def _stem_title(key: str) -> str:
    return PurePosixPath(key).stem.replace("-", " ").replace("_", " ").strip().capitalize()


_MD_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


def parse_markdown(text: str, key: str) -> ParsedDocument:
    b = _Builder()
    title = ""
    for para in _paragraphs(text):
        lines = para.strip("\n").split("\n")
        # A heading line can sit directly above its paragraph: split it off.
        while lines and _MD_HEADING.match(lines[0].strip()):
            heading = _MD_HEADING.match(lines[0].strip())
            if not title and len(heading.group(1)) == 1:
                title = heading.group(2)
            b.add(lines.pop(0), heading=True)
        if lines:
            b.add("\n".join(lines))
    return b.build(title or _stem_title(key), "md")


def parse_text(text: str, key: str) -> ParsedDocument:
    b = _Builder()
    paras = _paragraphs(text)
    first = paras[0].strip() if paras else ""
    title = first if first and "\n" not in first and len(first) <= 120 else _stem_title(key)
    for i, para in enumerate(paras):
        b.add(para, heading=(i == 0 and para.strip() == title))
    return b.build(title, "txt")


_HTML_BLOCKS = ["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "blockquote", "td", "th", "dt", "dd"]


def parse_html(text: str, key: str) -> ParsedDocument:
    soup = BeautifulSoup(text, "html.parser")
    for tag in soup(["script", "style", "noscript", "nav", "header", "footer", "template", "svg", "form"]):
        tag.decompose()
    b = _Builder()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    root = soup.body or soup
    for el in root.find_all(_HTML_BLOCKS):
        if el.find_parent(_HTML_BLOCKS):  # nested block: its parent already carries the text
            continue
        content = re.sub(r"[ \t\r\f\v]+", " ", el.get_text(" ", strip=True))
        heading = el.name[0] == "h" and el.name[1:].isdigit()
        if heading and not title:
            title = content
        b.add(content, heading=heading)
    if not b.parts:  # no block elements at all: fall back to the visible text
        for para in _paragraphs(root.get_text("\n")):
            b.add(para)
    return b.build(title or _stem_title(key), "html")


_JSON_TITLE_KEYS = ("title", "name", "question", "subject", "heading")
_JSON_BODY_KEYS = ("body", "content", "text", "answer", "description", "markdown", "summary")


def _json_record(b: _Builder, obj: object) -> str:
    """Add one JSON record; return its title if it has one."""
    if isinstance(obj, dict):
        title = next((str(obj[k]) for k in _JSON_TITLE_KEYS if isinstance(obj.get(k), str)), "")
        bodies = [obj[k] for k in _JSON_BODY_KEYS if isinstance(obj.get(k), str)]
        if title or bodies:
            if title:
                b.add(title, heading=True)
            for body in bodies:
                for para in _paragraphs(body):
                    b.add(para)
            return title
        for k, v in obj.items():  # generic object: keep its string leaves with their keys
            if isinstance(v, (dict, list)):
                _json_record(b, v)
            elif isinstance(v, str):
                b.add(f"{k}: {v}")
        return ""
    if isinstance(obj, list):
        titles = [_json_record(b, item) for item in obj]
        return next((t for t in titles if t), "")
    if isinstance(obj, str):
        b.add(obj)
    return ""


def parse_json(text: str, key: str) -> ParsedDocument:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SetAside("corrupt", f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    b = _Builder()
    title = _json_record(b, obj)
    return b.build(title or _stem_title(key), "json")


def parse_jsonl(text: str, key: str) -> ParsedDocument:
    b = _Builder()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SetAside("corrupt", f"invalid JSON on line {lineno}: {exc.msg}") from None
        _json_record(b, obj)
    return b.build(_stem_title(key), "jsonl")


def parse_pdf(data: bytes, key: str) -> ParsedDocument:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings on damaged files are our set-aside reason
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            try:
                if not reader.decrypt(""):
                    raise SetAside("encrypted", "PDF is password-protected")
            except SetAside:
                raise
            except Exception:
                raise SetAside("encrypted", "PDF is encrypted and cannot be opened") from None
        pages = list(reader.pages)
        b = _Builder()
        for number, page in enumerate(pages, 1):
            for para in _paragraphs(page.extract_text() or ""):
                b.add(re.sub(r"[ \t]+", " ", para), page=number)
        meta_title = (reader.metadata.title if reader.metadata else None) or ""
    except SetAside:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise SetAside("corrupt", f"unreadable PDF ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not pages:
        raise SetAside("corrupt", "PDF has no pages")
    if not b.parts:
        raise SetAside("needs-ocr", f"PDF has {len(pages)} page(s) but no text layer; it needs OCR")
    first = b.parts[0].split("\n")[0]
    return b.build(str(meta_title) or (first if len(first) <= 120 else _stem_title(key)), "pdf", pages=len(pages))


def parse_document(key: str, data: bytes, max_bytes: int = 50 * 1024 * 1024) -> ParsedDocument:
    """Parse by extension. Raises SetAside for anything that cannot be ingested."""
    ext = PurePosixPath(key).suffix.lower()
    if ext not in SUPPORTED:
        raise SetAside("unsupported-format", f"extension {ext or '(none)'!r} is not one of {sorted(SUPPORTED)}")
    if len(data) == 0:
        raise SetAside("empty", "0 bytes")
    if len(data) > max_bytes:
        raise SetAside("too-large", f"{len(data)} bytes exceeds the {max_bytes}-byte limit")
    if ext == ".pdf":
        if not data.lstrip()[:5].startswith(b"%PDF"):
            raise SetAside("corrupt", "missing %PDF header")
        return parse_pdf(data, key)
    text = _decode(data)
    if not text.strip():
        raise SetAside("empty", "only whitespace")
    if ext in (".md", ".markdown"):
        return parse_markdown(text, key)
    if ext in (".html", ".htm"):
        return parse_html(text, key)
    if ext == ".json":
        return parse_json(text, key)
    if ext == ".jsonl":
        return parse_jsonl(text, key)
    return parse_text(text, key)
