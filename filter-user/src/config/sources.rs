//! A list's sources in a config file: entries, local files and globs (read and checked
//! whole), URLs (checked as URLs; fetching is the service's).

use std::path::{Path, PathBuf};

use filter_common::cidr::{echo, list_lines};
use toml::de::DeValue;

use super::{
    check::{Ctx, DEFAULT_MAX_SHRINK, DEFAULT_REFRESH, MIN_REFRESH, Value, entry},
    model::{ListFormat, ListSpec, UrlSource},
};
use crate::sources::parse_http_url;

/// Bad lines reported per list file; the last one says how many more there are.
pub const MAX_ERRORS_PER_FILE: usize = 20;

pub fn list(ctx: &mut Ctx, path: &str, v: &Value) -> ListSpec {
    let mut spec = ListSpec::default();
    let Some(t) = ctx.table(path, v, &["entries", "files", "url"]) else { return spec };
    if let Some(v) = t.get("entries")
        && let Some(items) = ctx.array(&t.key("entries"), v)
    {
        spec.entries = items.iter().filter_map(|item| entry(ctx, &t.key("entries"), item)).collect();
    }
    if let Some(v) = t.get("files")
        && let Some(items) = ctx.array(&t.key("files"), v)
    {
        for item in items {
            file_source(ctx, &t.key("files"), item, &mut spec);
        }
    }
    if let Some(v) = t.get("url") {
        let key = t.key("url");
        match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let Some(u) = url_source(ctx, &format!("{key}[{}]", i + 1), item) else { continue };
                    if spec.urls.iter().any(|o| o.url == u.url) {
                        ctx.error(item.span(), format!("{key}: '{}' is listed twice", echo(&u.url)));
                        continue;
                    }
                    spec.urls.push(u);
                }
            }
            _ => ctx.error(
                v.span(),
                format!("{key}: expected an array of tables ([[{key}]]), found a {}", v.get_ref().type_str()),
            ),
        }
    }
    spec
}

/// Glob syntax: a path with any of these is expanded.
fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '['])
}

/// One item of `files`: "PATH" or { path = "PATH", optional = true }. A path or glob
/// that names no file is an error unless optional.
fn file_source(ctx: &mut Ctx, key: &str, item: &Value, spec: &mut ListSpec) {
    let (text, optional, at) = match item.get_ref() {
        DeValue::String(s) => (s.as_ref(), false, item.span()),
        DeValue::Table(_) => {
            let Some(t) = ctx.table(key, item, &["path", "optional"]) else { return };
            let optional =
                t.get("optional").and_then(|v| ctx.boolean(&t.key("optional"), v)).unwrap_or(false);
            let Some(pv) = t.get("path") else {
                ctx.error(item.span(), format!("{key}: {{ ... }} has no 'path'"));
                return;
            };
            let Some(text) = ctx.string(&format!("{key}.path"), pv) else { return };
            (text, optional, pv.span())
        }
        _ => {
            ctx.error(
                item.span(),
                format!(
                    "{key}: expected a path or {{ path = \"...\", optional = true }}, found a {}",
                    item.get_ref().type_str()
                ),
            );
            return;
        }
    };
    if text.is_empty() {
        ctx.error(at, format!("{key}: empty path"));
        return;
    }
    let written = Path::new(text);
    let full = if written.is_absolute() { written.to_path_buf() } else { ctx.base.join(written) };
    if !is_glob(text) {
        match std::fs::metadata(&full) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && optional => {}
            Err(e) => ctx.error(at, format!("{key}: list file {}: {e}", echo(&full.display().to_string()))),
            Ok(m) if !m.is_file() => {
                ctx.error(at, format!("{key}: {} is not a file", echo(&full.display().to_string())))
            }
            Ok(_) => read_list_file(ctx, key, &full, at, spec),
        }
        return;
    }
    // The directory part is escaped so that only what was written is a pattern.
    let pattern = if written.is_absolute() {
        text.to_string()
    } else {
        format!("{}/{text}", glob::Pattern::escape(&ctx.base.display().to_string()))
    };
    let paths = match glob::glob(&pattern) {
        Ok(p) => p,
        Err(e) => {
            ctx.error(at, format!("{key}: bad glob '{}': {} at character {}", echo(text), e.msg, e.pos + 1));
            return;
        }
    };
    let mut matched: Vec<PathBuf> = Vec::new();
    for p in paths {
        match p {
            Ok(p) if p.is_file() => matched.push(p),
            Ok(_) => {} // directories a pattern also matches
            Err(e) => ctx.error(
                at.clone(),
                format!("{key}: reading {}: {}", echo(&e.path().display().to_string()), e.error()),
            ),
        }
    }
    if matched.is_empty() && !optional {
        ctx.error(
            at.clone(),
            format!(
                "{key}: '{}' matches no file (write {{ path = \"...\", optional = true }} if that is fine)",
                echo(text)
            ),
        );
    }
    spec.globs.push(pattern);
    for p in matched {
        read_list_file(ctx, key, &p, at.clone(), spec);
    }
}

/// Reads a list file whole and reports its bad lines as `LISTFILE:LINE:COLUMN`.
fn read_list_file(ctx: &mut Ctx, key: &str, file: &Path, at: std::ops::Range<usize>, spec: &mut ListSpec) {
    if spec.files.iter().any(|f| f == file) {
        return; // named twice (a path and a glob): one source
    }
    let shown = echo(&file.display().to_string());
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => return ctx.error(at, format!("{key}: list file {shown}: {e}")),
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let (line, column) = super::error::utf8_position(e.as_bytes(), e.utf8_error().valid_up_to());
            return ctx.error_at(file, line, column, "not UTF-8 text");
        }
    };
    let bad: Vec<_> = list_lines(&text).filter(|l| l.parsed.is_err()).collect();
    let more = bad.len().saturating_sub(MAX_ERRORS_PER_FILE);
    let shown_bad = bad.len() - more;
    for (i, l) in bad.into_iter().take(MAX_ERRORS_PER_FILE).enumerate() {
        let Err(reason) = l.parsed else { continue };
        let suffix = if i + 1 == shown_bad && more > 0 {
            format!(" (and {more} more bad lines)")
        } else {
            String::new()
        };
        ctx.error_at(file, l.line, l.column, format!("{reason}{suffix}"));
    }
    spec.files.push(file.to_path_buf());
}

fn url_source(ctx: &mut Ctx, path: &str, v: &Value) -> Option<UrlSource> {
    let t = ctx.table(path, v, &["url", "refresh", "max_shrink", "format"])?;
    let before = ctx.errors.len();
    let url = match t.get("url") {
        None => {
            ctx.error(t.span.clone(), format!("[[{path}]] has no 'url'"));
            None
        }
        Some(v) => ctx.string(&t.key("url"), v).and_then(|text| match parse_http_url(text) {
            Ok(_) => Some(text.to_string()),
            Err(e) => {
                ctx.error(v.span(), format!("{}: {e}", t.key("url")));
                None
            }
        }),
    };
    let mut refresh = DEFAULT_REFRESH;
    if let Some(v) = t.get("refresh")
        && let Some(d) = ctx.duration(&t.key("refresh"), v)
    {
        if d < MIN_REFRESH {
            ctx.error(
                v.span(),
                format!("{}: refreshing more often than every 1m is refused", t.key("refresh")),
            );
        }
        refresh = d;
    }
    let mut max_shrink = DEFAULT_MAX_SHRINK;
    if let Some(v) = t.get("max_shrink")
        && let Some(f) = ctx.number(&t.key("max_shrink"), v)
    {
        if !(0.0..=1.0).contains(&f) {
            ctx.error(v.span(), format!("{}: {f} is not a fraction from 0 to 1", t.key("max_shrink")));
        }
        max_shrink = f;
    }
    let mut format = ListFormat::Auto;
    if let Some(v) = t.get("format") {
        format = ctx.choice(&t.key("format"), v, &[("auto", ListFormat::Auto)]).unwrap_or_default();
    }
    if ctx.errors.len() > before {
        return None;
    }
    Some(UrlSource { url: url?, refresh, max_shrink, format })
}
