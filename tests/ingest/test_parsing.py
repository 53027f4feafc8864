"""Every supported format parses with structure; every kind of bad file is set aside with its reason."""

from __future__ import annotations

import io
import json
import random
import re
import struct
import zlib

import pytest
from fpdf import FPDF

import spotline.ingestion.parsing
from spotline.ingestion.parsing import SetAside, parse_document

CONTROLS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def make_pdf(pages: list[str], title: str | None = None, text_layer: bool = True) -> bytes:
    pdf = FPDF()
    if title:
        pdf.set_title(title)
    for body in pages:
        pdf.add_page()
        if text_layer:
            pdf.set_font("Helvetica", size=11)
            pdf.multi_cell(0, 6, body)
        else:  # a "scan": shapes only, no text objects
            pdf.rect(20, 20, 150, 80)
            pdf.line(20, 40, 170, 40)
    return bytes(pdf.output())


def test_markdown_headings_paragraphs_and_title():
    doc = parse_document("kb/refunds.md", b"# Refund policy\n\nRefunds take 5 days.\n\n## Steps\nOpen Billing.\n\nClick Refund.")
    assert doc.title == "Refund policy" and doc.format == "md"
    texts = [(doc.text[b.start:b.end], b.heading) for b in doc.blocks]
    assert texts == [("# Refund policy", True), ("Refunds take 5 days.", False), ("## Steps", True),
                     ("Open Billing.", False), ("Click Refund.", False)]


def test_html_drops_chrome_and_keeps_blocks():
    html = b"""<html><head><title>Reset your password</title><script>var x='secret';</script></head>
    <body><nav>Home | Docs</nav><h1>Reset</h1><p>Use the <b>Forgot password</b> link.</p>
    <ul><li>Check your inbox</li><li>Click the link</li></ul><footer>(c) Larkspur</footer></body></html>"""
    doc = parse_document("kb/reset.html", html)
    assert doc.title == "Reset your password"
    assert "Forgot password link" in doc.text and "Click the link" in doc.text
    assert "secret" not in doc.text and "Home | Docs" not in doc.text and "(c) Larkspur" not in doc.text
    assert [b.heading for b in doc.blocks][:2] == [True, False]


def test_json_article_and_generic_object():
    doc = parse_document("kb/a.json", json.dumps({"id": 7, "title": "SSO setup", "body": "Step one.\n\nStep two."}).encode())
    assert doc.title == "SSO setup" and "Step one." in doc.text and "Step two." in doc.text
    generic = parse_document("kb/b.json", json.dumps({"limits": {"api": "100 requests per minute"}}).encode())
    assert "api: 100 requests per minute" in generic.text


def test_jsonl_records_become_sections():
    lines = [{"question": "Can I pay by invoice?", "answer": "Yes, on the Team plan."},
             {"question": "Do you store cards?", "answer": "No, Stripe does."}]
    doc = parse_document("faq/billing.jsonl", "\n".join(json.dumps(x) for x in lines).encode())
    assert doc.format == "jsonl" and "Stripe does" in doc.text
    assert sum(b.heading for b in doc.blocks) == 2


def test_text_title_from_first_line():
    doc = parse_document("kb/notes.txt", "Export limits\n\nExports are capped at 10,000 rows.".encode())
    assert doc.title == "Export limits" and "10,000 rows" in doc.text


def test_pdf_text_layer_with_pages():
    data = make_pdf(["Invoices are numbered per workspace.", "Credit notes reference the invoice."], title="Invoicing guide")
    doc = parse_document("kb/invoicing.pdf", data)
    assert doc.format == "pdf" and doc.pages == 2 and doc.title == "Invoicing guide"
    pages = {doc.text[b.start:b.end]: b.page for b in doc.blocks}
    assert pages["Invoices are numbered per workspace."] == 1
    assert pages["Credit notes reference the invoice."] == 2


def test_utf8_bom_and_utf16_are_decoded():
    assert "Café" in parse_document("a.txt", "\ufeffCafé menu\n\nPrices".encode("utf-8")).text
    assert "Café" in parse_document("b.txt", "Café menu\n\nPrices".encode("utf-16")).text


@pytest.mark.parametrize(
    "key, data, reason",
    [
        ("kb/empty.md", b"", "empty"),
        ("kb/blank.txt", b"  \n\t\n ", "empty"),
        ("kb/blob.txt", bytes(range(256)) * 4, "binary"),
        ("kb/broken.json", b'{"title": "x", "body": ', "corrupt"),
        ("faq/broken.jsonl", b'{"question": "a", "answer": "b"}\n{"question": oops}\n', "corrupt"),
        ("kb/sheet.xlsx", b"PK\x03\x04 zip bytes", "unsupported-format"),
        ("kb/noext", b"hello", "unsupported-format"),
        ("kb/fake.pdf", b"this is not a pdf", "corrupt"),
        ("kb/only-markup.html", b"<html><body><script>x()</script></body></html>", "empty"),
    ],
)
def test_bad_files_are_set_aside_with_reason(key, data, reason):
    with pytest.raises(SetAside) as err:
        parse_document(key, data)
    assert err.value.reason == reason and err.value.detail


def test_truncated_pdf_is_corrupt():
    data = make_pdf(["Some text " * 200, "More text " * 200])
    with pytest.raises(SetAside) as err:
        parse_document("kb/truncated.pdf", data[: len(data) * 2 // 5])
    assert err.value.reason in ("corrupt", "needs-ocr")


def test_pdf_without_text_layer_needs_ocr():
    with pytest.raises(SetAside) as err:
        parse_document("kb/scan.pdf", make_pdf(["", ""], text_layer=False))
    assert err.value.reason == "needs-ocr" and "2 page" in err.value.detail


def test_encrypted_pdf_is_set_aside():
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    writer.append(PdfReader(io.BytesIO(make_pdf(["secret plans"]))))
    writer.encrypt(user_password="pw", owner_password="owner")
    buf = io.BytesIO()
    writer.write(buf)
    with pytest.raises(SetAside) as err:
        parse_document("kb/locked.pdf", buf.getvalue())
    assert err.value.reason == "encrypted"


def test_too_large_is_set_aside_before_parsing():
    with pytest.raises(SetAside) as err:
        parse_document("kb/huge.txt", b"a" * 2000, max_bytes=1000)
    assert err.value.reason == "too-large"


def help_article(paragraphs: int) -> str:
    rng = random.Random(paragraphs)
    vocab = "invoice refund workspace admin export ledger approval receipt policy token webhook sync".split()
    return "Billing help\n\n" + "\n\n".join(
        " ".join(rng.choice(vocab) for _ in range(60)).capitalize() + "." for _ in range(paragraphs)
    )


def png(payload_bytes: int) -> bytes:
    """A real PNG signature and IHDR chunk followed by zlib-compressed noise, as a photo would be."""
    noise = random.Random(payload_bytes).randbytes(payload_bytes)
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + b"\0\0\0\0"
            + b"IDAT" + zlib.compress(noise))


def test_stray_nuls_anywhere_in_a_long_text_are_stripped_and_it_is_ingested():
    from tokenizers import Tokenizer

    from spotline.ingestion.chunking import Chunker
    from spotline.embedding.local import default_model_path

    data = bytearray(help_article(220).encode())
    assert len(data) > 90_000
    for at in (9_000, 20_001, 47_500, 80_000, len(data) - 10):  # all past the first 8 KB
        data[at:at] = b"\x00"
    doc = parse_document("kb/billing.txt", bytes(data))
    assert doc.text == help_article(220) and doc.encoding == "utf-8"
    chunks = Chunker(Tokenizer.from_file(str(default_model_path() / "tokenizer.json")), 128, 16).split(doc)
    assert len(chunks) > 10 and not any(CONTROLS.search(c.embed_text) for c in chunks)


@pytest.mark.parametrize(
    "data",
    [
        png(40),  # a tiny icon
        png(300_000),
        random.Random(5).randbytes(3_000),
        b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + random.Random(6).randbytes(50_000),
        help_article(30).encode() + png(200_000),  # text for the first ~10 KB, NULs only later
    ],
    ids=["small-png", "large-png", "random", "elf", "text-header-then-binary"],
)
def test_a_mostly_binary_file_named_txt_is_binary_whatever_its_length(data, monkeypatch):
    def no_guessing(*args, **kwargs):
        raise AssertionError("a binary must be refused before any charset detection")

    monkeypatch.setattr(spotline.ingestion.parsing, "from_bytes", no_guessing)
    with pytest.raises(SetAside) as err:
        parse_document("kb/photo.txt", data)
    assert err.value.reason == "binary" and "control characters" in err.value.detail


def test_other_control_characters_and_escape_sequences_are_stripped():
    body = help_article(3)
    raw = (b"Deploy log\x01\n\n\x1b[1;31mERROR\x1b[0m build failed\x7f at step\x0b 3\x1b]0;title\x07.\n\n"
           + body.encode() + b"\n\nNext page\x0cstarts here\x1b.")
    doc = parse_document("kb/deploy.txt", raw)
    assert doc.text == f"Deploy log\n\nERROR build failed at step 3.\n\n{body}\n\nNext page\nstarts here."
    assert doc.title == "Deploy log"


def test_a_colourised_log_is_text_not_binary():
    line = "\x1b[32mINFO\x1b[0m sync finished for workspace \x1b[1macme\x1b[0m in 3 s\n"
    doc = parse_document("kb/ci.txt", (line * 500).encode())
    assert "INFO sync finished for workspace acme in 3 s" in doc.text and not CONTROLS.search(doc.text)


def test_controls_a_parser_brings_back_are_stripped_too():
    doc = parse_document("kb/a.json", json.dumps({"title": "SSO\x00 setup", "body": "Step\x00 one.\x07"}).encode())
    assert doc.text == "SSO setup\n\nStep one." and doc.title == "SSO setup"


ARTICLE = (
    "Refunds and credits\n\n"
    "A café subscription is refunded within 5 days. Don't be naïve: send your résumé of the issue to support.\n\n"
    "The Ångström plan costs 12 € per month; “annual” plans get two months free — see Billing › Plans."
)


def test_a_cp1252_help_article_is_decoded_exactly_and_its_encoding_recorded():
    data = ARTICLE.encode("cp1252")
    assert 200 < len(data) < 400
    doc = parse_document("kb/refunds.txt", data)
    assert doc.text == ARTICLE and doc.encoding == "cp1252" and doc.title == "Refunds and credits"


@pytest.mark.parametrize(
    "text",
    [
        "Résumé des coûts: égalité",
        "Politique de remboursement\n\nVotre café est offert si la commande arrive en retard. Nous ne sommes pas "
        "naïfs : chaque réclamation est vérifiée. Envoyez votre résumé à l'équipe.",
        "Återbetalning\n\nPengarna återförs inom fem dagar. Kontakta kundtjänst om något är fel med din beställning.",
        "Perché il pagamento è stato rifiutato?\n\nPuò succedere quando la carta è scaduta; riprova più tardi.",
        "Como redefinir a senha\n\nClique em «Esqueci a senha». Você receberá um e-mail; não partilhe o código.",
        "Credits\n\nThanks to Martin von Löwis and François Pinard for their reviews. © 2024 Larkspur.",
    ],
    ids=["short", "french", "swedish", "italian", "portuguese", "english-with-names"],
)
def test_latin1_text_decodes_exactly_where_the_detector_alone_picks_a_sibling_code_page(text):
    doc = parse_document("kb/article.md", text.encode("latin-1"))
    assert doc.text == text and doc.encoding == "cp1252"


def test_other_legacy_encodings_keep_the_detected_code_page():
    russian = "Как сменить пароль\n\nОткройте настройки учётной записи и выберите раздел «Безопасность»."
    czech = ("Jak změnit heslo\n\nPřejděte do nastavení účtu a vyberte záložku Zabezpečení. Obdržíte e-mail s odkazem, "
             "jehož platnost vyprší po dvou hodinách.")
    doc = parse_document("kb/ru.txt", russian.encode("cp1251"))
    assert doc.text == russian and doc.encoding == "cp1251"
    doc = parse_document("kb/cs.txt", czech.encode("cp1250"))
    assert doc.text == czech and doc.encoding == "cp1250"


def test_a_large_legacy_file_is_detected_from_a_bounded_sample(monkeypatch):
    seen, from_bytes = [], spotline.ingestion.parsing.from_bytes

    def recording(data, *args, **kwargs):
        seen.append(len(data))
        return from_bytes(data, *args, **kwargs)

    monkeypatch.setattr(spotline.ingestion.parsing, "from_bytes", recording)
    body = help_article(2000)  # ~0.8 MB of ASCII
    text = body + "\n\nThe Ångström plan.\n\n" + body + "\n\nCafé and naïve résumé cost 5 €.\n\n" + body
    doc = parse_document("kb/big.txt", text.encode("cp1252"))
    assert len(text) > 2_000_000 and doc.text == text and doc.encoding == "cp1252"
    assert seen and max(seen) <= 1_100_000


@pytest.mark.parametrize(
    "data, encoding",
    [
        ("Café menu\n\nPrices".encode(), "utf-8"),
        ("\ufeffCafé menu\n\nPrices".encode(), "utf-8-sig"),
        ("Café menu\n\nPrices".encode("utf-16"), "utf-16"),
        ("Café menu\n\nPrices".encode("utf-32"), "utf-32"),
    ],
)
def test_the_encoding_used_is_recorded(data, encoding):
    doc = parse_document("kb/menu.txt", data)
    assert doc.text == "Café menu\n\nPrices" and doc.encoding == encoding


def test_utf16_without_a_bom_is_binary_as_before():
    with pytest.raises(SetAside) as err:  # half of its bytes are NULs
        parse_document("kb/menu.txt", help_article(2).encode("utf-16-le"))
    assert err.value.reason == "binary"


def test_nul_characters_inside_utf16_text_are_stripped():
    text = help_article(3)
    doc = parse_document("kb/menu.txt", (text[:500] + "\x00" + text[500:] + "\x00").encode("utf-16"))
    assert doc.text == text and doc.encoding == "utf-16"


def test_pdfs_record_no_encoding():
    assert parse_document("kb/p.pdf", make_pdf(["Plain page."])).encoding is None


def test_text_in_several_code_pages_at_once_stays_undecodable():
    # A support export concatenating tickets saved by the Russian, Greek, Japanese and Chinese desks,
    # each in its Windows code page: no single encoding reads it, and charset-normalizer says so.
    data = b"\n".join([
        "Как сменить пароль\n\nОткройте настройки учётной записи и выберите раздел «Безопасность».".encode("cp1251"),
        "Πώς αλλάζω τον κωδικό μου\n\nΜεταβείτε στις ρυθμίσεις του λογαριασμού και επιλέξτε Ασφάλεια.".encode("cp1253"),
        "パスワードの変更方法\n\nアカウント設定を開き、セキュリティを選択してください。".encode("shift_jis"),
        "如何更改密码\n\n打开账户设置并选择安全选项。您将收到一封包含链接的电子邮件。".encode("gb18030"),
    ])
    with pytest.raises(SetAside) as err:
        parse_document("kb/export.txt", data)
    assert err.value.reason == "undecodable" and "no legacy encoding fits" in err.value.detail


@pytest.mark.parametrize(
    "data",
    [
        ARTICLE.encode()[:-4] + "é".encode()[:1],  # cut in the middle of a character
        ARTICLE.encode() + "\n\nPrix : 5 € (TVA incluse)".encode("cp1252"),  # one line pasted from elsewhere
    ],
    ids=["truncated", "mixed"],
)
def test_damaged_utf8_is_undecodable_rather_than_mojibake(data):
    with pytest.raises(SetAside) as err:
        parse_document("kb/refunds.md", data)
    assert err.value.reason == "undecodable" and "most of it is UTF-8" in err.value.detail


def test_a_declared_charset_the_detector_confirms_wins_over_the_western_default():
    text = "Veţi primi un e-mail cu un link care expiră în două ore. Dacă mesajul nu ajunge, contactaţi-ne."
    html = f'<html><head><meta charset="windows-1250"><title>Parola</title></head><body><p>{text}</p></body></html>'
    doc = parse_document("kb/parola.html", html.encode("cp1250"))  # undeclared, it reads "expirã în douã"
    assert doc.text == text and doc.encoding == "cp1250"


def test_a_json_error_names_its_position_and_never_reads_as_cut_off():
    with pytest.raises(SetAside) as err:
        parse_document("faq/ctl.jsonl", b'{"question": "a", "answer": "b"}\n{"question": "bad\tvalue"}\n')
    assert err.value.detail == "invalid JSON: Invalid control character at line 2, column 18"  # the tab after "bad"


def test_brief_cuts_long_details_at_a_word_with_an_ellipsis():
    from spotline.errors import brief

    words = " ".join(f"word{i}" for i in range(200))
    short = brief(words, 60)
    assert len(short) <= 60 and short.endswith("…")
    assert short[:-1].split(" ")[-1] in words.split(" "), "the cut falls between words"
    assert brief("line one\n  line two", 60) == "line one line two"
