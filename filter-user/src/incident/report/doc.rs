//! A report as a list of blocks, written out as Markdown and as HTML: one model, so the
//! two files always say the same thing.

use std::fmt::Write as _;

/// Inline text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Span {
    Text(String),
    /// Code, a reason key, a file name: shown in a fixed-width font.
    Code(String),
    Link {
        text: String,
        href: String,
    },
}

pub fn text(s: impl Into<String>) -> Span {
    Span::Text(s.into())
}

pub fn code(s: impl Into<String>) -> Span {
    Span::Code(s.into())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    /// Level 1 to 3.
    Heading(u8, String),
    Para(Vec<Span>),
    /// Columns from `right_from` on are numbers, right-aligned.
    Table {
        header: Vec<String>,
        right_from: usize,
        rows: Vec<Vec<String>>,
    },
    /// The chart: the PNG in Markdown (what mail and viewers show), the SVG in HTML.
    Chart {
        png: String,
        svg: String,
        alt: String,
    },
    /// Commands to type, one per line.
    Commands(Vec<String>),
}

#[derive(Clone, Debug, Default)]
pub struct Doc(pub Vec<Block>);

impl Doc {
    pub fn push(&mut self, b: Block) {
        self.0.push(b);
    }

    pub fn heading(&mut self, level: u8, s: impl Into<String>) {
        self.push(Block::Heading(level, s.into()));
    }

    pub fn para(&mut self, spans: Vec<Span>) {
        self.push(Block::Para(spans));
    }

    pub fn table(&mut self, header: &[&str], right_from: usize, rows: Vec<Vec<String>>) {
        let header = header.iter().map(|h| h.to_string()).collect();
        self.push(Block::Table { header, right_from, rows });
    }

    pub fn markdown(&self) -> String {
        let blocks: Vec<String> = self.0.iter().map(md_block).collect();
        blocks.join("\n\n") + "\n"
    }

    /// A whole page: inline CSS, nothing fetched from elsewhere.
    pub fn html(&self, title: &str) -> String {
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n",
            esc(title)
        );
        for b in &self.0 {
            out.push_str(&html_block(b));
            out.push('\n');
        }
        out.push_str("</body>\n</html>\n");
        out
    }
}

const CSS: &str = "\
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif;
       max-width: 64rem; margin: 2rem auto; padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { padding: 0.2rem 0.7rem; border-bottom: 1px solid #e4e4e4; text-align: left; }
th { background: #f4f4f4; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 0.92em; }
code { background: #f2f2f2; padding: 0 0.2em; border-radius: 3px; }
pre { background: #f6f6f6; padding: 0.6rem 0.8rem; border-radius: 4px; overflow-x: auto; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #555; }
";

/// Control characters (a hook's colour codes, a stray escape) as `\u{1b}`: a report
/// carries text from hooks and peers, and must not carry their terminal commands.
fn visible(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { c.escape_unicode().to_string() } else { c.to_string() })
        .collect()
}

/// Markdown text outside code: the characters that would start markup, escaped.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in visible(s).chars() {
        if matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '|') {
            out.push('\\');
        }
        out.push(if c == '\n' { ' ' } else { c });
    }
    out
}

/// A code span that survives backticks inside it.
fn md_code(s: &str) -> String {
    let s = &visible(s).replace('\n', " ");
    let fence = if s.contains('`') { "``" } else { "`" };
    let pad = if s.starts_with('`') || s.ends_with('`') { " " } else { "" };
    format!("{fence}{pad}{s}{pad}{fence}")
}

fn md_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(t) => md_text(t),
            Span::Code(c) => md_code(c),
            Span::Link { text, href } => format!("[{}]({href})", md_text(text)),
        })
        .collect()
}

/// A table cell: one line, no column separator.
fn md_cell(s: &str) -> String {
    visible(s).replace('\\', "\\\\").replace('|', "\\|").replace('\n', " ")
}

/// A pipe table with its columns padded, so the raw text reads as a table too.
fn md_table(header: &[String], right_from: usize, rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(header)
        .chain(rows.iter().map(Vec::as_slice))
        .map(|r| r.iter().map(|c| md_cell(c)).collect())
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| cells.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0).max(3))
        .collect();
    let line = |row: &[String]| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let c = row.get(i).map_or("", String::as_str);
            let _ = if i >= right_from { write!(s, " {c:>w$} |") } else { write!(s, " {c:<w$} |") };
        }
        s
    };
    let rule: String = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i >= right_from {
                format!(" {}: |", "-".repeat(w - 1))
            } else {
                format!(" {} |", "-".repeat(*w))
            }
        })
        .collect();
    let mut out = vec![line(&cells[0]), format!("|{rule}")];
    out.extend(cells[1..].iter().map(|r| line(r)));
    out.join("\n")
}

fn md_block(b: &Block) -> String {
    match b {
        Block::Heading(level, t) => format!("{} {}", "#".repeat(usize::from(*level)), md_text(t)),
        Block::Para(spans) => md_spans(spans),
        Block::Table { header, right_from, rows } => md_table(header, *right_from, rows),
        Block::Chart { png, svg, alt } => {
            format!("![{}]({png})\n\n(Vector version: [{svg}]({svg}).)", md_text(alt))
        }
        Block::Commands(lines) => format!("```sh\n{}\n```", lines.join("\n")),
    }
}

/// HTML text: `&`, `<`, `>` and quotes escaped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in visible(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(t) => esc(t),
            Span::Code(c) => format!("<code>{}</code>", esc(c)),
            Span::Link { text, href } => format!("<a href=\"{}\">{}</a>", esc(href), esc(text)),
        })
        .collect()
}

fn html_table(header: &[String], right_from: usize, rows: &[Vec<String>]) -> String {
    let class = |i: usize| if i >= right_from { " class=\"n\"" } else { "" };
    let mut out = String::from("<table>\n<thead><tr>");
    for (i, h) in header.iter().enumerate() {
        let _ = write!(out, "<th{}>{}</th>", class(i), esc(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            let _ = write!(out, "<td{}>{}</td>", class(i), esc(c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>");
    out
}

fn html_block(b: &Block) -> String {
    match b {
        Block::Heading(level, t) => format!("<h{level}>{}</h{level}>", esc(t)),
        Block::Para(spans) => format!("<p>{}</p>", html_spans(spans)),
        Block::Table { header, right_from, rows } => html_table(header, *right_from, rows),
        Block::Chart { png, svg, alt } => format!(
            "<figure><img src=\"{}\" alt=\"{}\">\
             <figcaption>Bitmap version: <a href=\"{}\">{}</a></figcaption></figure>",
            esc(svg),
            esc(alt),
            esc(png),
            esc(png)
        ),
        Block::Commands(lines) => format!("<pre><code>{}</code></pre>", esc(&lines.join("\n"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Doc {
        let mut d = Doc::default();
        d.heading(1, "Flood on eth0");
        d.para(vec![text("a *b* "), code("rate_limit"), text(" <x>")]);
        d.table(
            &["key", "packets"],
            1,
            vec![vec!["a|b".into(), "1,000".into()], vec!["c".into(), "5".into()]],
        );
        d.push(Block::Commands(vec!["tcpdump -nn -r x.pcap".into()]));
        d
    }

    #[test]
    fn markdown() {
        let md = sample().markdown();
        assert!(md.starts_with("# Flood on eth0\n\na \\*b\\* `rate_limit` \\<x>\n\n"), "{md}");
        assert!(
            md.contains("| key  | packets |\n| ---- | ------: |\n| a\\|b |   1,000 |\n| c    |       5 |"),
            "{md}"
        );
        assert!(md.contains("```sh\ntcpdump -nn -r x.pcap\n```"), "{md}");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_cell("red \x1b[31m|x\r\ny"), r"red \\u{1b}[31m\|x\\u{d} y");
    }

    #[test]
    fn html() {
        let html = sample().html("t <1>");
        assert!(html.contains("<title>t &lt;1&gt;</title>"));
        assert!(html.contains("<p>a *b* <code>rate_limit</code> &lt;x&gt;</p>"), "{html}");
        assert!(html.contains("<td>a|b</td><td class=\"n\">1,000</td>"), "{html}");
        assert!(!html.contains("http"), "no external resources: {html}");
    }
}
