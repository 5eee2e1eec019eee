//! Documents payhub renders from stored data, identical byte for byte
//! every time they are rendered from the same data (DESIGN.md: "rendered
//! by one shared crate from stored data, and their hash is stored with
//! them"). The first is the payment receipt ("comprovante", issue 12 §2),
//! as an A4 PDF and as a narrow PDF for 80 mm receipt printers.
//!
//! Determinism: krilla writes no random ids and no clock (its document id
//! is a hash of the content); the creation date is the payment's time, the
//! font is compiled in (DejaVu Sans Mono, so that columns line up without a
//! layout engine), and every text line is laid out here from the data.
//! Because the bytes follow from the data, payhub records a receipt's hash
//! rather than its bytes; `tests::the_sample_receipts_render_to_their_pinned_hashes`
//! fails when anything (this code, krilla, the fonts) would change the bytes
//! of receipts already issued, and [`RENDERER`] names what rendered one.
//!
//! Cost (one receipt is rendered per layout per paid order, on the order's
//! path): the fonts are stored without hinting and with a short `name`
//! table (`fonts/README.md`), and content streams are written uncompressed;
//! the embedded font subsets stay compressed. A receipt takes about 1.2 ms
//! and 22–25 kB instead of 3.3 ms and 25 kB.

use krilla::Document;
use krilla::geom::{PathBuilder, Point};
use krilla::metadata::{DateTime, Metadata};
use krilla::page::PageSettings;
use krilla::paint::Stroke;
use krilla::text::{Font, TextDirection};
use payhub_core::order::Item;
use payhub_core::{Currency, Money};
use std::sync::LazyLock;
use time::OffsetDateTime;

static REGULAR: LazyLock<Font> = LazyLock::new(|| {
    Font::new(
        krilla::Data::from(&include_bytes!("../fonts/DejaVuSansMono.ttf")[..]),
        0,
    )
    .expect("the bundled DejaVu Sans Mono parses")
});
static BOLD: LazyLock<Font> = LazyLock::new(|| {
    Font::new(
        krilla::Data::from(&include_bytes!("../fonts/DejaVuSansMono-Bold.ttf")[..]),
        0,
    )
    .expect("the bundled DejaVu Sans Mono Bold parses")
});

/// What renders receipts, recorded beside each receipt's hash. Change it
/// (and the pinned hashes in the tests) only with a way to reproduce the
/// receipts already issued.
pub const RENDERER: &str = "payhub-documents/1 krilla-0.8 dejavu-sans-mono-2.37-unhinted";

/// DejaVu Sans Mono's advance: 1233 of 2048 units per em.
const ADVANCE_PER_EM: f32 = 1233.0 / 2048.0;

/// The two layouts of a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// A4 portrait, paginated.
    A4,
    /// 80 mm wide, one page as long as the receipt ("enviar para impressão").
    Roll80,
}

impl Layout {
    pub const ALL: [Layout; 2] = [Layout::A4, Layout::Roll80];

    /// The name in URLs and the database: `a4`, `80mm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::A4 => "a4",
            Layout::Roll80 => "80mm",
        }
    }

    pub fn parse(s: &str) -> Option<Layout> {
        Layout::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// (page width, font size, margin, characters per line) in points.
    fn geometry(self) -> (f32, f32, f32, usize) {
        match self {
            // 595.28 pt wide; 10 pt mono is 6.02 pt a character: 80 columns in 48 pt margins.
            Layout::A4 => (595.28, 10.0, 56.0, 80),
            // 80 mm = 226.77 pt; printers print about 72 mm: 42 columns of 8 pt.
            Layout::Roll80 => (226.77, 8.0, 12.0, 42),
        }
    }
}

/// How the order was paid, and the provider's proof of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    Pix {
        end_to_end_id: Option<String>,
    },
    Card {
        brand: Option<String>,
        /// `4111 •••• •••• 1111`; never the number.
        masked: Option<String>,
        auth_code: Option<String>,
        transaction_id: Option<String>,
    },
}

/// Everything a receipt shows, read from the stored order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub shop_name: String,
    pub correlation_id: String,
    /// payhub's id of the order: its unique payment code.
    pub order_id: String,
    pub items: Vec<Item>,
    pub items_total: Money,
    pub tax: Money,
    pub freight: Money,
    pub discount: Money,
    pub total: Money,
    pub proof: Proof,
    pub provider: String,
    pub provider_charge_id: Option<String>,
    pub customer_name: String,
    /// The buyer's CPF/CNPJ, masked.
    pub customer_tax_id: String,
    pub paid_at: OffsetDateTime,
    /// The shop's time zone, as an offset from UTC in hours.
    pub utc_offset_hours: i8,
}

/// The shop's time zone when it names none: where its currency is used.
pub fn default_utc_offset_hours(currency: Currency) -> i8 {
    match currency {
        Currency::Brl => -3,
        Currency::Hnl | Currency::Nio | Currency::Usd => -6,
        Currency::Cop => -5,
    }
}

/// An amount as buyers read it: `R$ 10,00`, `L 10.00`, `US$ 10.00`, `C$ 10.00`.
pub fn money_text(amount: Money) -> String {
    let major = amount.to_major_string();
    match amount.currency() {
        Currency::Brl => format!("R$ {}", major.replace('.', ",")),
        Currency::Hnl => format!("L {major}"),
        Currency::Usd => format!("US$ {major}"),
        Currency::Nio => format!("C$ {major}"),
        Currency::Cop => format!("COP {major}"),
    }
}

/// A rendered document and its SHA-256, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub sha256: Vec<u8>,
}

impl Rendered {
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the PDF could not be written: {0}")]
    Pdf(String),
}

/// A line of the receipt: its text and whether it is bold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Text(String, bool),
    Rule,
}

fn pad_between(left: &str, right: &str, width: usize) -> String {
    let l = left.chars().count();
    let r = right.chars().count();
    if l + r + 1 > width {
        // Too long: the left side gives way.
        let keep = width.saturating_sub(r + 2);
        let cut: String = left.chars().take(keep).collect();
        return format!("{cut}… {right}");
    }
    format!("{left}{}{right}", " ".repeat(width - l - r))
}

/// Wraps `text` at spaces to `width` characters (a word longer than a
/// line is cut).
fn wrap(text: &str, width: usize, indent: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    let pad = " ".repeat(indent);
    for word in text.split_whitespace() {
        let room = width - if out.is_empty() { 0 } else { indent };
        let mut word: String = word.to_string();
        while word.chars().count() > room {
            if !line.is_empty() {
                out.push(std::mem::take(&mut line));
            }
            let head: String = word.chars().take(room).collect();
            out.push(head);
            word = word.chars().skip(room).collect();
        }
        if line.is_empty() {
            line = word;
        } else if line.chars().count() + 1 + word.chars().count() <= room {
            line.push(' ');
            line.push_str(&word);
        } else {
            out.push(std::mem::take(&mut line));
            line = word;
        }
    }
    if !line.is_empty() {
        out.push(line);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, l)| if i == 0 { l } else { format!("{pad}{l}") })
        .collect()
}

fn local_time(r: &Receipt) -> (OffsetDateTime, String) {
    let offset = time::UtcOffset::from_hms(r.utc_offset_hours, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let t = r.paid_at.to_offset(offset);
    let sign = if r.utc_offset_hours < 0 { '-' } else { '+' };
    let text = format!(
        "{:02}/{:02}/{} {:02}:{:02}:{:02} (UTC{sign}{:02}:00)",
        t.day(),
        u8::from(t.month()),
        t.year(),
        t.hour(),
        t.minute(),
        t.second(),
        r.utc_offset_hours.unsigned_abs()
    );
    (t, text)
}

/// The receipt's lines for `width` characters.
fn lines(r: &Receipt, width: usize) -> Vec<Line> {
    let mut out = Vec::new();
    let text = |s: String| Line::Text(s, false);
    out.push(Line::Text("COMPROVANTE DE PAGAMENTO".into(), true));
    for l in wrap(&r.shop_name, width, 0) {
        out.push(Line::Text(l, true));
    }
    out.push(Line::Rule);
    out.push(text(pad_between("Pedido", &r.correlation_id, width)));
    let (_, when) = local_time(r);
    out.push(text(pad_between("Pago em", &when, width)));
    out.push(text(pad_between("Comprador", &r.customer_name, width)));
    out.push(text(pad_between("CPF/CNPJ", &r.customer_tax_id, width)));
    out.push(Line::Rule);
    out.push(Line::Text(pad_between("Item", "Total", width), true));
    for item in &r.items {
        let head = format!("{} x {}", item.qty, item.title);
        let total = money_text(item.total);
        let wrapped = wrap(&head, width.saturating_sub(total.chars().count() + 1), 4);
        for (i, l) in wrapped.iter().enumerate() {
            if i == 0 {
                out.push(text(pad_between(l, &total, width)));
            } else {
                out.push(text(l.clone()));
            }
        }
        let mut detail = format!("un. {}", money_text(item.unit_price));
        if item.tax.minor() > 0 {
            detail.push_str(&format!("  imposto {}", money_text(item.tax)));
        }
        if let Some(code) = &item.code {
            detail.push_str(&format!("  cód. {code}"));
        }
        for l in wrap(&detail, width.saturating_sub(4), 0) {
            out.push(text(format!("    {l}")));
        }
    }
    out.push(Line::Rule);
    out.push(text(pad_between("Itens", &money_text(r.items_total), width)));
    out.push(text(pad_between("Impostos", &money_text(r.tax), width)));
    out.push(text(pad_between("Frete", &money_text(r.freight), width)));
    let discount = if r.discount.minor() > 0 {
        format!("- {}", money_text(r.discount))
    } else {
        money_text(r.discount)
    };
    out.push(text(pad_between("Desconto", &discount, width)));
    out.push(Line::Text(pad_between("TOTAL PAGO", &money_text(r.total), width), true));
    out.push(Line::Rule);
    match &r.proof {
        Proof::Pix { end_to_end_id } => {
            out.push(text(pad_between("Forma de pagamento", "PIX", width)));
            out.push(text("ID da transação PIX (endToEndId):".into()));
            for l in wrap(end_to_end_id.as_deref().unwrap_or("-"), width, 0) {
                out.push(text(l));
            }
        }
        Proof::Card {
            brand,
            masked,
            auth_code,
            transaction_id,
        } => {
            out.push(text(pad_between(
                "Forma de pagamento",
                format!("Cartão {}", brand.as_deref().unwrap_or("")).trim_end(),
                width,
            )));
            out.push(text(pad_between("Cartão", masked.as_deref().unwrap_or("-"), width)));
            out.push(text(pad_between(
                "Autorização",
                auth_code.as_deref().unwrap_or("-"),
                width,
            )));
            if let Some(t) = transaction_id {
                out.push(text("Transação:".into()));
                for l in wrap(t, width, 0) {
                    out.push(text(l));
                }
            }
        }
    }
    out.push(text(pad_between("Provedor", &r.provider, width)));
    if let Some(c) = &r.provider_charge_id {
        out.push(text("Cobrança no provedor:".into()));
        for l in wrap(c, width, 0) {
            out.push(text(l));
        }
    }
    out.push(text("Código de pagamento (payhub):".into()));
    for l in wrap(&r.order_id, width, 0) {
        out.push(text(l));
    }
    out.push(Line::Rule);
    for l in wrap(
        "Documento sem valor fiscal. A nota fiscal, quando emitida, é enviada à parte.",
        width,
        0,
    ) {
        out.push(text(l));
    }
    out
}

/// Renders `receipt` in `layout`; the same receipt always gives the same bytes.
pub fn render(receipt: &Receipt, layout: Layout) -> Result<Rendered, RenderError> {
    let (page_width, size, margin, columns) = layout.geometry();
    let leading = size * 1.35;
    let all = lines(receipt, columns);
    let pages: Vec<&[Line]> = match layout {
        Layout::A4 => {
            let per_page = ((841.89 - 2.0 * margin) / leading).floor() as usize;
            all.chunks(per_page.max(1)).collect()
        }
        Layout::Roll80 => vec![&all[..]],
    };
    let (local, _) = local_time(receipt);
    let sheet = Sheet {
        page_width,
        fixed_height: (layout == Layout::A4).then_some(841.89),
        size,
        margin,
        columns,
    };
    write_pdf(
        format!("Comprovante {}", receipt.correlation_id),
        local,
        receipt.utc_offset_hours,
        &sheet,
        &pages,
    )
}

/// A page shape: its width, its height (`None`: as long as its lines),
/// the font size, the margin and the characters a line holds.
struct Sheet {
    page_width: f32,
    fixed_height: Option<f32>,
    size: f32,
    margin: f32,
    columns: usize,
}

/// Writes `pages` of monospaced lines as a PDF; `created` (in UTC
/// `offset_hours`) is the document's date, taken from the data, never the
/// clock.
fn write_pdf(
    title: String,
    created: OffsetDateTime,
    offset_hours: i8,
    sheet: &Sheet,
    pages: &[&[Line]],
) -> Result<Rendered, RenderError> {
    let Sheet {
        page_width,
        fixed_height,
        size,
        margin,
        columns,
    } = *sheet;
    let leading = size * 1.35;
    // Content streams uncompressed: a deflate stream costs more to set up
    // than the few kilobytes it saves here (font subsets stay compressed);
    // no XMP packet: the same metadata is in the document information.
    let mut doc = Document::new_with(krilla::SerializeSettings {
        compress_content_streams: false,
        xmp_metadata: false,
        ..Default::default()
    });
    doc.set_metadata(
        Metadata::new()
            .title(title)
            .creator("payhub".into())
            .producer("payhub".into())
            .language("pt-BR".into())
            .creation_date(
                DateTime::new(created.year() as u16)
                    .month(u8::from(created.month()))
                    .day(created.day())
                    .hour(created.hour())
                    .minute(created.minute())
                    .second(created.second())
                    .utc_offset_hour(offset_hours)
                    .utc_offset_minute(0),
            ),
    );
    for chunk in pages {
        let height = fixed_height.unwrap_or(2.0 * margin + leading * chunk.len() as f32);
        let settings = PageSettings::from_wh(page_width, height)
            .ok_or_else(|| RenderError::Pdf(format!("bad page size {page_width}x{height}")))?;
        let mut page = doc.start_page_with(settings);
        let mut surface = page.surface();
        let mut y = margin + size;
        for line in chunk.iter() {
            match line {
                Line::Text(t, bold) => {
                    let font = if *bold { BOLD.clone() } else { REGULAR.clone() };
                    surface.draw_text(Point::from_xy(margin, y), font, size, t, false, TextDirection::Auto);
                }
                Line::Rule => {
                    let mut pb = PathBuilder::new();
                    let mid = y - size * 0.35;
                    pb.move_to(margin, mid);
                    pb.line_to(margin + columns as f32 * size * ADVANCE_PER_EM, mid);
                    if let Some(path) = pb.finish() {
                        surface.set_fill(None);
                        surface.set_stroke(Some(Stroke {
                            width: 0.5,
                            ..Default::default()
                        }));
                        surface.draw_path(&path);
                        surface.set_stroke(None);
                        surface.set_fill(Some(Default::default()));
                    }
                }
            }
            y += leading;
        }
        surface.finish();
        page.finish();
    }
    let bytes = doc.finish().map_err(|e| RenderError::Pdf(format!("{e:?}")))?;
    let sha256 = ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref().to_vec();
    Ok(Rendered { bytes, sha256 })
}

/// A line of a management report's PDF (issue 13 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportLine {
    /// A heading, in bold.
    Heading(String),
    /// A line of text (cut to the page's width).
    Text(String),
    /// A label on the left and its value on the right.
    Pair(String, String),
    /// A horizontal rule.
    Rule,
}

/// Characters a line of a report's PDF holds (A4, 10 pt mono).
pub const REPORT_COLUMNS: usize = 80;

/// Renders a management report as an A4 PDF in the receipts' font and
/// manner: the same lines and date always give the same bytes. `created`
/// is the end of the report's period (never the clock).
pub fn render_report(
    title: &str,
    lines: &[ReportLine],
    created: OffsetDateTime,
    offset_hours: i8,
) -> Result<Rendered, RenderError> {
    let (page_width, size, margin, columns) = Layout::A4.geometry();
    let leading = size * 1.35;
    let mut all = Vec::new();
    for l in lines {
        match l {
            ReportLine::Heading(t) => all.extend(wrap(t, columns, 0).into_iter().map(|t| Line::Text(t, true))),
            ReportLine::Text(t) => all.extend(wrap(t, columns, 2).into_iter().map(|t| Line::Text(t, false))),
            ReportLine::Pair(k, v) => all.push(Line::Text(pad_between(k, v, columns), false)),
            ReportLine::Rule => all.push(Line::Rule),
        }
    }
    let per_page = ((841.89 - 2.0 * margin) / leading).floor() as usize;
    let pages: Vec<&[Line]> = all.chunks(per_page.max(1)).collect();
    let created = created.to_offset(time::UtcOffset::from_hms(offset_hours, 0, 0).unwrap_or(time::UtcOffset::UTC));
    write_pdf(
        title.to_string(),
        created,
        offset_hours,
        &Sheet {
            page_width,
            fixed_height: Some(841.89),
            size,
            margin,
            columns,
        },
        &pages,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brl(m: i64) -> Money {
        Money::from_minor(m, Currency::Brl)
    }

    pub fn sample() -> Receipt {
        Receipt {
            shop_name: "Loja Teste".into(),
            correlation_id: "pedido-1001".into(),
            order_id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            items: vec![
                Item {
                    code: Some("0000123".into()),
                    title: "Camiseta Branca Unissex".into(),
                    description: None,
                    unit_price: brl(9990),
                    qty: 2,
                    tax: brl(300),
                    total: brl(19980),
                },
                Item {
                    code: None,
                    title: "Meia esportiva de algodão com cano longo e reforço no calcanhar".into(),
                    description: None,
                    unit_price: brl(1999),
                    qty: 1,
                    tax: brl(0),
                    total: brl(1999),
                },
            ],
            items_total: brl(21979),
            tax: brl(300),
            freight: brl(1500),
            discount: brl(1000),
            total: brl(22779),
            proof: Proof::Pix {
                end_to_end_id: Some("E18236120202612021505s0123456789".into()),
            },
            provider: "openpix".into(),
            provider_charge_id: Some("Q2hhcmdlOjYwM2U3NDlhNDI1NjAyYmJiZjRlN2JlZA==".into()),
            customer_name: "Maria Oliveira".into(),
            customer_tax_id: "470******50".into(),
            paid_at: time::macros::datetime!(2026-12-02 18:04:05 UTC),
            utc_offset_hours: -3,
        }
    }

    #[test]
    fn the_same_receipt_renders_to_the_same_bytes_in_both_layouts() {
        for layout in Layout::ALL {
            let a = render(&sample(), layout).unwrap();
            let b = render(&sample(), layout).unwrap();
            assert_eq!(a, b, "{layout:?}");
            assert!(a.bytes.starts_with(b"%PDF-"), "{layout:?}");
            assert_eq!(a.sha256.len(), 32);
        }
        let a4 = render(&sample(), Layout::A4).unwrap();
        let roll = render(&sample(), Layout::Roll80).unwrap();
        assert_ne!(a4.sha256, roll.sha256);
        let mut other = sample();
        other.total = brl(22780);
        assert_ne!(render(&other, Layout::A4).unwrap().sha256, a4.sha256);
    }

    /// Receipts already issued are reproduced from their stored order and
    /// checked against their recorded hash: these bytes must never change
    /// under a receipt that was issued. If this fails after a dependency or
    /// font update, keep the old renderer for old receipts (see [`RENDERER`]).
    #[test]
    fn the_sample_receipts_render_to_their_pinned_hashes() {
        let got: Vec<String> = Layout::ALL
            .iter()
            .map(|l| render(&sample(), *l).unwrap().sha256_hex())
            .collect();
        assert_eq!(got, PINNED, "{got:#?}");
    }

    const PINNED: [&str; 2] = [
        "7cb54164bb814a02dc4ec634b48eddcc20ed230e20898b627002ca91c8237953",
        "f3299e8103b14de45467b254a51f50daaa0e8e8cedba84ad2ec6aa5abd5ddc83",
    ];

    #[test]
    fn the_lines_hold_what_a_receipt_must_show() {
        let text: Vec<String> = lines(&sample(), 42)
            .into_iter()
            .filter_map(|l| match l {
                Line::Text(t, _) => Some(t),
                Line::Rule => None,
            })
            .collect();
        assert!(text.iter().all(|l| l.chars().count() <= 42), "{text:#?}");
        let all = text.join("\n");
        for want in [
            "Loja Teste",
            "pedido-1001",
            "02/12/2026 15:04:05 (UTC-03:00)",
            "R$ 199,80",
            "R$ 15,00",
            "- R$ 10,00",
            "R$ 227,79",
            "E18236120202612021505s0123456789",
            "PIX",
        ] {
            assert!(all.contains(want), "{want} missing from\n{all}");
        }
        let mut card = sample();
        card.proof = Proof::Card {
            brand: Some("visa".into()),
            masked: Some("4111 •••• •••• 1111".into()),
            auth_code: Some("593782".into()),
            transaction_id: None,
        };
        let all: String = lines(&card, 80)
            .into_iter()
            .filter_map(|l| match l {
                Line::Text(t, _) => Some(t + "\n"),
                Line::Rule => None,
            })
            .collect();
        assert!(all.contains("4111 •••• •••• 1111") && all.contains("593782") && all.contains("Cartão visa"));
    }

    #[test]
    fn a_report_renders_to_the_same_bytes_and_pages_when_long() {
        let mut lines = vec![
            ReportLine::Heading("Relatório diário — Loja Teste".into()),
            ReportLine::Rule,
        ];
        for i in 0..120 {
            lines.push(ReportLine::Pair(format!("linha {i}"), format!("R$ {i},00")));
        }
        lines.push(ReportLine::Text("uma frase longa ".repeat(20)));
        let at = time::macros::datetime!(2026-12-03 03:00:00 UTC);
        let a = render_report("Relatório", &lines, at, -3).unwrap();
        let b = render_report("Relatório", &lines, at, -3).unwrap();
        assert_eq!(a, b);
        assert!(a.bytes.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&a.bytes).replace([' ', '\n', '\r'], "");
        let pages = text.matches("/Type/Page").count() - text.matches("/Type/Pages").count();
        assert!(pages >= 2, "120 lines need two A4 pages ({pages})");
        lines.push(ReportLine::Text("mais uma".into()));
        assert_ne!(render_report("Relatório", &lines, at, -3).unwrap().sha256, a.sha256);
    }

    #[test]
    fn wrapping_keeps_every_word() {
        let w = wrap("um dois três quatro cinco seis", 10, 2);
        assert_eq!(w, vec!["um dois", "  três", "  quatro", "  cinco", "  seis"]);
        assert_eq!(pad_between("a", "b", 5), "a   b");
    }
}
