//! The incident's timeline as a chart: packets per second by verdict reason, stacked
//! (passed traffic at the bottom in greens and greys, drops above it in warm colours),
//! drawn by plotters as SVG and rendered from that SVG to PNG by resvg.
//!
//! plotters runs without a font feature (`ttf` pulls font-kit, fontconfig and freetype;
//! `ab_glyph` draws glyphs without their side bearings, visibly misplaced): it lays text
//! out by estimate, so the SVG always has its text, set in the viewer's sans-serif. The PNG needs a font file: floodgate embeds none (700 KB
//! in every install for one picture) but reads one at run time from the Debian paths of
//! common sans fonts, the first of them fonts-dejavu-core's, which `scripts/setup.sh`
//! installs. Without any, the PNG is drawn without text: the report's tables hold every
//! number anyway.

use std::{
    ops::Range,
    sync::{Arc, OnceLock},
};

use filter_common::Reason;
use plotters::{coord::Shift, prelude::*, style::RGBColor};
use resvg::{tiny_skia, usvg, usvg::fontdb};

use crate::{human, incident::record::IncidentRecord};

pub const WIDTH: u32 = 1000;
pub const HEIGHT: u32 = 450;
/// The legend's column at the right of the plot.
const LEGEND_WIDTH: u32 = 150;

/// Fonts tried in order for the PNG (Debian packages: fonts-dejavu-core,
/// fonts-liberation, fonts-noto-core, fonts-freefont-ttf).
pub const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// The fonts the PNG's text is drawn with: the first of [`FONT_PATHS`] found, as the
/// SVG's sans-serif (read once per process).
pub fn fonts() -> Arc<fontdb::Database> {
    static FONTS: OnceLock<Arc<fontdb::Database>> = OnceLock::new();
    FONTS
        .get_or_init(|| {
            let mut db = fontdb::Database::new();
            if let Some(bytes) = FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok()) {
                db.load_font_data(bytes);
            }
            let family = db.faces().next().and_then(|f| f.families.first()).map(|(name, _)| name.clone());
            if let Some(family) = family {
                db.set_sans_serif_family(family);
            }
            Arc::new(db)
        })
        .clone()
}

/// Whether the PNG gets text (a font was found).
pub fn font_ready() -> bool {
    !fonts().is_empty()
}

/// The colour of a reason's area: warm for drops, green and grey for what passed,
/// blue for SYNs answered in the driver.
pub fn color(key: &str) -> RGBColor {
    let Some(r) = Reason::ALL.iter().find(|r| r.key() == key) else { return RGBColor(96, 96, 96) };
    match r {
        Reason::Passed => RGBColor(129, 178, 129),
        Reason::Allowed => RGBColor(46, 125, 50),
        Reason::AckRepaired => RGBColor(165, 196, 165),
        Reason::Malformed => RGBColor(140, 140, 140),
        Reason::NonIp => RGBColor(180, 180, 180),
        Reason::L4Unseen => RGBColor(205, 205, 205),
        Reason::SynProxy => RGBColor(92, 107, 192),
        Reason::Blocklist => RGBColor(211, 47, 47),
        Reason::RateLimit => RGBColor(245, 124, 0),
        Reason::SynLimit => RGBColor(251, 192, 45),
        Reason::Rule => RGBColor(230, 74, 25),
        Reason::Policy => RGBColor(194, 24, 91),
        Reason::Fragment => RGBColor(141, 110, 99),
        Reason::Unchecked => RGBColor(123, 31, 31),
    }
}

/// Stacking order, bottom first: passed reasons, answered, drops, then keys this
/// version does not know.
fn rank(key: &str) -> (u8, usize) {
    match Reason::ALL.iter().position(|r| r.key() == key) {
        Some(i) if Reason::ALL[i].drops() => (2, i),
        Some(i) if Reason::ALL[i] == Reason::SynProxy => (1, i),
        Some(i) => (0, i),
        None => (3, 0),
    }
}

/// One reason's band: the top edge of its area, `(at_ms, cumulative pps)`.
pub struct Band {
    pub key: String,
    pub top: Vec<(u64, u64)>,
}

/// The timeline as stacked bands, bottom first.
pub fn bands(rec: &IncidentRecord) -> Vec<Band> {
    let points = &rec.timeline.points;
    let mut keys: Vec<&String> = points.iter().flat_map(|p| p.pps.keys()).collect();
    keys.sort_by_key(|k| (rank(k), k.to_string()));
    keys.dedup();
    let mut below = vec![0u64; points.len()];
    keys.into_iter()
        .map(|k| {
            let top = points
                .iter()
                .zip(below.iter_mut())
                .map(|(p, b)| {
                    *b += p.pps.get(k).copied().unwrap_or(0);
                    (p.at_ms, *b)
                })
                .collect();
            Band { key: k.clone(), top }
        })
        .collect()
}

fn x_range(rec: &IncidentRecord) -> Range<u64> {
    let last = rec.timeline.points.last().map_or(rec.started_ms, |p| p.at_ms);
    let start = rec.timeline.points.first().map_or(rec.started_ms, |p| p.at_ms.min(rec.started_ms));
    let end = rec.ended_ms.unwrap_or(0).max(last).max(start + 1000);
    start..end
}

/// Time of day for the x axis; with the date when the chart spans days.
fn time_label(ms: u64, span_ms: u64) -> String {
    let iso = human::utc(ms);
    if span_ms > 86_400_000 { format!("{} {}", &iso[5..10], &iso[11..16]) } else { iso[11..19].to_string() }
}

fn title(rec: &IncidentRecord) -> String {
    format!(
        "{} on {}: packets/s by verdict, {} (UTC)",
        rec.interface,
        rec.hostname,
        &human::utc(rec.started_ms)[..10]
    )
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Ticks on round times of day (every 10s, 1m, 15m, ...), at most 8.
fn time_ticks(xs: &Range<u64>) -> Vec<u64> {
    const STEPS_S: [u64; 16] =
        [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21_600, 86_400];
    let span = xs.end - xs.start;
    let step = STEPS_S.iter().map(|s| s * 1000).find(|s| span / s <= 8).unwrap_or(span.div_ceil(8).max(1));
    let first = xs.start.div_ceil(step) * step;
    (first..=xs.end).step_by(step as usize).collect()
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, rec: &IncidentRecord) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let bands = bands(rec);
    let xs = x_range(rec);
    let (origin, span) = (xs.start, xs.end - xs.start);
    // Milliseconds from the chart's start: plotters' tick arithmetic overflows on Unix
    // times in milliseconds.
    let ticks = time_ticks(&xs).into_iter().map(|t| t - origin).collect();
    let peak = bands.last().and_then(|b| b.top.iter().map(|&(_, y)| y).max()).unwrap_or(0);
    let ys = 0..(peak + peak / 10).max(10);

    let root = root.margin(10, 0, 0, 0).titled(&title(rec), (FontFamily::SansSerif, 20))?;
    let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .margin(10)
        .margin_right(30)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d((0..span).with_key_points(ticks), ys)?;
    chart
        .configure_mesh()
        .y_labels(6)
        .x_label_formatter(&|x| time_label(origin + x, span))
        .y_label_formatter(&|y| human::si(*y))
        .x_desc("time (UTC)")
        .y_desc("packets/s")
        .label_style((FontFamily::SansSerif, 13))
        .axis_desc_style((FontFamily::SansSerif, 14))
        .bold_line_style(RGBColor(220, 220, 220))
        .light_line_style(TRANSPARENT)
        .draw()?;

    // Top band first: each lower band paints over the part of it that is not its own.
    for band in bands.iter().rev() {
        let c = color(&band.key);
        let top = band.top.iter().map(|&(x, y)| (x - origin, y));
        chart.draw_series(AreaSeries::new(top, 0, c.filled()).border_style(c.stroke_width(1)))?;
    }
    draw_legend(&legend, &bands)?;
    root.present()
}

/// The reasons top band first, as stacked, beside the plot (inside it they would hide
/// the traffic).
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, bands: &[Band]) -> DrawResult<DB> {
    let style = TextStyle::from((FontFamily::SansSerif, 13)).color(&BLACK);
    for (i, band) in bands.iter().rev().enumerate() {
        let y = 20 + 22 * i as i32;
        area.draw(&Rectangle::new([(4, y), (18, y + 14)], color(&band.key).filled()))?;
        area.draw_text(&band.key, &style, (26, y))?;
    }
    Ok(())
}

/// The chart as an SVG document.
pub fn svg(rec: &IncidentRecord) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, rec).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The chart as a PNG file's bytes.
pub fn png(rec: &IncidentRecord) -> Result<Vec<u8>, String> {
    png_of_svg(&svg(rec)?, fonts())
}

fn png_of_svg(svg: &str, fonts: Arc<fontdb::Database>) -> Result<Vec<u8>, String> {
    let opts = usvg::Options { fontdb: fonts, ..usvg::Options::default() };
    let tree = usvg::Tree::from_str(svg, &opts).map_err(|e| e.to_string())?;
    let mut pixmap = tiny_skia::Pixmap::new(WIDTH, HEIGHT).ok_or("no pixmap")?;
    resvg::render(&tree, tiny_skia::Transform::identity(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::incident::report::tests::{T0, closed};

    #[test]
    fn bands_stack_passed_below_drops() {
        let rec = closed();
        let b = bands(&rec);
        let keys: Vec<&str> = b.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(keys, ["passed", "blocklist", "rate_limit"]);
        let p = &rec.timeline.points[100];
        let at = |band: &Band| band.top[100].1;
        assert_eq!(at(&b[0]), p.pps["passed"]);
        assert_eq!(at(&b[2]), p.pps.values().sum::<u64>());
    }

    #[test]
    fn colours_tell_drops_from_passes() {
        for r in Reason::ALL {
            let RGBColor(red, green, blue) = color(r.key());
            if r.drops() {
                assert!(red > blue && red >= green, "{r:?} is warm");
            } else if r != Reason::SynProxy {
                assert!(green >= red && green >= blue, "{r:?} is green or grey");
            }
        }
    }

    #[test]
    fn labels() {
        assert_eq!(time_label(T0, 600_000), "05:06:07");
        assert_eq!(time_label(T0, 3 * 86_400_000), "03-04 05:06");
    }

    #[test]
    fn ticks_fall_on_round_times() {
        let ticks = time_ticks(&(T0..T0 + 600_000));
        assert_eq!(ticks.len(), 5, "every 2 minutes from 05:08");
        assert!(ticks.iter().all(|t| t % 120_000 == 0 && (T0..=T0 + 600_000).contains(t)));
        assert_eq!(time_ticks(&(T0..T0 + 3_000)).len(), 4);
    }

    #[test]
    fn svg_and_png() {
        assert!(font_ready(), "a font from {FONT_PATHS:?} (scripts/setup.sh installs fonts-dejavu-core)");
        let rec = closed();
        let svg = svg(&rec).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{}", &svg[..100]);
        for key in ["blocklist", "rate_limit", "passed", "packets/s", "time (UTC)", "05:08:00", "800k"] {
            assert!(svg.contains(key), "{key}");
        }
        assert!(svg.contains("fill=\"#D32F2F\""), "the blocklist's red");
        let png = png(&rec).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(png.len() > 5_000 && png.len() < 500_000, "{}", png.len());
    }

    #[test]
    fn without_a_font_or_points() {
        let mut rec = closed();
        let no_fonts = Arc::new(fontdb::Database::new());
        let bare = png_of_svg(&svg(&rec).unwrap(), no_fonts).unwrap();
        assert!(bare.starts_with(b"\x89PNG"));
        assert_ne!(bare, png(&rec).unwrap(), "the same chart without its text");
        rec.timeline.points.clear();
        assert!(svg(&rec).unwrap().contains("packets/s"));
        rec.timeline.points.push(crate::incident::record::Point { at_ms: T0, pps: BTreeMap::new() });
        assert!(png(&rec).unwrap().starts_with(b"\x89PNG"));
    }
}
