"""Realistic fake production data, with every planted PII value labelled.

The persona pipeline must prove that no personal data of the source reaches a model. That proof
needs a source whose personal data is known exactly: this generator writes a users table and the
chat logs of Larkspur (the invented expenses and invoicing product of the sample help centre) in
five locales, and returns beside them a label for every PII value it planted: entity type, table,
row, field and character span.

PII is planted where real exports have it and in the forms people really type:

* in the users table's columns (name, email, phone, street address, account id, IBAN, last IP);
* inside free text: a user's own details, colleagues they mention (other users of the table,
  often in lower case), third parties nobody has a record of, card numbers split in groups,
  ``john [at] example dot com``, spaced, dotted and bracketed phone numbers, IBANs in groups,
  API keys and URLs carrying tokens.

Some users are **canaries**: invented values with a marker no real text contains
(``canary_values()`` lists them), so a test can search every prompt a run sends for them.

Deterministic: the same arguments give byte-identical frames and labels.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pandas as pd

# Entity types, shared with the sanitizer and its evaluation.
PERSON, EMAIL, PHONE, LOCATION = "PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "LOCATION"
CARD, IBAN, IP, ACCOUNT, SSN, SECRET_URL, API_KEY = (
    "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "ACCOUNT_ID", "US_SSN", "URL_WITH_SECRET", "API_KEY")
STRUCTURED = (EMAIL, PHONE, CARD, IBAN, IP, ACCOUNT, SSN, SECRET_URL, API_KEY)

_LOCALES: dict[str, dict[str, Any]] = {
    "en_US": {
        "first": ["James", "Mary", "Robert", "Patricia", "Michael", "Jennifer", "David", "Linda", "Daniel",
                  "Jessica", "Kevin", "Ashley", "Brian", "Amanda", "Jason", "Megan", "Tyler", "Brittany", "Mark",
                  "Bill", "June"],
        "last": ["Johnson", "Williams", "Brown", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
                 "Anderson", "Thompson", "Ramirez", "Robinson", "Whitaker", "Henderson"],
        "streets": ["Maple Avenue", "Oak Street", "Sunset Boulevard", "Pine Road", "Lakeview Drive", "Elm Street"],
        "cities": [("Austin", "787{:02d}"), ("Denver", "802{:02d}"), ("Portland", "972{:02d}"), ("Columbus", "432{:02d}")],
        "country": "US", "iban": None, "phone": ("+1", "us"), "domains": ["gmail.com", "outlook.com", "yahoo.com"],
    },
    "en_GB": {
        "first": ["Oliver", "Amelia", "Harry", "Isla", "George", "Poppy", "Charlie", "Freya", "Alfie", "Imogen",
                  "Callum", "Siobhan", "Rhys", "Niamh", "Grace"],
        "last": ["Smith", "Taylor", "Evans", "Wilson", "Hughes", "Wright", "Walker", "Cartwright", "Pemberton",
                 "Fairweather", "Ashworth", "Blackwood"],
        "streets": ["Baker Street", "Station Road", "Victoria Road", "Church Lane", "Kingsway", "Mill Lane"],
        "cities": [("London", "SW1A {}AA"), ("Leeds", "LS1 {}BT"), ("Bristol", "BS1 {}QR"), ("Manchester", "M1 {}AE")],
        "country": "GB", "iban": "GB", "phone": ("+44", "gb"), "domains": ["btinternet.com", "gmail.com", "hotmail.co.uk"],
    },
    "de_DE": {
        "first": ["Lukas", "Anna", "Jonas", "Lea", "Maximilian", "Sophie", "Felix", "Johanna", "Tobias", "Katharina",
                  "Jürgen", "Bärbel", "Sören", "Dörte"],
        "last": ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Becker", "Hoffmann", "Schäfer", "Köhler",
                 "Großmann", "Zimmermann", "Krüger"],
        "streets": ["Hauptstraße", "Bahnhofstraße", "Gartenweg", "Lindenallee", "Schillerstraße", "Bergstraße"],
        "cities": [("Berlin", "101{:02d}"), ("München", "803{:02d}"), ("Hamburg", "203{:02d}"), ("Köln", "506{:02d}")],
        "country": "DE", "iban": "DE", "phone": ("+49", "de"), "domains": ["web.de", "gmx.de", "t-online.de"],
    },
    "fr_FR": {
        "first": ["Louis", "Camille", "Hugo", "Chloé", "Théo", "Manon", "Mathis", "Léa", "Clément", "Océane",
                  "Aurélien", "Solène"],
        "last": ["Martin", "Bernard", "Dubois", "Lefèvre", "Moreau", "Laurent", "Girard", "Rousseau", "Fontaine",
                 "Chevalier", "Beaumont"],
        "streets": ["rue de la Paix", "avenue Victor Hugo", "boulevard Voltaire", "rue des Lilas", "rue Pasteur"],
        "cities": [("Paris", "750{:02d}"), ("Lyon", "690{:02d}"), ("Nantes", "440{:02d}"), ("Lille", "590{:02d}")],
        "country": "FR", "iban": "FR", "phone": ("+33", "fr"), "domains": ["orange.fr", "free.fr", "laposte.net"],
    },
    "es_ES": {
        "first": ["Hugo", "Lucía", "Martín", "Sofía", "Pablo", "Valeria", "Álvaro", "Carmen", "Iker", "Nerea",
                  "Joaquín", "Begoña"],
        "last": ["García", "Fernández", "González", "Rodríguez", "López", "Martínez", "Sánchez", "Pérez",
                 "Jiménez", "Etxeberria", "Castillo"],
        "streets": ["Calle Mayor", "Gran Vía", "Calle de Alcalá", "Paseo de Gracia", "Calle Serrano"],
        "cities": [("Madrid", "280{:02d}"), ("Barcelona", "080{:02d}"), ("Valencia", "460{:02d}"), ("Sevilla", "410{:02d}")],
        "country": "ES", "iban": "ES", "phone": ("+34", "es"), "domains": ["gmail.com", "telefonica.net", "yahoo.es"],
    },
}
LOCALES = tuple(_LOCALES)
_IBAN_LENGTH = {"GB": 22, "DE": 22, "FR": 27, "ES": 24, "NL": 18}

# Canary values: invented syllables plus a marker ("qz") no language here writes, so a canary
# found anywhere a model can see is proof of a leak, never a coincidence.
_CANARY_SYLLABLES = ["vel", "kar", "thrin", "dax", "oru", "mep", "sil", "vox", "ryn", "tal", "bek", "quo", "zan"]

PLANS = ["free", "team", "business", "enterprise"]
ROLES = ["admin", "finance manager", "approver", "employee", "accountant", "bookkeeper"]

# What users ask about: the sample help centre's topics, each with the product words a real
# message would use. {pii} slots are filled by the generator and labelled.
_TOPICS: dict[str, list[str]] = {
    "billing": [
        "why was my card charged twice this month? the plan says team but i see two invoices",
        "Can I switch from monthly to annual billing and keep my seats?",
        "our payment failed and now the workspace is read-only, how do I fix it",
        "How do I get a VAT invoice for the last quarter?",
        "we want to remove 4 seats before renewal, will we get a prorated refund?",
    ],
    "expenses": [
        "the receipt scanner read 45.00 as 4500, can I correct the amount after submitting?",
        "How do I set up an approval workflow with two approvers for expenses over 500 EUR?",
        "mileage claims keep getting rejected, what rate does Larkspur use?",
        "Is there a way to bulk submit expenses from a trip?",
        "my corporate card transactions are not showing up in expenses",
    ],
    "invoicing": [
        "How can I add our logo and bank details to the invoice template?",
        "a client paid the wrong amount, should I issue a credit note?",
        "recurring invoices stopped sending on the 1st, what happened?",
        "Can invoices be issued in USD while our base currency is EUR?",
        "where do I turn on online card payments for invoices",
    ],
    "integrations": [
        "the QuickBooks sync says 'account mapping missing', what does that mean?",
        "Xero integration disconnected after we changed the admin, how do we reconnect?",
        "Can Slack notify the approver when an expense is submitted?",
        "Our NetSuite export skips cost centres, is that a known issue?",
        "zapier zap fails with a 401 since yesterday",
    ],
    "api": [
        "what is the rate limit for the expenses endpoint? we get 429s during the nightly sync",
        "How do I paginate through all invoices with the API?",
        "the webhook signature check fails for invoice.paid events",
        "Is there a Python SDK or should we call the REST API directly?",
        "the api returns 403 for the reports endpoint with our admin token",
    ],
    "account": [
        "How do I transfer workspace ownership to a colleague before I leave?",
        "SAML login loops back to the sign-in page for half of our team",
        "can I force two-factor authentication for all members?",
        "How long do you keep data after we delete the workspace?",
        "I need to change the email on my account",
    ],
    "troubleshooting": [
        "export to CSV fails with error E-4102 every time",
        "the bank feed disconnected again and transactions from last week are missing",
        "The app is very slow when opening reports with more than 2,000 expenses",
        "I keep getting error E-2201 when uploading receipts from my phone",
        "invoices show as draft even after sending, is something broken?",
    ],
}
TOPICS = tuple(_TOPICS)
# Text that looks like PII and is not: amounts, dates, versions, error codes, invoice numbers,
# help-centre links, and the common words some names are (a bill, mark as paid). Detections here
# are false positives: they are what the precision figures measure.
_DISTRACTORS = [
    "Invoice INV-2026-004512 is the one.", "It started on 2026-11-28 at 14:05.", "We are on version 4.12.3 of the app.",
    "The total was 1,249.50 EUR.", "See https://help.larkspur.example/billing/refunds for what I read.",
    "Order number 88412093.", "Error E-4102 again.", "Can I mark it as paid?", "The bill for November looks wrong.",
    "We will pay by June.", "Reference 2026/11/30-7.", "It affects 1 200 receipts.", "Our tax id is not needed here.",
    "Grace period is 14 days, right?", "Approx. 3.5 hours lost.", "Batch 17 of 40 failed.",
]
_MOODS = {"friendly": ["Hi!", "Hello,", "Thanks so much in advance.", "Cheers"],
          "neutral": ["", "Hi,", "Thanks."], "frustrated": ["This is the third time I ask.", "Honestly this is urgent.",
                                                             "Please fix this today."],
          "confused": ["Sorry if this is a silly question.", "I'm not sure where to look.", "not sure I understand"]}


@dataclass
class Label:
    """One planted PII value: where it is and what it is (the value itself, for evaluation only)."""

    table: str  # users | logs
    row: str  # user_id or message_id
    field: str
    entity: str
    start: int
    end: int
    value: str
    known: bool  # the value belongs to the users table (known-value redaction must catch it)
    canary: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FakeExport:
    users: pd.DataFrame
    logs: pd.DataFrame
    labels: list[Label] = field(default_factory=list)

    def canary_values(self) -> list[str]:
        return sorted({label.value for label in self.labels if label.canary})


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


def card_number(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "52", "53", "54", "55", "37"])
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return body + _luhn_digit(body)


def iban(rng: random.Random, country: str) -> str:
    length = _IBAN_LENGTH[country]
    if country == "GB":
        bban = "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            rng.choice(string.digits) for _ in range(14))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(length - 4))
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(digits) % 97
    return f"{country}{check:02d}{bban}"


def _phone(rng: random.Random, kind: str) -> tuple[str, str]:
    """(E.164 for the users table, the national digits people type)."""
    if kind == "us":
        area = rng.choice(["512", "303", "503", "614", "415", "206"])
        national = area + rng.choice(["555", "392", "867", "241"]) + f"{rng.randrange(10000):04d}"
        return "+1" + national, national
    if kind == "gb":
        national = "7" + "".join(rng.choice(string.digits) for _ in range(9))
        return "+44" + national, "0" + national
    if kind == "de":
        national = rng.choice(["151", "160", "172", "176"]) + "".join(rng.choice(string.digits) for _ in range(8))
        return "+49" + national, "0" + national
    if kind == "fr":
        national = rng.choice(["6", "7"]) + "".join(rng.choice(string.digits) for _ in range(8))
        return "+33" + national, "0" + national
    national = rng.choice(["6", "7"]) + "".join(rng.choice(string.digits) for _ in range(8))
    return "+34" + national, national


def _typed_phone(rng: random.Random, e164: str, national: str) -> str:
    """How a person writes a number: spaced, dotted, dashed, bracketed, international or not."""
    style = rng.randrange(6)
    n = national
    if style == 0:
        return e164
    if style == 1:  # dotted groups
        return ".".join([n[:3], n[3:6], n[6:]])
    if style == 2:  # spaced groups
        return " ".join([n[:3], n[3:6], n[6:]]) if len(n) <= 10 else " ".join([n[:4], n[4:7], n[7:]])
    if style == 3 and e164.startswith("+1"):
        return f"({n[:3]}) {n[3:6]}-{n[6:]}"
    if style == 4:  # international, spaced
        cc, rest = e164[:3] if not e164.startswith("+1") else e164[:2], e164[3:] if not e164.startswith("+1") else e164[2:]
        return f"{cc} {rest[:3]} {rest[3:6]} {rest[6:]}"
    return "-".join([n[:3], n[3:6], n[6:]])


def _typed_card(rng: random.Random, number: str) -> str:
    style = rng.randrange(3)
    if style == 0:
        return number
    sep = " " if style == 1 else "-"
    if len(number) == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i:i + 4] for i in range(0, 16, 4))


def _typed_iban(rng: random.Random, value: str) -> str:
    if rng.random() < 0.5:
        return value
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4))


def _typed_email(rng: random.Random, email: str) -> str:
    local, domain = email.split("@")
    style = rng.randrange(6)
    if style == 0:
        return f"{local} [at] {domain.replace('.', ' dot ')}"
    if style == 1:
        return f"{local} at {domain.replace('.', ' dot ')}"
    if style == 2:
        return f"{local}(at){domain}"
    if style == 3:
        return email.upper()
    return email


def _typed_name(rng: random.Random, full: str) -> str:
    first, last = full.split(" ", 1)
    style = rng.randrange(6)
    if style == 0:
        return full.lower()
    if style == 1:
        return first.lower()
    if style == 2:
        return first
    if style == 3:
        return full.upper()
    return full


def _ascii_fold(text: str) -> str:
    import unicodedata

    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _canary_word(rng: random.Random) -> str:
    return "".join(rng.choice(_CANARY_SYLLABLES) for _ in range(2)) + "qz" + rng.choice(_CANARY_SYLLABLES)


class _Builder:
    def __init__(self, seed: int, day: date):
        self.rng = random.Random(seed)
        self.day = day
        self.labels: list[Label] = []
        self.users: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    def _id(self, prefix: str, n: int = 10) -> str:
        while True:
            value = prefix + "".join(self.rng.choice("0123456789abcdef") for _ in range(n))
            if value not in self._ids:
                self._ids.add(value)
                return value

    def user(self, canary: bool) -> dict[str, Any]:
        rng = self.rng
        loc_name = rng.choice(LOCALES)
        loc = _LOCALES[loc_name]
        if canary:
            first, last = _canary_word(rng).capitalize(), _canary_word(rng).capitalize()
        else:
            first, last = rng.choice(loc["first"]), rng.choice(loc["last"])
        full = f"{first} {last}"
        local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randrange(10, 99)}",
                            f"{first}_{last}"])
        local = _ascii_fold(local).lower().replace(" ", "")
        e164, national = _phone(rng, loc["phone"][1])
        city, post = rng.choice(loc["cities"])
        postcode = post.format(rng.randrange(1, 99)) if "{:02d}" in post else post.format(rng.randrange(1, 9))
        number = rng.randrange(1, 180)
        street_name = (_canary_word(rng).capitalize() + " Street") if canary else rng.choice(loc["streets"])
        street = f"{street_name} {number}" if loc_name in ("de_DE", "es_ES") else f"{number} {street_name}"
        if loc_name == "fr_FR" and not canary:
            street = f"{number} {street_name}"
        account = f"LK-{rng.randrange(10**7, 10**8)}"
        row = {
            "user_id": self._id("usr_"),
            "account_id": account,
            "full_name": full,
            "email": f"{local}@{rng.choice(loc['domains'])}",
            "phone": e164,
            "street": street,
            "city": city,
            "postcode": postcode,
            "country": loc["country"],
            "locale": loc_name,
            "plan": rng.choice(PLANS),
            "role": rng.choice(ROLES),
            "iban": iban(rng, loc["iban"]) if loc["iban"] else None,
            "last_ip": f"{rng.randrange(11, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "signup_date": (self.day - timedelta(days=rng.randrange(30, 1500))).isoformat(),
            "_national": national,
            "_canary": canary,
            "_mood": rng.choice(list(_MOODS)),
            "_topics": rng.sample(list(TOPICS), k=2),
        }
        for col, entity in (("full_name", PERSON), ("email", EMAIL), ("phone", PHONE), ("street", LOCATION),
                            ("account_id", ACCOUNT), ("iban", IBAN), ("last_ip", IP)):
            if row[col]:
                self.labels.append(Label("users", row["user_id"], col, entity, 0, len(row[col]), row[col], True, canary))
        self.users.append(row)
        return row

    def message(self, user: dict[str, Any], turn: int, session: str, ts: datetime, others: list[dict[str, Any]]) -> None:
        """One user message: a topic question, the mood's phrasing, and 0-3 PII snippets."""
        rng = self.rng
        topic = rng.choice(user["_topics"])
        parts: list[tuple[str, Any]] = []  # (text, (entity, value, owner: the user it belongs to, or None) or None)
        opener = rng.choice(_MOODS[user["_mood"]])
        if opener:
            parts.append((opener + " ", None))
        parts.append((rng.choice(_TOPICS[topic]), None))
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3])):
            parts.extend(self._pii_snippet(user, others))
        if rng.random() < 0.35:
            parts.append((" " + rng.choice(_DISTRACTORS), None))
        closing = rng.choice(["", "", " Thanks", " - " + user["full_name"].split(" ")[0]])
        if closing.startswith(" - "):  # a signature with the first name
            parts.append((" - ", None))
            parts.append((closing[3:], (PERSON, closing[3:], user)))
        elif closing:
            parts.append((closing, None))
        text, spans = "", []
        for piece, label in parts:
            if label:
                spans.append((label, len(text), len(text) + len(piece)))
            text += piece
        message_id = self._id("msg_", 12)
        for (entity, _, owner), start, end in spans:
            self.labels.append(Label("logs", message_id, "text", entity, start, end, text[start:end],
                                     owner is not None, bool(owner and owner["_canary"])))
        self.logs.append({"message_id": message_id, "session_id": session, "user_id": user["user_id"],
                          "ts": ts.isoformat().replace("+00:00", "Z"), "role": "user", "topic": topic, "text": text})

    def _pii_snippet(self, user: dict[str, Any], others: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        rng = self.rng
        kind = rng.randrange(12)
        other = rng.choice(others) if others else user
        if kind == 0:
            typed = _typed_email(rng, user["email"])
            return [(" You can reach me at ", None), (typed, (EMAIL, typed, user)), (".", None)]
        if kind == 1:
            typed = _typed_phone(rng, user["phone"], user["_national"])
            return [(" Call me on ", None), (typed, (PHONE, typed, user)), (" if easier.", None)]
        if kind == 2:
            typed = _typed_card(rng, card_number(rng))
            return [(" The card is ", None), (typed, (CARD, typed, None)), (".", None)]
        if kind == 3 and user["iban"]:
            typed = _typed_iban(rng, user["iban"])
            return [(" Reimburse to ", None), (typed, (IBAN, typed, user)), (" please.", None)]
        if kind == 4:
            typed = _typed_name(rng, other["full_name"])
            return [(" I already asked ", None), (typed, (PERSON, typed, other)), (" from finance about it.", None)]
        if kind == 5:
            street = user["street"] if rng.random() < 0.7 else user["street"].lower()
            return [(" Ship the card to ", None), (street, (LOCATION, street, user)), (f", {user['city']}.", None)]
        if kind == 6:
            return [(" Our account is ", None), (user["account_id"], (ACCOUNT, user["account_id"], user)), (".", None)]
        if kind == 7:
            ip = user["last_ip"]
            return [(" Login was blocked from ", None), (ip, (IP, ip, user)), (".", None)]
        if kind == 8:  # a third party nobody has a record of
            loc = _LOCALES[rng.choice(LOCALES)]
            local = _ascii_fold(f"{rng.choice(loc['first'])}.{rng.choice(loc['last'])}").lower()
            typed = _typed_email(rng, f"{local}@{rng.choice(['acme-corp.com', 'example.org', 'contoso.co.uk'])}")
            return [(" Please cc our accountant ", None), (typed, (EMAIL, typed, None)), (".", None)]
        if kind == 9:
            key = "lk_live_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(24))
            return [(" Our key is ", None), (key, (API_KEY, key, None)), (" if you need it.", None)]
        if kind == 10:
            token = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(32))
            url = rng.choice([f"https://app.larkspur.example/export?token={token}",
                              f"https://admin:{token[:12]}@files.acme-corp.com/receipts/",
                              f"https://hooks.acme-corp.com/larkspur?api_key={token}"])
            return [(" The link is ", None), (url, (SECRET_URL, url, None)), (" .", None)]
        if kind == 11 and user["country"] == "US":
            ssn = f"{rng.randrange(100, 665)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"
            return [(" My SSN for the 1099 is ", None), (ssn, (SSN, ssn, None)), (".", None)]
        typed = _typed_phone(rng, user["phone"], user["_national"])
        return [(" My number: ", None), (typed, (PHONE, typed, user))]


def generate(users: int = 120, messages: int = 1500, seed: int = 7, day: date = date(2026, 11, 30),
             canary_users: int = 0) -> FakeExport:
    """A users table and one day of chat logs; `canary_users` of the users carry canary values."""
    b = _Builder(seed, day)
    people = [b.user(canary=i < canary_users) for i in range(users)]
    b.rng.shuffle(people)
    start = datetime.combine(day, time(0, 0), tzinfo=timezone.utc)
    written, session_no = 0, 0
    # Every canary user speaks at least once, so canaries are in the logs, not only in the table.
    speakers = [u for u in people if u["_canary"]] + people
    while written < messages:
        user = speakers[session_no] if session_no < len(speakers) else b.rng.choice(people)
        session_no += 1
        session = b._id("ses_", 10)
        ts = start + timedelta(seconds=b.rng.randrange(0, 86_000))
        for turn in range(min(b.rng.choice([1, 1, 2, 3]), messages - written)):
            b.message(user, turn, session, ts + timedelta(seconds=40 * turn), people)
            written += 1
    users_df = pd.DataFrame([{k: v for k, v in u.items() if not k.startswith("_")} for u in people])
    logs_df = pd.DataFrame(b.logs).sort_values(["ts", "message_id"], kind="stable").reset_index(drop=True)
    return FakeExport(users=users_df, logs=logs_df, labels=b.labels)
