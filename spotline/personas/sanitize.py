"""Sanitization before any model sees production data: pseudonyms, recognizers, known values, leak scan.

Raw users and logs never reach a model. Three layers, each catching what the others cannot:

1. **Keyed pseudonyms** for direct identifiers (user ids, account ids, session and message ids):
   HMAC-SHA256 under a key from the secrets store. The same value gets the same pseudonym in every
   row, run and process, and nothing reversible is stored: without the key a pseudonym cannot be
   turned back, or even checked against a guess.
2. **Pattern and checksum recognizers** from Presidio on free text: e-mail (including
   ``john [at] example dot com``), phone numbers of the export's regions, credit cards (Luhn),
   IBANs (mod 97), IPs, US SSNs, URLs carrying credentials or tokens, API keys, account ids.
   Fully offline: the recognizers are called directly, so Presidio's default engine (which loads
   a spaCy model, downloading it if absent) is never built, and the e-mail check uses
   tldextract's bundled suffix list instead of fetching one.
3. **Known-value redaction**: every PII value of the snapshot's users table (names, e-mails,
   phones, street addresses, account ids, IBANs, IPs, and any column not declared safe) is
   removed from all logs, whatever its case, spacing or punctuation. Text and values are folded
   to lower-case letters and digits (accents dropped), and one Aho-Corasick automaton finds all
   of them in a single pass, however many there are (bench: a million values). No NER model can
   be installed here: this is how names and addresses of users are caught. A name nobody has a
   record of (a third party's) is not caught by any layer: see the README.

After scrubbing, and again after generation, the **leak scan** searches everything that will be
sent or published for every identifying value of the snapshot, plus every value the recognizers
found in the raw logs. One hit fails the run: fail closed. A hit names the row and field, never
the value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Iterator

import ahocorasick

from spotline.errors import PermanentError

# Entity types (the generator, the evaluation and the placeholders share them).
PERSON, EMAIL, PHONE, LOCATION = "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "LOCATION"
CARD, IBAN, IP, ACCOUNT, SSN, SECRET_URL, API_KEY = (
    "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "ACCOUNT_ID", "US_SSN", "URL_WITH_SECRET", "API_KEY")
OTHER = "PII"  # a value of an undeclared column: its type is not known, only that it is not safe


class LeakFound(PermanentError):
    """A known PII value is in text bound for a model or a dataset: nothing is sent or published."""

    def __init__(self, stage: str, hits: list["LeakHit"]):
        self.stage, self.hits = stage, hits
        where = ", ".join(f"{h.row}.{h.field} ({h.entity})" for h in hits[:10])
        more = f" and {len(hits) - 10} more" if len(hits) > 10 else ""
        super().__init__(f"leak scan {stage}: {len(hits)} known PII value(s) found in {where}{more}")


# ---------------------------------------------------------------------------------------------
# Folding: the form a value and a text are compared in.
# ---------------------------------------------------------------------------------------------

_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """The letters and digits one character stands for: 'É' -> 'e', 'ß' -> 'ss', '-' -> ''."""
    out = []
    for c in unicodedata.normalize("NFKD", ch):
        if unicodedata.combining(c):
            continue
        for f in c.casefold():
            if f.isalnum():
                out.append(f)
    return "".join(out)


def fold(text: str) -> tuple[str, list[int]]:
    """Lower-case letters and digits only, and for each folded character the index it came from."""
    if text.isascii():
        low = text.lower()
        offsets = [i for i, c in enumerate(low) if c.isalnum()]
        return "".join([low[i] for i in offsets]), offsets
    chars: list[str] = []
    offsets = []
    for i, ch in enumerate(text):
        f = _fold_char(ch) if not ch.isascii() else (ch.lower() if ch.isalnum() else "")
        for c in f:
            chars.append(c)
            offsets.append(i)
    return "".join(chars), offsets


def folded(text: str) -> str:
    return fold(text)[0]


# ---------------------------------------------------------------------------------------------
# Pseudonyms
# ---------------------------------------------------------------------------------------------

class Pseudonymizer:
    """HMAC-SHA256 pseudonyms: stable for a key, irreversible and unguessable without it."""

    def __init__(self, key: str | bytes):
        key = key.encode() if isinstance(key, str) else key
        if len(key) < 16:
            raise PermanentError("the pseudonym key must be at least 16 bytes (set it in the secrets store)")
        self._key = key

    def __call__(self, kind: str, value: Any) -> str | None:
        if value is None or (isinstance(value, float) and value != value):
            return None
        normal = " ".join(str(value).split()).casefold()  # the same id typed twice gets one pseudonym
        digest = hmac.new(self._key, f"{kind}\x00{normal}".encode(), hashlib.sha256).hexdigest()
        return f"{kind[:3]}_{digest[:16]}"


# ---------------------------------------------------------------------------------------------
# Known values
# ---------------------------------------------------------------------------------------------

# A name that is also an English function word (Will, May, Don) is redacted alone only when written
# like a name: in lower case it cannot be told from the word, and redacting every "will" and "may"
# would wreck the text the personas are made from. Other word-names (Bill, Mark, June, Grace) are
# redacted in any case: "the <PERSON> for November" costs a word, a missed name leaks.
# A full name ("will turner") is matched in any case.
def _common_words() -> frozenset[str]:
    from spacy.lang.en.stop_words import STOP_WORDS  # a word list shipped in spaCy: no model, no download

    return frozenset(STOP_WORDS)


_STREET_ABBREVIATIONS = [("street", "st"), ("road", "rd"), ("avenue", "ave"), ("boulevard", "blvd"),
                         ("drive", "dr"), ("lane", "ln"), ("straße", "str"), ("strasse", "str")]


@dataclass
class Entry:
    entity: str
    identifying: bool  # on its own it points at a person: the leak scan searches for it
    title_only: bool = False  # a single name that is also a common word


class KnownValues:
    """Every PII value of a snapshot, found in any text by one Aho-Corasick pass over folded text."""

    MIN_FOLDED = 3  # shorter folded values ("al", "li") would hit inside ordinary words' boundaries

    def __init__(self) -> None:
        self._automaton = ahocorasick.Automaton()
        self._entries: dict[str, Entry] = {}
        self._built = False
        self._common = _common_words()

    def __len__(self) -> int:
        return len(self._entries)

    def _add(self, key: str, entry: Entry) -> None:
        if len(key) < self.MIN_FOLDED:
            return
        old = self._entries.get(key)
        if old is not None:  # the stronger claim wins: identifying over not, any case over title-only
            entry = Entry(old.entity if old.identifying >= entry.identifying else entry.entity,
                          old.identifying or entry.identifying, old.title_only and entry.title_only)
        self._entries[key] = entry
        self._built = False

    def add(self, entity: str, value: Any) -> None:
        """One value of the users table, with the variants people type for its kind."""
        if value is None or (isinstance(value, float) and value != value):
            return
        text = str(value).strip()
        if not text:
            return
        for variant, identifying, title_only in self._variants(entity, text):
            self._add(variant, Entry(entity, identifying, title_only))

    def add_found(self, entity: str, value: str) -> None:
        """A value the recognizers found in the raw logs: the leak scan looks for it too."""
        self._add(folded(value), Entry(entity, True))

    def _variants(self, entity: str, text: str) -> Iterator[tuple[str, bool, bool]]:
        yield folded(text), True, False
        if entity == PERSON:
            yield folded(text.translate(_GERMAN)), True, False
            for part in re.split(r"[\s\-]+", text):
                f = folded(part)
                if f:
                    # One name alone is redacted but does not identify: the leak scan skips it, or a
                    # persona the model names "Anna" would fail the run for a user called Anna Weber.
                    yield f, False, f in self._common
                    yield folded(part.translate(_GERMAN)), False, f in self._common
        elif entity == EMAIL and "@" in text:
            local, _, domain = text.partition("@")
            parts = [folded(p) for p in domain.split(".")]
            for at in ("", "at"):
                for dot in ("", "dot"):
                    yield folded(local) + at + dot.join(parts), True, False
        elif entity == PHONE:
            yield from ((v, True, False) for v in _phone_variants(text))
        elif entity == LOCATION:
            low = text.lower()
            for long, short in _STREET_ABBREVIATIONS:
                if long in low:
                    yield folded(low.replace(long, short)), True, False

    def build(self) -> None:
        if self._built:
            return
        self._automaton = ahocorasick.Automaton()
        for key, entry in self._entries.items():
            self._automaton.add_word(key, (len(key), entry))
        if self._entries:
            self._automaton.make_automaton()
        self._built = True

    def find(self, text: str, identifying_only: bool = False) -> list[tuple[int, int, str]]:
        """(start, end, entity) of every known value in `text`, on word boundaries, in original offsets."""
        if not self._entries or not text:
            return []
        self.build()
        low, offsets = fold(text)
        found = []
        for end_f, (length, entry) in self._automaton.iter(low):
            if identifying_only and not entry.identifying:
                continue
            start = offsets[end_f - length + 1]
            end = offsets[end_f] + 1
            # Whole words only: a value must not start or end inside a longer word or number.
            if start > 0 and text[start - 1].isalnum():
                continue
            if end < len(text) and text[end].isalnum():
                continue
            if entry.title_only and not text[start].isupper():
                continue
            if start > 0 and text[start - 1] == "+" and entry.entity == PHONE:
                start -= 1  # the international prefix belongs to the number
            found.append((start, end, entry.entity))
        return found


def _phone_variants(text: str) -> set[str]:
    import phonenumbers

    digits = re.sub(r"\D", "", text)
    out = {digits}
    try:
        number = phonenumbers.parse(text if text.startswith("+") else "+" + digits, None)
        nsn = str(number.national_number)
        out |= {nsn, "0" + nsn, f"{number.country_code}{nsn}"}
    except phonenumbers.NumberParseException:
        pass
    return {d for d in out if len(d) >= 7}


# ---------------------------------------------------------------------------------------------
# Pattern recognizers (Presidio, offline)
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _offline_tld():
    import tldextract

    # No suffix-list URL and no cache folder: the list bundled in the package, never the network.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)


def pattern_recognizers(regions: Iterable[str] = ("US", "GB", "DE", "FR", "ES")) -> list[Any]:
    """Presidio's pattern and checksum recognizers, plus Spotline's own, all offline."""
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    class OfflineEmailRecognizer(EmailRecognizer):
        """Presidio's e-mail recognizer, its domain checked against the bundled suffix list."""

        def validate_result(self, pattern_text: str):  # noqa: D102
            return _offline_tld()(pattern_text).fqdn != ""

    class ObfuscatedEmailRecognizer(PatternRecognizer):
        """``john [at] example dot com``, ``john(at)example.com``: valid when it spells a real domain."""

        def validate_result(self, pattern_text: str):  # noqa: D102
            spelled = re.sub(r"(?i)\s*(?:\[at\]|\(at\)|\{at\}|\s+at\s+)\s*", "@", pattern_text, count=1)
            spelled = re.sub(r"(?i)\s*(?:\[dot\]|\(dot\)|\s+dot\s+)\s*", ".", spelled)
            return _offline_tld()(spelled.rpartition("@")[2]).suffix != ""

    obfuscated_email = ObfuscatedEmailRecognizer(
        supported_entity=EMAIL, name="ObfuscatedEmailRecognizer",
        patterns=[
            # john(at)example.com, john [at] example dot com
            Pattern("bracketed at", r"(?i)\b[\w.+\-]+\s*(?:\[at\]|\(at\)|\{at\})\s*[\w\-]+"
                    r"(?:(?:\.|\s*\[dot\]\s*|\s*\(dot\)\s*|\s+dot\s+)[\w\-]+)+\b", 0.6),
            # john at example dot com: a bare "at" only with a spelled-out "dot", or "look at x.com" would match
            Pattern("spelled out", r"(?i)\b[\w.+\-]+\s+at\s+[\w\-]+(?:\s*(?:\s+dot\s+|\[dot\]|\(dot\))\s*[\w\-]+)+\b",
                    0.6),
        ],
        context=["email", "mail", "reach", "cc"],
    )
    secret_url = PatternRecognizer(
        supported_entity=SECRET_URL, name="UrlWithSecretRecognizer",
        patterns=[
            Pattern("credentials in URL", r"\b[a-z][a-z0-9+.\-]*://[^\s/:@]+:[^\s/@]+@[^\s]+", 0.8),
            Pattern("token parameter", r"\bhttps?://[^\s?#]+\?[^\s#]*?\b(?:token|access_token|api_key|apikey|key|"
                    r"secret|sig|signature|password|auth|code)=[^\s&#]+[^\s]*", 0.8),
        ],
    )
    api_key = PatternRecognizer(
        supported_entity=API_KEY, name="LarkspurApiKeyRecognizer",
        patterns=[Pattern("Larkspur API key", r"\blk_(?:live|test)_[A-Za-z0-9]{16,}\b", 0.9)],
    )
    account = PatternRecognizer(
        supported_entity=ACCOUNT, name="LarkspurAccountIdRecognizer",
        patterns=[Pattern("Larkspur account id", r"(?i)\bLK-?\d{8}\b", 0.8)],
    )
    return [OfflineEmailRecognizer(), obfuscated_email, PhoneRecognizer(supported_regions=tuple(regions)),
            CreditCardRecognizer(), IbanRecognizer(), IpRecognizer(), UsSsnRecognizer(), secret_url, api_key,
            account]


# Cheap tests that say a recognizer cannot match: most chat lines carry no digits, no '@' and no
# URL, and skipping the recognizers on them is most of the sanitizer's speed (bench/persona_bench.py).
_DIGIT_RUN = re.compile(r"\d[\d\s().\-/]{4,}\d")
_PHONE_RUN = re.compile(r"[+(]?\d[\d\s().\-/]{4,}\d\)?")
_WORDY_EMAIL = re.compile(r"(?i)\[at\]|\(at\)|\{at\}|\sat\s.*(?:\.|\sdot\s|\[dot\]|\(dot\))")


def _needs(name: str, text: str) -> bool:
    if name == "OfflineEmailRecognizer":
        return "@" in text
    if name == "ObfuscatedEmailRecognizer":
        return _WORDY_EMAIL.search(text) is not None
    if name in ("PhoneRecognizer", "CreditCardRecognizer", "UsSsnRecognizer", "LarkspurAccountIdRecognizer",
                "IbanRecognizer"):
        return _DIGIT_RUN.search(text) is not None
    if name == "IpRecognizer":
        return ("." in text or ":" in text) and any(c.isdigit() for c in text)
    if name == "UrlWithSecretRecognizer":
        return "://" in text
    if name == "LarkspurApiKeyRecognizer":
        return "lk_" in text
    return True


# ---------------------------------------------------------------------------------------------
# The sanitizer
# ---------------------------------------------------------------------------------------------

@dataclass
class Span:
    start: int
    end: int
    entity: str
    source: str  # known | pattern


@dataclass
class SanitizerStats:
    texts: int = 0
    texts_changed: int = 0
    by_entity: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)

    def add(self, spans: list[Span]) -> None:
        self.texts += 1
        if spans:
            self.texts_changed += 1
        for s in spans:
            self.by_entity[s.entity] = self.by_entity.get(s.entity, 0) + 1
            self.by_source[s.source] = self.by_source.get(s.source, 0) + 1


def _merge(spans: list[Span]) -> list[Span]:
    """Overlapping spans become one, named after the longest of them."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: (s.start, -(s.end - s.start))):
        if out and s.start < out[-1].end:
            last = out[-1]
            if s.end > last.end:
                longer = s if (s.end - s.start) > (last.end - last.start) else last
                out[-1] = Span(last.start, s.end, longer.entity, longer.source)
            continue
        out.append(s)
    return out


class Sanitizer:
    """Scrubs free text: known values and recognizer hits become ``<ENTITY>`` placeholders."""

    def __init__(self, known: KnownValues, recognizers: list[Any] | None = None, min_score: float = 0.0):
        self.known = known
        self.recognizers = recognizers if recognizers is not None else pattern_recognizers()
        self.min_score = min_score
        self.stats = SanitizerStats()
        # Values the recognizers found: the leak scan searches published text for them as well.
        self.found = KnownValues()

    def spans(self, text: str) -> list[Span]:
        spans = [Span(s, e, ent, "known") for s, e, ent in self.known.find(text)]
        for rec in self.recognizers:
            if not _needs(rec.name, text):
                continue
            for start, r in self._analyze(rec, text):
                if r.score > self.min_score:  # Presidio already drops failed checksums (score 0)
                    spans.append(Span(start + r.start, start + r.end, r.entity_type, "pattern"))
        return _merge(spans)

    @staticmethod
    def _analyze(rec: Any, text: str) -> Iterator[tuple[int, Any]]:
        """(offset, result) pairs. The phone recognizer (phonenumbers' matcher, once per region) is
        most of the cost: it runs on windows around digit runs instead of the whole line, which
        finds the same numbers (context words play no part here) in a fraction of the time."""
        if rec.name != "PhoneRecognizer":
            for r in rec.analyze(text, rec.supported_entities, None):
                yield 0, r
            return
        for m in _PHONE_RUN.finditer(text):
            start, end = max(0, m.start() - 2), min(len(text), m.end() + 2)
            for r in rec.analyze(text[start:end], rec.supported_entities, None):
                yield start, r

    def scrub(self, text: Any) -> tuple[Any, list[Span]]:
        if not isinstance(text, str) or not text:
            return text, []
        spans = self.spans(text)
        self.stats.add(spans)
        if not spans:
            return text, spans
        out, at = [], 0
        for s in spans:
            if s.source == "pattern":
                self.found.add_found(s.entity, text[s.start:s.end])
            out.append(text[at:s.start])
            out.append(f"<{s.entity}>")
            at = s.end
        out.append(text[at:])
        return "".join(out), spans


@dataclass(frozen=True)
class LeakHit:
    row: str
    field: str
    entity: str


class LeakScanner:
    """Searches text bound for a model or a dataset for every identifying known value."""

    def __init__(self, *sources: KnownValues):
        self.sources = sources

    def scan(self, records: Iterable[tuple[str, str, Any]]) -> list[LeakHit]:
        """`records`: (row, field, text); returns one hit per (row, field, entity), never the value."""
        hits: dict[LeakHit, None] = {}
        for row, fld, text in records:
            if not isinstance(text, str) or not text:
                continue
            for source in self.sources:
                for _, _, entity in source.find(text, identifying_only=True):
                    hits[LeakHit(str(row), fld, entity)] = None
        return list(hits)

    def check(self, stage: str, records: Iterable[tuple[str, str, Any]]) -> None:
        hits = self.scan(records)
        if hits:
            raise LeakFound(stage, hits)


# ---------------------------------------------------------------------------------------------
# A whole snapshot
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ColumnPolicy:
    """What may leave the users and logs tables, and as what. Anything not named is PII: dropped,
    and (users) its values are redacted from every log: a new column in the export fails closed."""

    user_pass: tuple[str, ...] = ("plan", "role", "locale", "country")
    log_pass: tuple[str, ...] = ("role", "topic", "channel")
    pseudonymized: tuple[str, ...] = ("user_id", "account_id", "message_id", "session_id")
    quasi: tuple[str, ...] = ("city", "postcode", "signup_date")  # dropped; too common to redact everywhere
    entities: tuple[tuple[str, str], ...] = (
        ("full_name", PERSON), ("first_name", PERSON), ("last_name", PERSON), ("name", PERSON),
        ("email", EMAIL), ("phone", PHONE), ("street", LOCATION), ("address", LOCATION),
        ("account_id", ACCOUNT), ("iban", IBAN), ("last_ip", IP), ("ip", IP),
    )

    def entity_of(self, column: str) -> str:
        return dict(self.entities).get(column, OTHER)


@dataclass
class Snapshot:
    """A sanitized export: nothing in it may identify anyone; what a model may see is built from it."""

    users: Any  # DataFrame: user (pseudonym) + pass columns
    logs: Any  # DataFrame: message, session, user (pseudonyms), ts, pass columns, text (scrubbed)
    stats: SanitizerStats
    scanner: LeakScanner
    known_values: int
    found_values: int


def known_values_of(users: Any, policy: ColumnPolicy) -> KnownValues:
    """Every value of every column of the users table that is not declared safe to pass."""
    known = KnownValues()
    safe = set(policy.user_pass) | set(policy.quasi) | {"user_id"}
    for column in users.columns:
        if column in safe or column.startswith("_"):
            continue
        entity = policy.entity_of(column)
        for value in users[column].dropna().unique():
            known.add(entity, value)
    known.build()
    return known


def sanitize_snapshot(users: Any, logs: Any, policy: ColumnPolicy, pseudonym: Pseudonymizer,
                      regions: Iterable[str] = ("US", "GB", "DE", "FR", "ES")) -> Snapshot:
    """Pseudonymize ids, keep only safe columns, scrub every log text; then leak-scan the result."""
    known = known_values_of(users, policy)
    sanitizer = Sanitizer(known, pattern_recognizers(regions))
    out_users = users[[c for c in users.columns if c in policy.user_pass]].copy()
    out_users.insert(0, "user", [pseudonym("user_id", v) for v in users["user_id"]])
    out_logs = logs[[c for c in logs.columns if c in policy.log_pass]].copy()
    for column, name in (("message_id", "message"), ("session_id", "session"), ("user_id", "user")):
        if column in logs.columns:
            out_logs.insert(0, name, [pseudonym(column, v) for v in logs[column]])
    out_logs["ts"] = logs["ts"]  # same index: aligned
    out_logs["text"] = [sanitizer.scrub(t)[0] for t in logs["text"]]
    scanner = LeakScanner(known, sanitizer.found)
    scanner.check("after scrubbing", _records(out_users, out_logs))
    return Snapshot(out_users.reset_index(drop=True), out_logs.reset_index(drop=True), sanitizer.stats, scanner,
                    len(known), len(sanitizer.found))


def _records(users: Any, logs: Any) -> Iterator[tuple[str, str, Any]]:
    for frame, key in ((users, "user"), (logs, "message" if "message" in logs.columns else "user")):
        for column in frame.columns:
            if column in ("ts",):
                continue
            for row, value in zip(frame[key], frame[column]):
                yield str(row), column, value
