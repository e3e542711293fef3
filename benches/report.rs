//! The final report: a table of medians and sizes with ratios (blast / other), the design's targets with
//! PASS or MISS, and notes on what the environments held.

use std::time::Duration;

use crate::runner::Sample;

/// One line of the table: a blast measurement, with the other tool it is compared to, if any.
pub struct Row {
    operation: String,
    /// How many timed runs the figures are medians of; `None` for sizes.
    runs: Option<usize>,
    blast: Figure,
    other: Option<(String, Figure)>,
}

/// What a row compares: a time (a median) or a file size.
#[derive(Debug, Clone, Copy)]
enum Figure {
    Time(Duration),
    Size(u64),
}

impl Figure {
    fn text(self) -> String {
        match self {
            Figure::Time(d) => duration(d),
            Figure::Size(bytes) => size(bytes),
        }
    }

    fn value(self) -> f64 {
        match self {
            Figure::Time(d) => d.as_secs_f64(),
            Figure::Size(bytes) => bytes as f64,
        }
    }
}

impl Row {
    pub fn compare(operation: impl Into<String>, blast: &Sample, other: &Sample) -> Row {
        Row {
            operation: operation.into(),
            runs: Some(blast.times.len()),
            blast: Figure::Time(blast.median()),
            other: Some((other.label.clone(), Figure::Time(other.median()))),
        }
    }

    pub fn alone(operation: impl Into<String>, blast: &Sample) -> Row {
        Row {
            operation: operation.into(),
            runs: Some(blast.times.len()),
            blast: Figure::Time(blast.median()),
            other: None,
        }
    }

    /// A size blast made (a file, in bytes) against another's for the same content.
    pub fn sizes(
        operation: impl Into<String>,
        blast: u64,
        other: impl Into<String>,
        other_bytes: u64,
    ) -> Row {
        Row {
            operation: operation.into(),
            runs: None,
            blast: Figure::Size(blast),
            other: Some((other.into(), Figure::Size(other_bytes))),
        }
    }
}

/// A performance target from DESIGN.md and whether this run met it.
pub struct Target {
    pub goal: &'static str,
    pub measured: String,
    pub pass: bool,
}

impl Target {
    /// Met when blast's median is at most `max` times the other tool's.
    pub fn ratio_at_most(goal: &'static str, blast: &Sample, other: &Sample, max: f64) -> Target {
        let r = ratio(blast.median(), other.median());
        Target {
            goal,
            measured: format!(
                "{} vs {} (ratio {r:.2})",
                duration(blast.median()),
                duration(other.median())
            ),
            pass: r <= max,
        }
    }

    /// Met when the median is below `limit`.
    pub fn below(goal: &'static str, sample: &Sample, limit: Duration) -> Target {
        Target {
            goal,
            measured: duration(sample.median()),
            pass: sample.median() < limit,
        }
    }

    /// Met when a file of `bytes` is at most `limit` (`limit_text` says what the limit is made of).
    pub fn size_at_most(goal: &'static str, bytes: u64, limit: u64, limit_text: &str) -> Target {
        Target {
            goal,
            measured: format!("{} vs {limit_text} = {}", size(bytes), size(limit)),
            pass: bytes <= limit,
        }
    }
}

/// What the parts of the benchmark found.
#[derive(Default)]
pub struct Results {
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn extend(&mut self, other: Results) {
        self.rows.extend(other.rows);
        self.targets.extend(other.targets);
        self.notes.extend(other.notes);
    }
}

/// `12.3 ms` below ten seconds, `12.34 s` above.
pub fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10_000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Decimal units: `123.4 MB`, `5.6 kB`, `789 B`.
pub fn size(bytes: u64) -> String {
    match bytes {
        1_000_000.. => format!("{:.1} MB", bytes as f64 / 1e6),
        1_000.. => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{bytes} B"),
    }
}

/// Decimal megabytes, as the design's anchors count them.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.0} MB", bytes as f64 / 1e6)
}

/// `18087` → `18,087`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn ratio(blast: Duration, other: Duration) -> f64 {
    blast.as_secs_f64() / other.as_secs_f64().max(f64::MIN_POSITIVE)
}

pub fn print(results: &Results) {
    let header = ["operation", "runs", "blast", "other tool", "other", "ratio"];
    let lines: Vec<[String; 6]> = results
        .rows
        .iter()
        .map(|row| {
            let (tool, other, ratio) = match &row.other {
                Some((tool, other)) => (
                    tool.clone(),
                    other.text(),
                    format!(
                        "{:.2}",
                        row.blast.value() / other.value().max(f64::MIN_POSITIVE)
                    ),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            [
                row.operation.clone(),
                row.runs.map_or_else(|| "-".into(), |n| n.to_string()),
                row.blast.text(),
                tool,
                other,
                ratio,
            ]
        })
        .collect();
    println!();
    print_table(&header, &lines, &[false, true, true, false, true, true]);
    println!(
        "times are medians of the runs, sizes are files' sizes; ratio = blast / other (below 1: blast \
         is faster or smaller)"
    );

    if !results.targets.is_empty() {
        println!();
        let lines: Vec<[String; 3]> = results
            .targets
            .iter()
            .map(|t| {
                [
                    t.goal.to_owned(),
                    t.measured.clone(),
                    if t.pass { "PASS" } else { "MISS" }.to_owned(),
                ]
            })
            .collect();
        print_table(
            &["target (DESIGN.md)", "measured", "result"],
            &lines,
            &[false, false, false],
        );
    }
    if !results.notes.is_empty() {
        println!();
        for note in &results.notes {
            println!("- {note}");
        }
    }
}

/// Prints aligned columns; `right[i]` right-aligns column `i`.
fn print_table<const N: usize>(header: &[&str; N], lines: &[[String; N]], right: &[bool; N]) {
    let mut widths = header.map(|h| h.chars().count());
    for line in lines {
        for (width, cell) in widths.iter_mut().zip(line) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: [&str; N]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                out.push_str("  ");
            }
            if right[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < N {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out
    };
    println!("{}", render(*header));
    println!(
        "{}",
        render(widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str))
    );
    for line in lines {
        println!("{}", render(line.each_ref().map(String::as_str)));
    }
}
