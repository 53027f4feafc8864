#!/usr/bin/env python
"""Regenerate the binary and deliberately-bad files of the sample help-centre corpus.

The Markdown, HTML, TXT, JSON and JSONL articles under ``data/sample_corpus`` are
plain files checked into git. This script (re)writes everything else, deterministically:

* the 8 good PDF articles (fpdf2, core Helvetica font, real text layer), and
* the "bad" files the ingestion pipeline must set aside (see ``data/README.md``).

Usage::

    python data/build_sample_corpus.py            # rewrite the generated files
    python data/build_sample_corpus.py --check    # rewrite, then sanity-check them with pypdf

Running it twice produces byte-identical files (fixed PDF creation dates and seeds).
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from fpdf import FPDF

CORPUS_DIR = Path(__file__).resolve().parent / "sample_corpus"

# Fixed timestamp so fpdf2 output (CreationDate and the /ID hash) is reproducible.
FIXED_DATE = datetime(2024, 11, 4, 9, 30, 0, tzinfo=timezone.utc)

# ---------------------------------------------------------------------------
# Good PDF articles.
# Block types: ("h1", text) ("h2", text) ("p", text) ("li", text) ("page",)
# Text must be latin-1 safe (core fonts); we keep it plain ASCII.
# ---------------------------------------------------------------------------

PDF_DOCS: dict[str, list[tuple]] = {}

PDF_DOCS["billing/enterprise-billing-terms.pdf"] = [
    ("h1", "Larkspur Enterprise Billing Terms"),
    ("p", "Version 4.2, effective 1 July 2024. These terms apply to every Larkspur Enterprise "
          "subscription purchased under an order form. Where the order form and these terms "
          "disagree, the order form wins. Self-serve Team and Business subscriptions are not "
          "covered by this document."),
    ("h2", "1. Minimum commitment and seats"),
    ("p", "Enterprise subscriptions start at 100 committed seats. The committed seat count and "
          "the price per seat are fixed in the order form for the whole subscription term, "
          "which is normally 12, 24 or 36 months. Committed seats are billed whether or not "
          "they are used. Customers on a term of 24 months or longer receive a price lock: "
          "the per-seat price cannot increase at the first renewal by more than 5 percent."),
    ("h2", "2. Invoicing and payment terms"),
    ("p", "Committed seats are invoiced annually in advance on the subscription start date and "
          "on each anniversary. Invoices are payable within 45 days of the invoice date (Net 45) "
          "by bank transfer, ACH or card. Customers who require a purchase order number on "
          "invoices must provide it at least 10 business days before the invoice date; Larkspur "
          "will not hold an invoice waiting for a PO number after that point, but will reissue "
          "the invoice with the PO number on request."),
    ("p", "Invoices can be issued in US dollars, euros or pounds sterling. The invoicing entity is "
          "Larkspur Labs Inc. for customers in the Americas and Asia-Pacific, and Larkspur Europe "
          "B.V. for customers in Europe, the Middle East and Africa."),
    ("h2", "3. Late payment"),
    ("p", "Amounts not paid by the due date accrue interest of 1 percent per month, or the "
          "maximum rate allowed by law if lower, from the due date until payment. Larkspur will "
          "send a written notice before suspending service and will not suspend service while "
          "the customer disputes an invoice reasonably and in good faith. Enterprise workspaces "
          "are suspended only after 30 days' written notice, not on the self-serve timeline."),
    ("page",),
    ("h2", "4. Additional seats and semi-annual true-up"),
    ("p", "Customers may add members beyond their committed seats at any time. Every six months "
          "Larkspur counts the peak number of active members in the period. Seats above the "
          "commitment are invoiced at the contracted per-seat price, prorated for the remaining "
          "months of the current term. This semi-annual true-up replaces the quarterly true-up "
          "used on self-serve annual plans. Additional seats become part of the commitment for "
          "the rest of the term and cannot be removed until renewal."),
    ("h2", "5. Service level agreement and credits"),
    ("p", "Larkspur commits to 99.9 percent monthly uptime for the web application and API, "
          "excluding scheduled maintenance announced at least 72 hours in advance. If uptime in a "
          "calendar month falls below the commitment, the customer is entitled to a service "
          "credit on the next invoice:"),
    ("li", "below 99.9 percent but at least 99.5 percent: credit of 10 percent of the monthly fee;"),
    ("li", "below 99.5 percent but at least 99.0 percent: credit of 25 percent of the monthly fee;"),
    ("li", "below 99.0 percent: credit of 50 percent of the monthly fee."),
    ("p", "Credits must be requested by email to the customer success manager within 30 days "
          "after the end of the affected month. Service credits are the sole remedy for missed "
          "uptime and are never paid out in cash."),
    ("h2", "6. Renewal and cancellation"),
    ("p", "Enterprise subscriptions renew automatically for 12 months unless either party gives "
          "written notice of non-renewal at least 60 days before the end of the current term. "
          "Committed fees are non-refundable, except where Larkspur terminates for convenience or "
          "the customer terminates because of a material breach by Larkspur that is not cured "
          "within 30 days, in which case prepaid fees for the remaining term are refunded pro rata."),
    ("h2", "7. Taxes"),
    ("p", "Fees exclude taxes. Customers with a valid tax exemption must provide the certificate "
          "before the first invoice. Withholding tax deducted by the customer must be grossed up "
          "unless the order form states otherwise."),
]

PDF_DOCS["expenses/travel-expense-policy-template.pdf"] = [
    ("h1", "Travel and Expense Policy - Template"),
    ("p", "This template is provided by Larkspur as a starting point for your own company "
          "policy. Copy it, adjust the amounts to your company and region, and then configure "
          "the matching rules in Larkspur under Settings > Expenses > Policy so that violations "
          "are flagged automatically. The amounts below are examples for a US company."),
    ("h2", "1. Scope"),
    ("p", "The policy applies to all employees and contractors who travel or spend money on "
          "behalf of the company. Expenses must be necessary, reasonable and directly related "
          "to company business. Employees are expected to spend company money as carefully as "
          "they would spend their own."),
    ("h2", "2. Air travel"),
    ("p", "Book economy class for all flights with a scheduled duration of under 6 hours. "
          "Premium economy may be booked for flights of 6 hours or more. Business class is "
          "allowed only for flights of more than 10 hours and requires written approval from a "
          "Vice President before booking. Flights should be booked at least 14 days in advance "
          "where possible. Fees for seat selection up to $40 per flight and one checked bag are "
          "reimbursable; upgrades paid with personal loyalty points are the employee's choice."),
    ("h2", "3. Hotels and lodging"),
    ("p", "Nightly room rates, before taxes, should not exceed the cap for the city tier:"),
    ("li", "Tier 1 cities (New York, San Francisco, Boston, London, Zurich, Tokyo): $325 per night."),
    ("li", "Tier 2 cities (Chicago, Seattle, Los Angeles, Paris, Berlin, Sydney): $225 per night."),
    ("li", "Tier 3: all other locations, $160 per night."),
    ("p", "Rooms above the cap need approval from the employee's manager before booking. "
          "Short-term rentals are allowed if they cost less than a hotel room in the same area."),
    ("page",),
    ("h2", "4. Meals and per diem"),
    ("p", "Employees travelling overnight receive a meal per diem of $75 per full travel day, "
          "or $56 on the first and last day of a trip (75 percent). No receipts are needed for "
          "per diem meals. Meals that are provided, such as a conference lunch or a hotel "
          "breakfast included in the room rate, reduce the per diem: $15 for breakfast, $20 for "
          "lunch and $40 for dinner. Client entertainment is reimbursed on actual cost with "
          "receipts, up to $120 per person, and the names and companies of all attendees must "
          "be listed on the expense."),
    ("h2", "5. Ground transport"),
    ("p", "Use public transport, airport trains and shared shuttles where practical. Taxis and "
          "ride-hailing are reimbursable. Rental cars should be compact or intermediate class; "
          "decline the rental company's insurance in the US, as the company policy covers it. "
          "Personal cars are reimbursed per mile at the company rate."),
    ("h2", "6. Items that are not reimbursed"),
    ("li", "Alcohol, except as part of approved client entertainment."),
    ("li", "Traffic and parking fines, and towing charges."),
    ("li", "Personal entertainment such as in-room movies, spa treatments and gym day passes."),
    ("li", "Lost baggage or personal items, and late-checkout fees without manager approval."),
    ("li", "Travel insurance bought by the employee, because the company policy already covers travel."),
    ("h2", "7. Submitting and approving expenses"),
    ("p", "Expenses must be submitted within 30 days of the end of the trip or the purchase. "
          "Expenses submitted more than 90 days late are not reimbursed unless the CFO approves "
          "an exception. Receipts are required for every expense over $75, except per diem meals "
          "and mileage. Managers approve expenses of their direct reports; reports over $5,000 "
          "also need approval from Finance."),
]

PDF_DOCS["account/data-retention-and-privacy.pdf"] = [
    ("h1", "Data Retention, Residency and Privacy"),
    ("p", "This document describes where Larkspur stores customer data, how long it is kept, and "
          "how it is protected. It is intended for security and compliance reviewers. Last "
          "reviewed: September 2024."),
    ("h2", "Data residency"),
    ("p", "When a workspace is created, the Owner chooses a data region: United States (AWS "
          "us-west-2, Oregon) or European Union (AWS eu-central-1, Frankfurt). All customer "
          "content, including receipts, invoices and backups, stays in the chosen region. The "
          "region cannot be changed from the app. Moving an existing workspace to the other "
          "region is possible only for Enterprise customers, is performed by Larkspur engineers "
          "during a scheduled window, and requires about 4 hours of read-only time."),
    ("h2", "Retention periods"),
    ("li", "Receipt images and attachments: kept for 7 years by default. Admins on Business and "
          "Enterprise can choose between 1 and 10 years in Settings > Data > Retention."),
    ("li", "Expense, report and invoice records: kept for as long as the workspace exists."),
    ("li", "Audit log: 2 years on Team and Business, 7 years on Enterprise."),
    ("li", "Application logs containing IP addresses: 90 days."),
    ("li", "Deleted workspaces: 30 days in a restorable state, then erased; backups are overwritten "
          "within a further 35 days."),
    ("p", "When the receipt retention period of a document ends, the image is deleted in the "
          "nightly retention job and replaced with a placeholder. The expense record itself, "
          "including amounts and the merchant, is kept."),
    ("h2", "Encryption"),
    ("p", "Data is encrypted in transit with TLS 1.2 or higher and at rest with AES-256. "
          "Enterprise customers can use customer-managed keys through AWS KMS; revoking the key "
          "makes the workspace unreadable within 15 minutes."),
    ("h2", "Personal data requests"),
    ("p", "Larkspur acts as a processor for the personal data in your workspace. Requests from "
          "employees to access or delete their data should be sent to the workspace Admin, who "
          "can export a member's data from their profile with Export personal data. Larkspur "
          "responds to requests forwarded by customers within 10 business days. A Data "
          "Processing Agreement is incorporated into the terms of service for all plans, and a "
          "signed copy can be downloaded from Settings > Billing > Legal."),
    ("h2", "Subprocessors"),
    ("p", "Larkspur uses a small number of subprocessors, including Amazon Web Services for "
          "hosting, Stripe for payments, Plaid and TrueLayer for bank connections, and SendGrid "
          "for email delivery. The current list is published at larkspur.app/subprocessors, and "
          "customers who subscribe there are notified 30 days before a new subprocessor is added."),
]

PDF_DOCS["invoicing/invoice-template-customization.pdf"] = [
    ("h1", "Customising your invoice template"),
    ("p", "Every invoice, quote and credit note you send from Larkspur is rendered from your "
          "workspace's invoice template. You can change the branding and layout in Invoicing > "
          "Settings > Template. Changes apply to documents created or re-sent after saving; "
          "PDFs that were already downloaded by customers do not change."),
    ("h2", "Logo"),
    ("p", "Upload a PNG, JPG or SVG file up to 2 MB. The logo is scaled to fit a box of at most "
          "240 by 80 pixels in the top-left corner of the invoice. For the sharpest result use an "
          "SVG, or a PNG at least 720 pixels wide with a transparent background."),
    ("h2", "Colours and fonts"),
    ("p", "Choose one brand colour as a six-digit hex code, for example #4B2E83. It is used for "
          "the header bar, table headings and the Pay now button. Larkspur warns you if the "
          "colour has too little contrast with white text. Three fonts are available: Inter "
          "(the default), Source Serif and IBM Plex Mono. Custom font uploads are not supported."),
    ("h2", "Layouts"),
    ("p", "Pick one of three layouts: Classic (address block on the left, totals on the right), "
          "Modern (full-width coloured header) or Compact (smaller margins, fits about 40 line "
          "items on the first page). The paper size can be A4 or US Letter; it is chosen "
          "automatically from the customer's country unless you set it explicitly."),
    ("h2", "Custom fields"),
    ("p", "Add up to 6 custom fields, such as Purchase order, Project code or Contract number. "
          "Each field can be shown in the invoice header or under the line items, and can be "
          "marked as required so that invoices cannot be sent without it."),
    ("h2", "Footer and payment instructions"),
    ("p", "The footer can contain up to 600 characters of text, for example your company "
          "registration number, registered office and bank details for customers who pay by "
          "transfer. Line breaks are kept. Bank details entered here are printed as text only; "
          "they are not verified by Larkspur."),
    ("h2", "Languages"),
    ("p", "Invoice labels such as Invoice, Due date and Total can be printed in 14 languages. The "
          "language is set per customer, so you can send German invoices to German customers and "
          "English invoices to everyone else. Your own line item descriptions are not translated."),
]

PDF_DOCS["integrations/csv-import-format.pdf"] = [
    ("h1", "CSV import format for expenses"),
    ("p", "Admins and Finance Managers can import historical expenses, or expenses from another "
          "tool, with a CSV file. Go to Expenses > Import > Upload CSV. This document describes "
          "the exact file format Larkspur expects."),
    ("h2", "File requirements"),
    ("li", "Encoding: UTF-8. A byte order mark at the start of the file is allowed."),
    ("li", "Delimiter: comma or semicolon. The delimiter is detected from the header row."),
    ("li", "Maximum size: 5,000 rows and 20 MB per file. Split larger files."),
    ("li", "The first row must be a header row with the column names below, in any order."),
    ("h2", "Required columns"),
    ("li", "date - the transaction date in YYYY-MM-DD format, for example 2024-03-28."),
    ("li", "merchant - up to 120 characters."),
    ("li", "amount - a positive number with a dot as decimal separator and no thousands separator, for example 1249.50."),
    ("li", "currency - a three-letter ISO 4217 code such as USD, EUR or GBP."),
    ("li", "member_email - the email of the member the expense belongs to. Unknown emails make the row fail."),
    ("h2", "Optional columns"),
    ("li", "category - must match an existing category name exactly (case-insensitive)."),
    ("li", "description - up to 500 characters."),
    ("li", "project, department - must match existing values."),
    ("li", "billable - true or false."),
    ("li", "receipt_url - an https link to a receipt file; Larkspur downloads and attaches it."),
    ("li", "external_id - your own identifier, used to skip rows that were already imported."),
    ("h2", "How rows are validated"),
    ("p", "Larkspur validates every row before importing anything. The preview shows each row "
          "as valid or invalid with the reason, such as 'Unknown category' or 'Amount must be "
          "positive'. You can import only the valid rows and download the invalid ones as a "
          "separate CSV to fix and upload again. Imported expenses are created in Draft status "
          "in a report called 'Imported on' followed by the date, unless you tick Mark as "
          "approved, which is only allowed for expenses dated more than 30 days ago."),
    ("h2", "Re-importing"),
    ("p", "Rows with an external_id that already exists in the workspace are skipped, so it is "
          "safe to upload the same file twice. Without external_id, Larkspur cannot detect "
          "repeated rows and duplicates will be created."),
]

PDF_DOCS["api/api-changelog-2024.pdf"] = [
    ("h1", "Larkspur API changelog - 2024"),
    ("p", "This changelog lists every change made to the Larkspur REST API during 2024. Breaking "
          "changes are only made in new API versions; additive changes are released continuously."),
    ("h2", "API v1 sunset"),
    ("p", "API v1 is deprecated and will be switched off on 30 June 2025. From 1 March 2025, v1 "
          "responses include a Sunset header and a Deprecation header. Calls to v1 after the "
          "sunset date return 410 Gone. Migrate to v2, where the main differences are amounts "
          "in minor units, cursor pagination and the new webhook signature format."),
    ("h2", "January 2024"),
    ("li", "API v2 reached general availability at https://api.larkspur.app/v2."),
    ("li", "All amounts are now integers in minor units (cents). amount: 1999 means 19.99."),
    ("h2", "March 2024"),
    ("li", "Added the reports:approve scope and POST /v2/reports/{id}/approve."),
    ("li", "Added the Idempotency-Key header for all POST endpoints."),
    ("h2", "May 2024"),
    ("li", "New webhook signature header Larkspur-Signature with the t= and v1= format. The old "
          "X-Larkspur-Hmac header is still sent until 31 December 2024 and then removed."),
    ("li", "Added the card.transaction.declined webhook event."),
    ("h2", "August 2024"),
    ("li", "The employee_id field on expenses and reports is deprecated in favour of member_id. "
          "Both fields are returned until API v3."),
    ("li", "Added POST /v2/expenses/bulk for creating up to 100 expenses in one request."),
    ("h2", "October 2024"),
    ("li", "List endpoints reject limit values above 100 with 400 invalid_parameter instead of "
          "silently using 100."),
    ("li", "Added the updated[gte] filter to all list endpoints for incremental synchronisation."),
    ("h2", "December 2024"),
    ("li", "Added GET /v2/cards and GET /v2/cards/{id}/transactions, available with the new "
          "cards:read scope."),
    ("li", "The OAuth implicit grant was removed. Apps must use the authorization code flow with PKCE."),
    ("p", "Subscribe to API announcements at developers.larkspur.app/changelog to get an email "
          "at least 90 days before any breaking change or sunset."),
]

PDF_DOCS["troubleshooting/error-code-reference.pdf"] = [
    ("h1", "Larkspur application error code reference"),
    ("p", "When something goes wrong in the Larkspur web or mobile app, the error message "
          "includes a code starting with LSP-. This reference explains what each code means and "
          "what to do. Integration errors (QBO-, XERO-, NS-), bank feed errors (BF-), SSO errors "
          "and export errors (EXP-) are documented in their own articles."),
    ("h2", "LSP-1xxx: expenses and receipts"),
    ("li", "LSP-1001 Receipt upload failed. The connection dropped during upload. Try again; "
           "the mobile app retries automatically."),
    ("li", "LSP-1002 File type not supported. Only JPG, PNG, HEIC and PDF receipts are accepted."),
    ("li", "LSP-1003 File too large. Receipts are limited to 15 MB."),
    ("li", "LSP-1010 Expense locked. The expense is part of a submitted or approved report and "
           "cannot be edited. Ask your approver to reject the report first."),
    ("li", "LSP-1014 Category archived. The category was archived by an Admin after the expense "
           "was created; choose another category before submitting."),
    ("li", "LSP-1020 Date in the future. Expenses cannot be dated more than 1 day in the future."),
    ("h2", "LSP-2xxx: approvals and reports"),
    ("li", "LSP-2001 No approver configured. The submitter has no default approver and no "
           "approval rule matches. An Admin must assign an approver."),
    ("li", "LSP-2004 Report already approved. Another approver acted on the report at the same "
           "time. Refresh the page."),
    ("li", "LSP-2009 Approval limit exceeded. The approver has a personal approval limit lower "
           "than the report total; the report moves to the next level automatically."),
    ("li", "LSP-2012 Report too large. Reports can contain at most 200 expenses."),
    ("page",),
    ("h2", "LSP-3xxx: invoicing"),
    ("li", "LSP-3002 Invoice number already used. Another invoice already has this number; "
           "choose a different number or let Larkspur assign the next one."),
    ("li", "LSP-3005 Customer has no email. Add a billing email to the customer before sending."),
    ("li", "LSP-3011 Payments not enabled. Online payment was requested on an invoice, but "
           "Larkspur Payments has not been set up or verification is still pending."),
    ("li", "LSP-3020 Currency not supported. The chosen currency is not one of the 42 supported "
           "invoice currencies."),
    ("h2", "LSP-4xxx: cards and reimbursements"),
    ("li", "LSP-4001 Bank account not verified. The member's reimbursement account is waiting "
           "for micro-deposit confirmation."),
    ("li", "LSP-4007 Payment returned. The receiving bank returned a reimbursement, usually "
           "because the account number is wrong or the account is closed. The amount is credited "
           "back to the company and the report returns to Ready to pay."),
    ("li", "LSP-4012 Card frozen by receipt lock. Add the missing receipts to unfreeze the card."),
    ("h2", "LSP-5xxx: workspace and access"),
    ("li", "LSP-5001 Workspace read-only. The subscription is more than 21 days past due."),
    ("li", "LSP-5003 Seat cap reached. The workspace seat cap prevents new invitations."),
    ("li", "LSP-5010 Permission denied. Your role does not allow this action. Ask an Admin."),
    ("li", "LSP-5099 Unexpected error. Something failed on our side. The message includes a "
           "request ID such as req_8d2f...; please include it when you contact support."),
]

PDF_DOCS["account/admin-onboarding-checklist.pdf"] = [
    ("h1", "Admin onboarding checklist"),
    ("p", "Use this checklist to roll out Larkspur to your company in about four weeks. It is "
          "written for the person who created the workspace and will administer it. Tick each "
          "item as you go; the Onboarding page in Settings tracks most of them automatically."),
    ("h2", "Week 1: Foundations"),
    ("li", "Confirm the base currency and fiscal year start month before any report is approved."),
    ("li", "Add a second Admin so that the workspace is never managed by a single person."),
    ("li", "Turn on Require two-factor authentication for all members."),
    ("li", "Review the 16 default expense categories and archive the ones you do not use."),
    ("li", "Upload your travel policy and configure category limits to match it."),
    ("h2", "Week 2: Accounting and approvals"),
    ("li", "Connect QuickBooks Online, Xero or NetSuite and complete the account mapping."),
    ("li", "Export one test report to check that it lands in the right accounts."),
    ("li", "Create departments and assign a default approver to every member."),
    ("li", "Set an auto-approve threshold if you want small reports to skip manual review."),
    ("h2", "Week 3: Pilot group"),
    ("li", "Invite a pilot group of 5 to 15 frequent travellers and their managers."),
    ("li", "Ask the pilot group to install the mobile app and scan at least three receipts each."),
    ("li", "Run one reimbursement payment run and confirm that the money arrives."),
    ("li", "Collect feedback in a 30-minute call at the end of the week."),
    ("h2", "Week 4: Company-wide launch"),
    ("li", "Import everyone with the CSV invite, or turn on domain joining or SSO."),
    ("li", "Send a launch email with the receipts forwarding address and a link to the help centre."),
    ("li", "Install the Slack app so approvers can act from Slack."),
    ("li", "Switch off the previous expense tool and set a final date for old-style claims."),
    ("p", "Workspaces that finish the checklist within 30 days of creation get a free 45-minute "
          "configuration review with a Larkspur specialist. Book it from Settings > Onboarding "
          "once all items show as complete."),
]

# Source text for the truncated PDF (never shipped intact).
CORRUPT_SOURCE = [
    ("h1", "Annual account statement 2023"),
    ("p", "Statement of subscription charges, credits and payments for the workspace during the "
          "calendar year 2023. This statement is generated automatically at year end."),
    ("h2", "Summary"),
    ("p", "Opening balance, subscription charges, true-up invoices, service credits, refunds and "
          "closing balance are listed month by month below. " * 3),
    ("page",),
    ("h2", "Monthly detail"),
] + [("li", f"Month {m:02d}: subscription charge, seats and payments recorded for the period, "
             f"reference LSK-STM-2023-{m:02d}.") for m in range(1, 13)]


class _ArticlePDF(FPDF):
    def footer(self) -> None:  # page numbers, part of the text layer
        self.set_y(-15)
        self.set_font("helvetica", "", 8)
        self.set_text_color(120, 120, 120)
        self.cell(0, 10, f"Larkspur Help Centre - page {self.page_no()}", align="C")
        self.set_text_color(0, 0, 0)


def render_pdf(blocks: list[tuple], title: str) -> bytes:
    pdf = _ArticlePDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author("Larkspur Labs Inc.")
    pdf.set_creator("data/build_sample_corpus.py")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.set_margins(20, 20, 20)
    pdf.add_page()
    for block in blocks:
        kind = block[0]
        if kind == "page":
            pdf.add_page()
            continue
        text = block[1]
        text.encode("latin-1")  # fail loudly on characters the core font cannot encode
        if kind == "h1":
            pdf.set_font("helvetica", "B", 18)
            pdf.multi_cell(0, 9, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)
        elif kind == "h2":
            pdf.ln(2)
            pdf.set_font("helvetica", "B", 13)
            pdf.multi_cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        elif kind == "p":
            pdf.set_font("helvetica", "", 11)
            pdf.multi_cell(0, 5.5, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        elif kind == "li":
            pdf.set_font("helvetica", "", 11)
            pdf.set_x(pdf.l_margin + 4)
            pdf.multi_cell(0, 5.5, "- " + text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        else:
            raise ValueError(f"unknown block type {kind!r}")
    return bytes(pdf.output())


def render_scanned_receipt() -> bytes:
    """A 'scanned receipt' look made only of drawn shapes: no text objects at all."""
    rng = random.Random(20240314)
    pdf = FPDF(unit="mm", format=(80, 200))
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_auto_page_break(False)
    pdf.add_page()
    # grey paper background with a slight border, like a scan
    pdf.set_fill_color(238, 236, 230)
    pdf.rect(0, 0, 80, 200, style="F")
    pdf.set_fill_color(252, 251, 247)
    pdf.rect(6, 4, 68, 192, style="F")
    # logo block
    pdf.set_fill_color(60, 60, 60)
    pdf.ellipse(32, 10, 16, 16, style="F")
    # "printed lines" as thin dark bars of varying width
    y = 32.0
    pdf.set_fill_color(70, 70, 70)
    for section in range(4):
        for _ in range(rng.randint(3, 6)):
            left = rng.uniform(24, 40)
            pdf.rect(10, y, left, 1.6, style="F")
            right = rng.uniform(8, 14)
            pdf.rect(70 - right, y, right, 1.6, style="F")
            y += 4.2
        # dashed separator
        pdf.set_draw_color(90, 90, 90)
        pdf.set_line_width(0.3)
        x = 10.0
        while x < 70:
            pdf.line(x, y + 1, min(x + 2, 70), y + 1)
            x += 3.5
        y += 5
    # total line, thicker
    pdf.set_fill_color(30, 30, 30)
    pdf.rect(10, y, 22, 2.6, style="F")
    pdf.rect(52, y, 18, 2.6, style="F")
    y += 10
    # barcode
    x = 12.0
    while x < 68:
        w = rng.choice([0.3, 0.5, 0.8, 1.1])
        pdf.rect(x, y, w, 14, style="F")
        x += w + rng.choice([0.4, 0.6, 0.9])
    # fold crease and a few specks, to look scanned
    pdf.set_draw_color(200, 198, 190)
    pdf.set_line_width(0.2)
    pdf.line(6, 100, 74, 101)
    pdf.set_fill_color(160, 160, 160)
    for _ in range(25):
        pdf.ellipse(rng.uniform(7, 72), rng.uniform(5, 194), 0.4, 0.4, style="F")
    return bytes(pdf.output())


def make_xlsx() -> bytes:
    """A small but real XLSX workbook (unsupported format for the pipeline)."""
    files = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<sheets><sheet name="Seats" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>'
            "</Relationships>"
        ),
    }
    rows = [("Plan", "Seats", "Price per seat", "Monthly total")]
    for plan, price in (("Team", 9), ("Business", 16)):
        for seats in (10, 25, 50):
            rows.append((plan, str(seats), str(price), str(seats * price)))
    xml_rows = []
    for r, row in enumerate(rows, start=1):
        cells = "".join(
            f'<c r="{chr(65 + c)}{r}" t="inlineStr"><is><t>{v}</t></is></c>' for c, v in enumerate(row)
        )
        xml_rows.append(f'<row r="{r}">{cells}</row>')
    files["xl/worksheets/sheet1.xml"] = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        + "".join(xml_rows)
        + "</sheetData></worksheet>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 11, 4, 9, 30, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, content)
    return buf.getvalue()


LATIN1_NOTES = (
    "Notes de réunion - équipe facturation (ancien système)\n\n"
    "Échéancier révisé : les relevés de dépenses doivent être déposés avant le 5 du mois. "
    "Les reçus égarés seront traités au cas par cas ; prévoir une déclaration signée.\n"
    "Réunion à Genève : hôtel réservé, déjeuner d'équipe à la brasserie, café offert.\n"
    "Cuenta de viáticos: año fiscal, señal de aprobación, niño, pequeño café en la estación.\n"
    "Prüfung der Belege: Übernachtung, Verpflegungsmehraufwand, Gebühren für Überweisung.\n"
    "À faire : vérifier les écarts de change, créer les notes de crédit, résumé détaillé.\n"
)

# name -> (relative path, reason). The README documents the same list.
BAD_FILES = {
    "empty": "invoicing/draft-empty.md",
    "whitespace": "troubleshooting/blank-whitespace.txt",
    "corrupt_pdf": "billing/annual-statement-2023-corrupt.pdf",
    "no_text_pdf": "expenses/scanned-receipt-no-text.pdf",
    "bad_json": "integrations/hubspot-sync-broken.json",
    "binary_txt": "troubleshooting/crash-dump-binary.txt",
    "latin1_txt": "account/legacy-notes-latin1.txt",
    "unsupported": "billing/pricing-calculator.xlsx",
}


def build_bad_files() -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    out[BAD_FILES["empty"]] = b""
    out[BAD_FILES["whitespace"]] = b"   \n\t\n        \r\n\n \t \n\n"
    full = render_pdf(CORRUPT_SOURCE, "Annual account statement 2023")
    out[BAD_FILES["corrupt_pdf"]] = full[: int(len(full) * 0.4)]
    out[BAD_FILES["no_text_pdf"]] = render_scanned_receipt()
    out[BAD_FILES["bad_json"]] = (
        b'{\n  "id": "kb-3120",\n  "title": "Syncing contacts with HubSpot",\n'
        b'  "category": "Integrations",\n'
        b'  "body": "The HubSpot integration imports companies as Larkspur customers.\n\n'
        b'Contacts are matched by email address",\n'
        b'  "tags": ["hubspot", "crm",]\n'
    )  # raw newlines inside a string, trailing comma, missing closing brace
    rng = random.Random(1337)
    blob = bytearray(rng.randbytes(4096))
    for i in range(0, len(blob), 37):  # plenty of NULs
        blob[i] = 0
    out[BAD_FILES["binary_txt"]] = b"\x7fELF\x02\x01\x01\x00" + bytes(blob)
    out[BAD_FILES["latin1_txt"]] = LATIN1_NOTES.encode("latin-1")
    out[BAD_FILES["unsupported"]] = make_xlsx()
    return out


def build_all() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for rel, blocks in PDF_DOCS.items():
        files[rel] = render_pdf(blocks, blocks[0][1])
    files.update(build_bad_files())
    return files


def check(corpus: Path) -> int:
    from pypdf import PdfReader

    problems = 0
    for rel in PDF_DOCS:
        reader = PdfReader(corpus / rel)
        text = "".join(p.extract_text() or "" for p in reader.pages)
        words = len(text.split())
        print(f"  ok   {rel}: {len(reader.pages)} page(s), {words} words")
        if words < 100:
            problems += 1
            print("       ^ expected a real text layer")
    reader = PdfReader(corpus / BAD_FILES["no_text_pdf"])
    text = "".join(p.extract_text() or "" for p in reader.pages)
    print(f"  bad  {BAD_FILES['no_text_pdf']}: {len(reader.pages)} page(s), text={text!r}")
    problems += bool(text.strip())
    try:
        reader = PdfReader(corpus / BAD_FILES["corrupt_pdf"])
        text = "".join(p.extract_text() or "" for p in reader.pages)
        print(f"  bad  {BAD_FILES['corrupt_pdf']}: parsed, {len(reader.pages)} pages, text={text[:40]!r}")
        problems += bool(text.strip())
    except Exception as exc:  # noqa: BLE001 - any parse failure is the expected outcome
        print(f"  bad  {BAD_FILES['corrupt_pdf']}: fails to parse ({type(exc).__name__}: {exc})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CORPUS_DIR, help="corpus directory (default: %(default)s)")
    parser.add_argument("--check", action="store_true", help="verify the PDFs with pypdf after writing")
    args = parser.parse_args(argv)

    for rel, data in build_all().items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"wrote {rel} ({len(data)} bytes)")
    if args.check:
        problems = check(args.out)
        print("check:", "OK" if not problems else f"{problems} problem(s)")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
