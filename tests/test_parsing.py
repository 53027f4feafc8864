"""Every supported format parses with structure; every kind of bad file is set aside with its reason."""

from __future__ import annotations

import io
import json

import pytest
from fpdf import FPDF

from spotline.parsing import SetAside, parse_document


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
        ("kb/latin1.txt", "Résumé des coûts: égalité".encode("latin-1"), "undecodable"),
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
