#!/usr/bin/env python
"""Generate a large synthetic help-centre corpus for ingestion benchmarks.

    python bench/make_corpus.py OUT_DIR --docs 2000 --seed 7
    python bench/make_corpus.py OUT_DIR --edit-fraction 0.05 --seed 11

The first form writes ``--docs`` documents under OUT_DIR/<area>/ with this format mix:
md ~50%, html ~20%, txt ~15%, json ~10% ({"id","title","category","body"}) and pdf ~5%
(fpdf2, one or two short pages). Every document is 200-1200 words (pdfs 200-400) of help-centre
style prose assembled from templates and vocabulary, with document-specific feature names,
customer names, settings paths, error codes and numbers, so chunks are not repeated
across documents. Output is deterministic for a given (docs, seed): every document is
generated from its own RNG seeded with (seed, index).

The second form (``--edit-fraction``) does not generate anything: it edits
``round(fraction * number_of_documents)`` existing md/txt/html/json documents in place
(pdfs are never edited) by replacing one sentence in one prose paragraph, and prints the
edited relative paths, one per line. Choice of documents and new sentences is
deterministic for a given seed; use a different seed for each edit round.

Both operations are also available as functions: ``generate_corpus(out_dir, docs, seed)``
and ``edit_fraction(out_dir, fraction, seed)``.
"""

from __future__ import annotations

import argparse
import html
import json
import random
import re
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

FORMAT_SHARES = (("md", 0.50), ("html", 0.20), ("txt", 0.15), ("json", 0.10), ("pdf", 0.05))
EDITABLE_SUFFIXES = (".md", ".txt", ".html", ".json")
DOC_SUFFIXES = EDITABLE_SUFFIXES + (".pdf",)
MIN_WORDS, MAX_WORDS = 200, 1200
PDF_MIN_WORDS, PDF_MAX_WORDS = 200, 400

# ---------------------------------------------------------------------------
# Vocabulary (plain ASCII so the pdf core font can render everything).
# ---------------------------------------------------------------------------

AREAS: dict[str, list[str]] = {
    "billing": ["subscription renewals", "seat true-ups", "payment methods", "billing contacts",
                "tax settings", "plan downgrades", "account credits", "usage-based add-ons"],
    "expenses": ["receipt capture", "expense policies", "mileage claims", "per diem rates",
                 "expense reports", "category rules", "duplicate detection", "attendee tracking"],
    "invoicing": ["invoice numbering", "payment reminders", "customer portals", "late fees",
                  "quotes and estimates", "deposits", "credit notes", "invoice approvals"],
    "cards": ["card limits", "virtual cards", "merchant restrictions", "card statements",
              "receipt lock", "card replacement"],
    "integrations": ["ledger sync", "payroll export", "CRM sync", "HR directory sync",
                     "SFTP exports", "data warehouse feeds", "single sign-on", "chat notifications"],
    "account": ["workspace settings", "member roles", "security policies", "audit logs",
                "departments", "data exports", "ownership changes"],
    "api": ["API keys", "webhook endpoints", "pagination", "rate limiting", "idempotency",
            "sandbox testing", "bulk endpoints"],
    "troubleshooting": ["sync delays", "upload failures", "sign-in issues", "missing transactions",
                        "notification delivery", "export errors", "slow dashboards"],
}
AREA_CODES = {"billing": "BIL", "expenses": "EXP", "invoicing": "INV", "cards": "CRD",
              "integrations": "INT", "account": "ACC", "api": "API", "troubleshooting": "TRB"}

FEATURE_ADJ = ["Amber", "Basalt", "Cedar", "Cobalt", "Delta", "Ember", "Fjord", "Granite", "Harbor",
               "Indigo", "Juniper", "Kestrel", "Lumen", "Meadow", "Nimbus", "Onyx", "Prairie",
               "Quartz", "Raven", "Sierra", "Tundra", "Umber", "Vesper", "Willow", "Zephyr",
               "Aspen", "Birch", "Coral", "Dune", "Falcon", "Glacier", "Heron", "Iris", "Jasper"]
FEATURE_NOUN = ["Ledger", "Relay", "Vault", "Bridge", "Console", "Inbox", "Matcher", "Scheduler",
                "Router", "Planner", "Tracker", "Gateway", "Monitor", "Composer", "Reconciler",
                "Forecaster", "Sentinel", "Archive", "Pipeline", "Workbench", "Dispatcher", "Hub"]
COMPANY_A = ["North", "Blue", "Silver", "Bright", "Red", "Stone", "Oak", "Pine", "Lake", "Iron",
             "Summit", "River", "Clear", "Maple", "Golden", "Harbor", "Copper", "Swift"]
COMPANY_B = ["field", "wind", "gate", "bridge", "brook", "crest", "ridge", "works", "line", "point",
             "stone", "haven", "wood", "vale", "port", "mark"]
COMPANY_C = ["Studio", "Logistics", "Labs", "Partners", "Foods", "Health", "Robotics", "Media",
             "Consulting", "Outfitters", "Energy", "Architects", "Analytics", "Supply Co."]
FIRST_NAMES = ["Priya", "Marcus", "Elena", "Tomasz", "Aisha", "Kenji", "Sofia", "Daniel", "Leila",
               "Oren", "Grace", "Mateo", "Ingrid", "Samuel", "Noor", "Felix", "Hana", "Rafael"]
ROLES = ["Owner", "Admin", "Finance Manager", "Approver", "Member", "Auditor", "Bookkeeper",
         "Department Head"]
PLANS = ["Starter", "Team", "Business", "Enterprise"]
INTEGRATIONS = ["QuickBooks Online", "Xero", "NetSuite", "Sage Intacct", "Gusto", "Rippling",
                "BambooHR", "Salesforce", "HubSpot", "Slack", "Microsoft Teams", "Snowflake",
                "BigQuery", "Okta", "Workday", "Zapier"]
CURRENCIES = ["USD", "EUR", "GBP", "CAD", "AUD", "CHF", "SEK", "JPY", "SGD", "NZD", "DKK", "PLN"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
REGIONS = ["US East", "US West", "EU Central", "UK South", "APAC Sydney", "Canada Central"]
FILE_FORMATS = ["CSV", "XLSX", "PDF", "JSON", "XML", "OFX", "QIF"]
STATUSES = ["Draft", "Pending review", "Approved", "Queued", "Synced", "Failed", "On hold",
            "Archived", "Needs attention", "Scheduled"]
OBJECTS = ["expense report", "invoice", "card transaction", "receipt", "payment run",
           "journal entry", "customer record", "vendor record", "approval rule", "export job",
           "webhook delivery", "budget", "purchase order", "reimbursement"]
ACTIONS = ["approve", "export", "archive", "reopen", "duplicate", "void", "reassign", "sync",
           "lock", "split", "merge", "tag", "escalate", "reconcile"]
SETTING_WORDS = ["Defaults", "Automation", "Limits", "Notifications", "Security", "Mapping",
                 "Schedules", "Advanced", "Permissions", "Retention", "Templates", "Routing"]
TOGGLES = ["Require justification", "Auto-submit", "Strict matching", "Daily digest",
           "Block on violation", "Round to nearest unit", "Allow partial sync", "Notify approvers",
           "Lock after export", "Skip weekends", "Inherit department", "Use fiscal calendar"]

TITLE_TEMPLATES = [
    "How {feature} handles {topic}",
    "Configuring {topic} in {feature}",
    "Troubleshooting {topic} with {feature}",
    "A guide to {topic} for {role}s",
    "Understanding {topic} limits on the {plan} plan",
    "Setting up {topic} with {integration}",
    "{Topic}: frequently asked questions",
    "Best practices for {topic} at {company}",
    "What changed in {topic} (release {version})",
    "Automating {topic} with the {feature}",
    "Managing {topic} across {n_small} departments",
    "Reference: {topic} settings and defaults",
]

HEADINGS = [
    "Overview", "Before you begin", "How {topic} works", "Limits and quotas", "Who can change this",
    "Step-by-step setup", "Common errors", "Frequently asked questions", "Reporting and exports",
    "Best practices for {role}s", "What changes on the {plan} plan", "Known limitations",
    "Example: how {company} uses {feature}", "Working with {integration}", "Notifications",
    "Audit trail", "Scheduling", "Permissions and visibility", "Data retention", "Edge cases",
    "Migrating from the old {topic} screen", "Tips for large workspaces",
]

SENTENCES = [
    "The {feature} processes each {object} within {n_minutes} minutes of it being created.",
    "Only members with the {role} role can change {topic} under {setting}.",
    "On the {plan} plan the limit is {limit} {object}s per workspace, and the counter resets on the first day of each month.",
    "If the {toggle} option is switched on, every {object} is checked before it moves to {status}.",
    "{company} reduced the time spent on {topic} from {n_hours} hours to {n_small} hours a week after enabling the {feature}.",
    "When {integration} returns error {code}, Larkspur retries up to {n_small} times with an increasing delay.",
    "A {object} that stays in the {status} state for more than {n_days} days is flagged for review.",
    "You can {action} up to {limit} items at once from the bulk actions menu.",
    "Amounts are stored in {currency} and converted using the rate published at {time} UTC on the transaction date.",
    "The default value is {n_days} days, but Admins can choose anything between 1 and {n_days_max} days.",
    "Changes to {topic} take effect at the start of the next billing period, not immediately.",
    "Data for workspaces hosted in {region} is processed in that region only.",
    "The nightly job runs at {time} in the workspace time zone and skips {weekday}s if {toggle} is enabled.",
    "{person} from the finance team at {company} recommends reviewing {topic} every {weekday} morning.",
    "Exports are available in {format} and {format2} format and include every field shown on screen.",
    "Each {object} keeps a full history, so a {role} can see who changed it and when.",
    "Error {code} means the {object} could not be matched; open it and choose the correct record manually.",
    "The {feature} can hold at most {limit} entries; older entries are archived automatically after {n_days} days.",
    "When a {role} is removed, their open {object}s are reassigned to the next person in the chain.",
    "Most teams start with the defaults and adjust {topic} after the first {n_small} weeks.",
    "A fee of {pct}% applies to every {object} processed through {integration}, capped at {amount} {currency}.",
    "If {topic} looks wrong, compare the value in {setting} with the one stored in {integration}.",
    "Requests are limited to {limit} per minute per workspace, and the response includes a Retry-After header when the limit is reached.",
    "The status changes from {status} to {status2} as soon as all required fields are present.",
    "For audit purposes, {object}s cannot be deleted after {n_days} days; they can only be archived.",
    "You will receive a notification when a {object} is waiting for you for longer than {n_hours} hours.",
    "The {plan} plan adds {topic} controls that are not available on lower plans.",
    "Setting {toggle} to off means members can {action} a {object} without a second review.",
    "Larkspur keeps a copy of each {object} for {n_years} years, in line with common bookkeeping rules.",
    "The {feature} compares the {object} against the previous {n_small} entries to spot duplicates.",
    "Approvers at {company} handle about {limit} {object}s per month using this workflow.",
    "Batch sizes above {limit} are split automatically into several runs of equal size.",
    "If the sync with {integration} has not completed after {n_minutes} minutes, the {object} is moved back to {status}.",
    "Internal notes on a {object} are never visible to customers or external approvers.",
    "The {setting} page shows the last {n_small} changes and who made them.",
    "When two rules match the same {object}, the one higher in the list wins.",
    "The threshold of {amount} {currency} applies to each {object} separately, not to the total of the report.",
    "Members in {region} see dates in day-month-year order unless they change their regional format.",
    "Use a naming convention such as {prefix}-{year}-001 so that {object}s sort correctly in {integration}.",
    "You can pause {topic} for up to {n_days} days without losing any configuration.",
    "The {feature} ignores {object}s that are marked as personal or non-reimbursable.",
    "Switching {toggle} on for an existing workspace does not change records created before the switch.",
    "Errors are listed on the Activity tab together with the code, for example {code}, and a suggested fix.",
    "At {company}, the {role} reviews the weekly {format} summary before the payment run on {weekday}.",
    "The API returns {object}s in pages of {page_size}, ordered by creation date.",
    "A webhook is sent each time a {object} changes to {status}, with the previous status included in the payload.",
    "If you use {integration}, map each Larkspur category to an account before the first sync.",
    "For workspaces with more than {limit} members, processing for {topic} runs in the background and you receive an email when it finishes.",
    "Before changing {topic}, export a {format} backup so that you can compare the results afterwards.",
    "Teams that process more than {limit} {object}s a month usually split the work between two {role}s.",
    "The {feature} shows a yellow warning when a {object} is within {pct}% of its limit.",
    "Guest users invited from {company} can view a {object} but cannot {action} it.",
    "A daily summary is emailed at {time} to everyone with the {role} role, listing each {object} that needs attention.",
    "Historical {object}s imported from {integration} keep their original dates and are not re-checked against current rules.",
    "If a {object} is edited after approval, it returns to {status} and the approvers are notified again.",
    "Sandbox workspaces behave like production ones, except that no money moves and {integration} calls are simulated.",
    "Mobile users can {action} a {object} offline; the change is uploaded the next time the app connects.",
    "The {setting} screen lists every rule in the order it is evaluated, with the number of {object}s it matched in the last {n_days} days.",
    "Custom fields on a {object} can be made mandatory for specific departments, for example Sales or Operations at {company}.",
    "Timestamps on each {object} are shown in your personal time zone but stored in UTC.",
    "Workspaces created before release {version} keep the legacy behaviour until an Admin opts in from {setting}.",
    "A {object} cannot be moved to {status} while it still has unresolved comments from a {role}.",
    "The support team at Larkspur can restore a deleted {object} within {n_days} days if you quote its reference, such as {prefix}-{year}-{n_small}{n_hours}.",
]

STEP_TEMPLATES = [
    "Open {setting}.",
    "Click {toggle} and confirm the change.",
    "Choose the {object} you want to {action}.",
    "Select {integration} from the list of connections.",
    "Enter a limit between 1 and {limit}.",
    "Pick the members or departments the rule applies to.",
    "Save the changes and wait up to {n_minutes} minutes for them to apply.",
    "Check the Activity tab for error {code}.",
    "Export a {format} file to confirm the result.",
    "Ask a {role} to review and approve the new configuration.",
]

EDIT_SENTENCES = [
    "As of this update, the {feature} also supports {object}s created through {integration}.",
    "Note: the limit was raised to {limit} {object}s per workspace in release {version}.",
    "Since release {version}, {role}s receive a reminder after {n_days} days instead of {n_days_max}.",
    "Update: error {code} is now retried automatically up to {n_small} times before it is shown.",
    "Starting in {year}, {topic} for workspaces in {region} is processed overnight at {time} UTC.",
]


AREA_LABELS = {a: ("API" if a == "api" else a.capitalize()) for a in AREAS}


def _fix_articles(s: str) -> str:
    s = s.replace("entrys", "entries").replace("deliverys", "deliveries")
    return re.sub(r"\b([Aa]) (?=[AEIOaeio])", lambda m: m.group(1) + "n ", s)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _slug(s: str, max_len: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")
    return slug[:max_len].rstrip("-")


class _DocVocab:
    """Doc-specific slot values; each fill() call draws fresh numbers from the doc's RNG."""

    def __init__(self, rng: random.Random, area: str, topic: str, index: int):
        self.rng = rng
        self.area = area
        self.topic = topic
        self.feature = f"{rng.choice(FEATURE_ADJ)} {rng.choice(FEATURE_NOUN)}"
        self.company = f"{rng.choice(COMPANY_A)}{rng.choice(COMPANY_B)} {rng.choice(COMPANY_C)}"
        self.integration = rng.choice(INTEGRATIONS)
        self.plan = rng.choice(PLANS[1:])
        self.prefix = AREA_CODES[area]
        self.index = index
        self.settings_path = f"Settings > {AREA_LABELS[area]} > {rng.choice(SETTING_WORDS)}"
        self.used: set[str] = set()

    def sentence(self, templates: list[str], tries: int = 6) -> str:
        """Fill a random template, avoiding exact repeats within the same document."""
        for _ in range(tries):
            s = self.fill(self.rng.choice(templates))
            if s not in self.used:
                break
        self.used.add(s)
        return s

    def fill(self, template: str) -> str:
        return _fix_articles(template.format_map(_Slots(self)))

    # Slot generators, evaluated lazily (only for the fields a template uses).
    def slot(self, key: str):
        r = self.rng
        if key == "feature":
            return self.feature if r.random() < 0.7 else f"{r.choice(FEATURE_ADJ)} {r.choice(FEATURE_NOUN)}"
        if key == "integration":
            return self.integration if r.random() < 0.6 else r.choice(INTEGRATIONS)
        if key == "setting":
            if r.random() < 0.6:
                return self.settings_path
            return f"Settings > {AREA_LABELS[self.area]} > {r.choice(SETTING_WORDS)}"
        if key == "n_days":
            self._n_days = r.choice([3, 5, 7, 10, 14, 21, 30, 45, 60, 90])
            return self._n_days
        if key == "n_days_max":
            return getattr(self, "_n_days", 30) * r.choice([2, 3, 4])
        fixed = {"topic": self.topic, "Topic": _cap(self.topic), "area": self.area,
                 "company": self.company, "plan": self.plan, "prefix": self.prefix}
        if key in fixed:
            return fixed[key]
        choices = {"role": ROLES, "object": OBJECTS, "action": ACTIONS, "status": STATUSES,
                   "status2": STATUSES, "toggle": TOGGLES, "region": REGIONS, "weekday": WEEKDAYS,
                   "currency": CURRENCIES, "format": FILE_FORMATS, "format2": FILE_FORMATS,
                   "person": FIRST_NAMES, "n_minutes": [1, 2, 5, 10, 15, 30, 60],
                   "n_years": [2, 3, 5, 7, 10], "page_size": [25, 50, 100],
                   "pct": [0.5, 0.8, 1, 1.5, 2, 2.5, 2.9, 3, 5]}
        if key in choices:
            return r.choice(choices[key])
        if key == "code":
            return f"{self.prefix}-{r.randint(100, 9999)}"
        if key == "limit":
            return f"{r.choice([10, 20, 25, 40, 50, 100, 150, 200, 250, 500, 1000, 2500, 5000]):,}"
        if key == "amount":
            return f"{r.choice([25, 50, 75, 100, 150, 250, 500, 1000, 2500, 5000]):,}"
        if key == "n_hours":
            return r.randint(2, 48)
        if key == "n_small":
            return r.randint(2, 9)
        if key == "time":
            return f"{r.randint(0, 23):02d}:{r.choice(['00', '15', '30', '45'])}"
        if key == "version":
            return f"{r.randint(3, 9)}.{r.randint(0, 30)}"
        if key == "year":
            return r.randint(2021, 2026)
        raise KeyError(key)


class _Slots(dict):
    def __init__(self, vocab: "_DocVocab"):
        super().__init__()
        self.vocab = vocab

    def __missing__(self, key: str):
        value = self[key] = self.vocab.slot(key)
        return value


def _make_document(index: int, seed: int, fmt: str) -> dict:
    """Return {"area","title","sections":[(heading, [("p", text) | ("ul", [items]) | ("ol", [...])])]}."""
    rng = random.Random(f"{seed}:{index}")
    area = rng.choice(sorted(AREAS))
    topic = rng.choice(AREAS[area])
    v = _DocVocab(rng, area, topic, index)
    title = v.fill(rng.choice(TITLE_TEMPLATES))
    if fmt == "pdf":
        target = rng.randint(PDF_MIN_WORDS, PDF_MAX_WORDS - 80)
    else:
        target = rng.randint(MIN_WORDS, MAX_WORDS - 150)
    words = len(title.split())
    headings = rng.sample(HEADINGS, len(HEADINGS))
    sections: list[tuple[str, list]] = []
    # intro paragraph without a heading
    intro = " ".join(v.sentence(SENTENCES) for _ in range(rng.randint(2, 4)))
    sections.append(("", [("p", intro)]))
    words += len(intro.split())
    h = 0
    while words < target:
        heading = v.fill(headings[h % len(headings)])
        h += 1
        words += len(heading.split())
        blocks: list = []
        for _ in range(rng.randint(1, 3)):
            if words >= target:
                break
            if rng.random() < 0.18:
                kind = "ol" if rng.random() < 0.6 else "ul"
                src = STEP_TEMPLATES if kind == "ol" else SENTENCES
                items = [v.fill(t) for t in rng.sample(src, rng.randint(3, 5))]
                v.used.update(items)
                blocks.append((kind, items))
                words += sum(len(i.split()) for i in items)
                continue
            sentences = []
            for _ in range(rng.randint(3, 7)):
                s = v.sentence(SENTENCES)
                sentences.append(s)
                words += len(s.split())
                if words >= target:
                    break
            if len(sentences) < 2:  # keep every prose paragraph editable (>= 2 sentences)
                s = v.sentence(SENTENCES)
                sentences.append(s)
                words += len(s.split())
            blocks.append(("p", " ".join(sentences)))
        if blocks:
            sections.append((heading, blocks))
    return {"area": area, "topic": topic, "title": title, "sections": sections, "index": index}


# ---------------------------------------------------------------------------
# Renderers
# ---------------------------------------------------------------------------

def _render_md(doc: dict) -> str:
    out = [f"# {doc['title']}", ""]
    for heading, blocks in doc["sections"]:
        if heading:
            out += [f"## {heading}", ""]
        for kind, body in blocks:
            if kind == "p":
                out += [body, ""]
            elif kind == "ul":
                out += [f"- {i}" for i in body] + [""]
            else:
                out += [f"{n}. {i}" for n, i in enumerate(body, 1)] + [""]
    return "\n".join(out)


def _render_txt(doc: dict) -> str:
    title = doc["title"].upper()
    out = [title, "=" * len(title), ""]
    for heading, blocks in doc["sections"]:
        if heading:
            out += [heading, "-" * len(heading), ""]
        for kind, body in blocks:
            if kind == "p":
                out += [body, ""]
            elif kind == "ul":
                out += [f"  * {i}" for i in body] + [""]
            else:
                out += [f"  {n}) {i}" for n, i in enumerate(body, 1)] + [""]
    return "\n".join(out)


def _render_html(doc: dict) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '  <meta charset="utf-8">',
        f"  <title>{e(doc['title'])} | Larkspur Help Centre</title>",
        "  <script>window.dataLayer = window.dataLayer || []; dataLayer.push({'page': 'help'});</script>",
        "</head>", "<body>",
        f'  <nav><a href="/">Help Centre</a> &rsaquo; <a href="/{doc["area"]}/">{e(AREA_LABELS[doc["area"]])}</a></nav>',
        "  <main>", f"    <h1>{e(doc['title'])}</h1>",
    ]
    for heading, blocks in doc["sections"]:
        if heading:
            parts.append(f"    <h2>{e(heading)}</h2>")
        for kind, body in blocks:
            if kind == "p":
                parts.append(f"    <p>{e(body)}</p>")
            else:
                tag = "ul" if kind == "ul" else "ol"
                parts.append(f"    <{tag}>" + "".join(f"<li>{e(i)}</li>" for i in body) + f"</{tag}>")
    parts += ["  </main>", "  <footer>&copy; Larkspur Labs Inc.</footer>",
              '  <script src="/assets/help.js" defer></script>', "</body>", "</html>", ""]
    return "\n".join(parts)


def _render_json(doc: dict) -> str:
    paras = []
    for heading, blocks in doc["sections"]:
        if heading:
            paras.append(heading)
        for kind, body in blocks:
            if kind == "p":
                paras.append(body)
            elif kind == "ul":
                paras.append("\n".join(f"- {i}" for i in body))
            else:
                paras.append("\n".join(f"{n}. {i}" for n, i in enumerate(body, 1)))
    obj = {"id": f"kb-{doc['index']:05d}", "title": doc["title"], "category": AREA_LABELS[doc["area"]],
           "body": "\n\n".join(paras)}
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


_PDF_DATE = datetime(2024, 11, 4, 9, 30, 0, tzinfo=timezone.utc)


def _render_pdf(doc: dict) -> bytes:
    from fpdf import FPDF  # imported lazily: only needed for ~5% of documents

    pdf = FPDF(format="A4")
    pdf.set_creation_date(_PDF_DATE)
    pdf.set_title(doc["title"])
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()
    pdf.set_font("helvetica", "B", 16)
    pdf.multi_cell(0, 8, doc["title"], new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for heading, blocks in doc["sections"]:
        if heading:
            pdf.set_font("helvetica", "B", 12)
            pdf.multi_cell(0, 6.5, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "", 10)
        for kind, body in blocks:
            items = [body] if kind == "p" else [
                f"{n}. {i}" if kind == "ol" else f"- {i}" for n, i in enumerate(body, 1)]
            for item in items:
                # textwrap + cell() is ~10x faster than multi_cell's per-glyph line breaking
                for line in textwrap.wrap(item, 88):
                    pdf.cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1.5)
    return bytes(pdf.output())


RENDERERS = {"md": _render_md, "txt": _render_txt, "html": _render_html, "json": _render_json}


def _format_plan(docs: int, seed: int) -> list[str]:
    counts = {fmt: int(round(share * docs)) for fmt, share in FORMAT_SHARES}
    counts["md"] += docs - sum(counts.values())  # absorb rounding
    plan = [fmt for fmt, _ in FORMAT_SHARES for _ in range(counts[fmt])]
    random.Random(f"{seed}:formats").shuffle(plan)
    return plan


def generate_corpus(out_dir: str | Path, docs: int = 2000, seed: int = 7) -> list[str]:
    """Write ``docs`` documents under ``out_dir``; return their relative paths (posix)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, fmt in enumerate(_format_plan(docs, seed)):
        doc = _make_document(i, seed, fmt)
        rel = f"{doc['area']}/{_slug(doc['title'])}-{i:05d}.{fmt}"
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "pdf":
            path.write_bytes(_render_pdf(doc))
        else:
            path.write_text(RENDERERS[fmt](doc), encoding="utf-8")
        written.append(rel)
    return written


# ---------------------------------------------------------------------------
# In-place edits
# ---------------------------------------------------------------------------

_SENT_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")


def _is_prose(block: str) -> bool:
    b = block.strip()
    return ("\n" not in b and b.endswith(".") and len(b.split()) >= 8
            and not b.startswith(("#", "-", "*", "<", "=")) and not re.match(r"\d+[.)] ", b)
            and len(_SENT_SPLIT.split(b)) >= 2)


def _replace_sentence(paragraph: str, rng: random.Random, vocab: _DocVocab, escape: bool) -> str:
    sentences = _SENT_SPLIT.split(paragraph)
    k = rng.randrange(len(sentences))
    while True:
        new = vocab.fill(rng.choice(EDIT_SENTENCES))
        if escape:
            new = html.escape(new)
        if new != sentences[k]:
            break
    sentences[k] = new
    return " ".join(sentences)


def _edit_blocks(blocks: list[str], rng, vocab, escape=False) -> bool:
    candidates = [i for i, b in enumerate(blocks) if _is_prose(b)]
    if not candidates:
        return False
    i = rng.choice(candidates)
    blocks[i] = _replace_sentence(blocks[i], rng, vocab, escape)
    return True


def _edit_file(path: Path, rng: random.Random, vocab: _DocVocab) -> bool:
    suffix = path.suffix
    text = path.read_text(encoding="utf-8")
    if suffix in (".md", ".txt"):
        blocks = text.split("\n\n")
        if not _edit_blocks(blocks, rng, vocab):
            return False
        new_text = "\n\n".join(blocks)
    elif suffix == ".html":
        matches = [m for m in re.finditer(r"<p>(.*?)</p>", text, flags=re.S) if _is_prose(m.group(1))]
        if not matches:
            return False
        m = rng.choice(matches)
        new_p = _replace_sentence(m.group(1), rng, vocab, escape=True)
        new_text = text[: m.start(1)] + new_p + text[m.end(1):]
    elif suffix == ".json":
        obj = json.loads(text)
        blocks = obj.get("body", "").split("\n\n")
        if not _edit_blocks(blocks, rng, vocab):
            return False
        obj["body"] = "\n\n".join(blocks)
        new_text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    else:
        return False
    path.write_text(new_text, encoding="utf-8")
    return True


def edit_fraction(out_dir: str | Path, fraction: float, seed: int = 7) -> list[str]:
    """Edit ``fraction`` of the documents in ``out_dir`` in place (one sentence each).

    The number of edits is ``round(fraction * total documents)`` (at least 1 when
    fraction > 0), drawn from the md/txt/html/json documents only. Returns the sorted
    relative (posix) paths of the edited documents.
    """
    if not 0 <= fraction <= 1:
        raise ValueError("fraction must be between 0 and 1")
    root = Path(out_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; generate the corpus first")
    all_docs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.is_file() and p.suffix in DOC_SUFFIXES)
    eligible = [p for p in all_docs if p.endswith(EDITABLE_SUFFIXES)]
    n = int(round(fraction * len(all_docs)))
    if fraction > 0:
        n = max(n, 1)
    n = min(n, len(eligible))
    rng = random.Random(f"edit:{seed}")
    chosen = rng.sample(eligible, n)
    edited = []
    for rel in chosen:
        doc_rng = random.Random(f"edit:{seed}:{rel}")
        area = rel.split("/", 1)[0]
        vocab = _DocVocab(doc_rng, area if area in AREAS else "account",
                          doc_rng.choice(AREAS.get(area, AREAS["account"])), 0)
        if _edit_file(root / rel, doc_rng, vocab):
            edited.append(rel)
    return sorted(edited)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate (or edit in place) a synthetic help-centre benchmark corpus.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--docs", type=int, default=2000, help="number of documents (default 2000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--edit-fraction", type=float, default=None, metavar="F",
                        help="instead of generating, edit fraction F of the existing documents in "
                             "OUT_DIR and print the edited relative paths")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    if args.edit_fraction is not None:
        edited = edit_fraction(args.out_dir, args.edit_fraction, args.seed)
        for rel in edited:
            print(rel)
        print(f"edited {len(edited)} documents in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        return 0

    if args.out_dir.exists() and any(args.out_dir.iterdir()):
        print(f"warning: {args.out_dir} is not empty; files with the same names are overwritten, "
              "others are left alone", file=sys.stderr)
    written = generate_corpus(args.out_dir, args.docs, args.seed)
    counts: dict[str, int] = {}
    for rel in written:
        ext = rel.rsplit(".", 1)[1]
        counts[ext] = counts.get(ext, 0) + 1
    summary = ", ".join(f"{k}={counts.get(k, 0)}" for k, _ in FORMAT_SHARES)
    print(f"wrote {len(written)} documents to {args.out_dir} ({summary}) "
          f"in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
