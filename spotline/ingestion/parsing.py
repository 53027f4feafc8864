"""Turn stored bytes into text with structure (headings, paragraphs, pages).

Every way a file can be unusable raises ``SetAside`` with a short machine-readable reason and a
human detail; the pipeline records it and moves on, so one bad file never fails a batch.
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from bs4 import BeautifulSoup
from charset_normalizer import from_bytes
from charset_normalizer.utils import any_specified_encoding

from spotline.errors import PermanentError, brief

SUPPORTED = {".md", ".markdown", ".txt", ".text", ".html", ".htm", ".json", ".jsonl", ".pdf"}


class SetAside(PermanentError):
    """A document that cannot be ingested as it is. ``reason`` is one of a small fixed set."""

    REASONS = (
        "unsupported-format", "empty", "binary", "undecodable", "corrupt", "needs-ocr", "too-large", "encrypted",
        "unsafe-link", "not-a-file",
    )

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
    encoding: str | None = None  # codec the bytes were decoded with ("utf-8", "cp1252", ...); None for PDFs


class _Builder:
    """Accumulates blocks into one text with exact offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.blocks: list[Block] = []
        self.length = 0

    def add(self, text: str, heading: bool = False, page: int | None = None) -> None:
        # Decoding already stripped control characters, but a parser can bring them back (JSON
        # "\u0000" escapes, HTML character references, a PDF's text layer): none reaches the text.
        text = _CONTROL_CHARS.sub("", text).strip()
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
        title = _CONTROL_CHARS.sub("", title).strip()
        return ParsedDocument(text=text, title=title or "untitled", format=fmt, blocks=self.blocks, pages=pages)


# Control characters: C0 except \t \n \r \f, plus DEL. \f (a page break) counts as whitespace.
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x20), 0x7F])
# Terminal escape sequences (colour codes, OSC titles/links) go as a whole, not just their ESC byte:
# "\x1b[31mError" must become "Error", not "[31mError".
_CONTROL_CHARS = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)|[\x00-\x08\x0b\x0e-\x1f\x7f]"
)
# More control bytes than this share of the file means it is not text. Compressed or random data
# (PNG, ZIP, JPEG, gzip) is ~11% control bytes (29 of 256 values), executables and databases far
# more, UTF-16 without a BOM ~50%; real text has none, or a handful of stray NULs from a bad export.
# 1% sits an order of magnitude under the binaries and still lets a text carry one stray control
# per hundred bytes; those are stripped.
BINARY_CONTROL_RATIO = 0.01

# Legacy-encoding detection. charset-normalizer rejects a code page whose decoding has 20% or more
# "mess" (its documented default; on average, or in two of the chunks it samples): that is our
# confidence bar. Its language "coherence" is not required: it is 0 for CJK and for short texts,
# and it is a language guess, not an encoding signal; it only breaks ties (see _detect_encoding).
MAX_CHAOS = 0.2
# Detection reads at most ~1 MB (16 windows): its cost grows with the bytes it is given (~1.5 s for
# 20 MB), while the strict decode that follows it is ~50 ms.
_DETECT_SAMPLE_BYTES = 1 << 20
_DETECT_WINDOWS = 16
_NON_ASCII = re.compile(rb"[\x80-\xff]")
_ASCII_BYTES = bytes(range(0x80))
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"),
)


def _decode(data: bytes) -> tuple[str, str]:
    """Bytes to text with control characters stripped; returns the text and the encoding used."""
    encoding = next((enc for bom, enc in _BOMS if data.startswith(bom)), None)
    if encoding:  # a BOM is explicit; UTF-16/32's NULs are only judged after decoding
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise SetAside("undecodable", f"invalid {encoding}: {exc.reason} at byte {exc.start}") from None
        clean = not _count_controls(text.encode("utf-8"))  # every control character is one byte in UTF-8
    else:
        clean = not _count_controls(data)  # on raw bytes: a charset detector happily "decodes" a PNG
        try:
            text, encoding = data.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            text, encoding = _decode_legacy(data, exc)
            clean = False  # a detected encoding need not be ASCII-compatible (UTF-16 without a BOM)
    if not clean:  # the regex costs ~0.25 s on 20 MB: skipped for the usual file without a control byte
        text = _CONTROL_CHARS.sub("", text)
    return text.replace("\f", "\n"), encoding


def _count_controls(data: bytes) -> int:
    """How many control bytes ``data`` has; raises SetAside("binary") when they are too many."""
    controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
    # An escape sequence's ESC is terminal markup (a colourised log), not a sign of binary data.
    escapes = data.count(b"\x1b[") + data.count(b"\x1b]")
    if controls - escapes > BINARY_CONTROL_RATIO * len(data):
        raise SetAside("binary", f"{controls} of {len(data)} bytes are control characters; not a text file")
    return controls


def _decode_legacy(data: bytes, error: UnicodeDecodeError) -> tuple[str, str]:
    """Decode bytes that are not UTF-8 with a detected legacy code page, or set them aside."""
    where = f"not valid UTF-8 ({error.reason} at byte {error.start})"
    sample = _detection_sample(data)
    if _mostly_utf8(sample):
        # A UTF-8 file with a few bad bytes (truncated, one pasted line in another encoding): any
        # code page would turn all of its accented letters into mojibake ("cafÃ©").
        raise SetAside("undecodable", f"{where}, though most of it is UTF-8: damaged or mixed encodings")
    encoding = _detect_encoding(sample)
    if encoding is None:
        raise SetAside("undecodable", f"{where} and no legacy encoding fits it with confidence")
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as exc:  # the sample missed the part that does not fit
        raise SetAside("undecodable", f"{where}; detected {encoding}, which fails at byte {exc.start}") from None


def _detect_encoding(sample: bytes) -> str | None:
    """The encoding the file declares if the detector confirms it, else cp1252 unless the detector's
    own pick is better on both counts.

    Its own ranking gets Western European text wrong more often than right: on short articles and
    on English with a few "©", "—" or "ö" it picks a sibling code page (cp1250, cp775, cp850) or even
    Big5/Shift-JIS, turning "Ångström" into "Ĺngström". cp1252 is what unlabelled legacy text almost
    always is (it is the web's fallback encoding) and a superset of Latin-1's letters, so it is
    preferred when the detector accepts it and its own pick is not both less messy and more
    coherent as language. Cyrillic, Greek, Polish or CJK text fails the mess test as cp1252 and keeps
    the detector's pick; Czech keeps cp1250 because it is both cleaner and more coherent there.
    Fallbacks are off: a candidate that failed the mess test is never returned as a last resort.
    """
    declared = any_specified_encoding(sample)  # <meta charset=...>, <?xml encoding=...?>, -*- coding -*-
    best = from_bytes(sample, threshold=MAX_CHAOS, enable_fallback=False).best()
    if best and best.encoding == declared:
        return codecs.lookup(best.encoding).name
    western = from_bytes(sample, threshold=MAX_CHAOS, enable_fallback=False, cp_isolation=["cp1252"]).best()
    if western and not (best and best.chaos < western.chaos and best.coherence >= western.coherence):
        best = western
    return codecs.lookup(best.encoding).name if best else None


def _detection_sample(data: bytes) -> bytes:
    """What detection looks at: the whole file up to ~1 MB, else its head and a window around the
    first non-ASCII byte of each sixteenth of it (ASCII says nothing about a code page), starting
    and ending at line breaks so that no multi-byte character is cut in half."""
    if len(data) <= _DETECT_SAMPLE_BYTES:
        return data
    width = _DETECT_SAMPLE_BYTES // _DETECT_WINDOWS
    bounds = [len(data) * i // _DETECT_WINDOWS for i in range(_DETECT_WINDOWS + 1)]
    windows = [data[: data.rfind(b"\n", 0, 4096) + 1]]  # the head, where a charset declaration would be
    for start, end in zip(bounds, bounds[1:]):
        hit = _NON_ASCII.search(data, start, end)
        if hit is None:
            continue
        newline = data.find(b"\n", max(0, hit.start() - width // 2), hit.start())
        lo = newline + 1 if newline >= 0 else hit.start()
        hi = min(len(data), lo + width)
        last = data.rfind(b"\n", hit.end(), hi)
        windows.append(data[lo : last + 1 if last >= 0 and hi < len(data) else hi])
    return b"\n".join(windows)


def _mostly_utf8(sample: bytes) -> bool:
    """Whether most non-ASCII bytes form valid UTF-8 sequences. Legacy text measures 0 (Western,
    Cyrillic, Greek) to ~0.35 (CJK double-byte codes); UTF-8 with a few damaged bytes ~0.96+."""
    non_ascii = len(sample.translate(None, _ASCII_BYTES))
    in_utf8 = len(sample) - len(_UTF8_MULTIBYTE.sub(b"", sample))
    return in_utf8 > 0.5 * non_ascii


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


def _json_error(exc: json.JSONDecodeError, line: int) -> str:
    # json's own messages end in " at" and expect the position after them ("Invalid control
    # character at"): said on its own, the message reads as if it had been cut off.
    return f"invalid JSON: {exc.msg.removesuffix(' at')} at line {line}, column {exc.colno}"


def parse_json(text: str, key: str) -> ParsedDocument:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SetAside("corrupt", _json_error(exc, exc.lineno)) from None
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
            raise SetAside("corrupt", _json_error(exc, lineno)) from None
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
        raise SetAside("corrupt", f"unreadable PDF ({type(exc).__name__}: {brief(exc, 300)})") from None
    if not pages:
        raise SetAside("corrupt", "PDF has no pages")
    if not b.parts:
        raise SetAside("needs-ocr", f"PDF has {len(pages)} page(s) but no text layer; it needs OCR")
    first = b.parts[0].split("\n")[0]
    return b.build(str(meta_title) or (first if len(first) <= 120 else _stem_title(key)), "pdf", pages=len(pages))


_PARSERS = {
    ".md": parse_markdown, ".markdown": parse_markdown, ".html": parse_html, ".htm": parse_html,
    ".json": parse_json, ".jsonl": parse_jsonl,
}


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
    text, encoding = _decode(data)
    if not text.strip():
        raise SetAside("empty", "only whitespace")
    doc = _PARSERS.get(ext, parse_text)(text, key)
    doc.encoding = encoding
    return doc
