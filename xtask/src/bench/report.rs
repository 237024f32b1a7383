//! Results of one bench run: the table on stdout, `target/bench/results.json` and
//! `BENCHMARKS.md`.

use anyhow::Result;
use serde_json::{Value, json};
use std::fmt::Write as _;

/// One measured figure and its ratio to the section's baseline.
pub struct Row {
    pub name: String,
    pub value: Option<f64>,
    pub unit: &'static str,
    /// value / baseline (None: no baseline, or not measured).
    pub ratio: Option<f64>,
    pub detail: String,
}

impl Row {
    pub fn new(
        name: &str,
        value: Option<f64>,
        unit: &'static str,
        baseline: Option<f64>,
        detail: &str,
    ) -> Row {
        let ratio = match (value, baseline) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        };
        Row {
            name: name.to_string(),
            value,
            unit,
            ratio,
            detail: detail.to_string(),
        }
    }

    pub fn missing(name: &str, unit: &'static str, why: &str) -> Row {
        Row::new(name, None, unit, None, why)
    }
}

pub struct Section {
    pub key: &'static str,
    pub title: &'static str,
    /// What the ratios are relative to.
    pub baseline: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Section {
    pub fn new(key: &'static str, title: &'static str, baseline: &str) -> Section {
        Section {
            key,
            title,
            baseline: baseline.to_string(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn value(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.value)
    }

    pub fn ratio(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.ratio)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    Missed,
    NotMeasured,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::Missed => "MISSED",
            Status::NotMeasured => "not measured",
        }
    }
}

pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub status: Status,
    pub why: String,
}

pub struct Report {
    pub quick: bool,
    pub command: String,
    pub started: String,
    pub seconds: f64,
    pub machine: Vec<(String, String)>,
    pub sections: Vec<Section>,
    pub goals: Vec<Goal>,
}

pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn value_cell(r: &Row) -> String {
    match r.value {
        Some(v) => format!("{} {}", fmt_num(v), r.unit),
        None => "-".into(),
    }
}

fn ratio_cell(r: &Row) -> String {
    match r.ratio {
        Some(x) if x >= 10.0 => format!("{x:.1}x"),
        Some(x) => format!("{x:.2}x"),
        None => "-".into(),
    }
}

impl Report {
    /// The plain-text table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        for sec in &self.sections {
            let _ = writeln!(s, "\n{} (ratio: vs {})", sec.title, sec.baseline);
            let w = sec
                .rows
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(0)
                .max(10);
            for r in &sec.rows {
                let _ = writeln!(
                    s,
                    "  {:<w$}  {:>16}  {:>8}  {}",
                    r.name,
                    value_cell(r),
                    ratio_cell(r),
                    r.detail
                );
            }
            for n in &sec.notes {
                let _ = writeln!(s, "  note: {n}");
            }
        }
        let _ = writeln!(s, "\nGoals");
        for g in &self.goals {
            let _ = writeln!(
                s,
                "  [{}] {}: {}{}",
                g.status.as_str(),
                g.goal,
                g.measured,
                if g.why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", g.why)
                }
            );
        }
        s
    }

    pub fn json(&self) -> Value {
        let sections: Vec<Value> = self
            .sections
            .iter()
            .map(|sec| {
                json!({
                    "key": sec.key,
                    "title": sec.title,
                    "baseline": sec.baseline,
                    "rows": sec.rows.iter().map(|r| json!({
                        "name": r.name, "value": r.value, "unit": r.unit,
                        "ratio": r.ratio, "detail": r.detail,
                    })).collect::<Vec<_>>(),
                    "notes": sec.notes,
                })
            })
            .collect();
        json!({
            "quick": self.quick,
            "command": self.command,
            "started": self.started,
            "seconds": self.seconds,
            "machine": self.machine.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "sections": sections,
            "goals": self.goals.iter().map(|g| json!({
                "goal": g.goal, "measured": g.measured, "status": g.status.as_str(), "why": g.why,
            })).collect::<Vec<_>>(),
        })
    }

    /// BENCHMARKS.md: the latest table, the machine, how to reproduce, the goals.
    pub fn markdown(&self, analysis: &str) -> Result<String> {
        let mut s = String::new();
        writeln!(s, "# Benchmarks\n")?;
        writeln!(
            s,
            "Written by `cargo xtask bench`; the latest run replaces this file. Every \
             figure is measured in the same run as the baseline it is compared with.\n"
        )?;
        writeln!(s, "## How to reproduce\n")?;
        writeln!(
            s,
            "    cargo xtask bench            # as root: full run (installs tshark, argus, softflowd, iperf3, nftables)"
        )?;
        writeln!(
            s,
            "    cargo xtask bench --quick    # seconds; what `cargo xtask test` (CI) runs so the bench never rots\n"
        )?;
        writeln!(
            s,
            "Raw results: `target/bench/results.json`; the generated trace, logs and conn.logs are \
             in `target/bench/`. Run it on an idle machine: the figures are medians of several \
             runs, but other load on the 2 cores still moves them.\n"
        )?;
        writeln!(s, "## Latest run\n")?;
        writeln!(
            s,
            "`{}`, {}, {:.0} s{}.\n",
            self.command,
            self.started,
            self.seconds,
            if self.quick {
                " (quick mode: small sizes, figures indicative only)"
            } else {
                ""
            }
        )?;
        writeln!(s, "| machine | |\n| --- | --- |")?;
        for (k, v) in &self.machine {
            writeln!(s, "| {k} | {v} |")?;
        }
        for sec in &self.sections {
            writeln!(s, "\n### {}\n", sec.title)?;
            writeln!(s, "Ratio: vs {}.\n", sec.baseline)?;
            writeln!(
                s,
                "| | value | ratio | detail |\n| --- | ---: | ---: | --- |"
            )?;
            for r in &sec.rows {
                writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    r.name,
                    value_cell(r),
                    ratio_cell(r),
                    r.detail.replace('|', "\\|")
                )?;
            }
            for n in &sec.notes {
                writeln!(s, "\n{n}")?;
            }
        }
        writeln!(s, "\n## Goals\n")?;
        writeln!(
            s,
            "| goal | measured | status | why |\n| --- | --- | --- | --- |"
        )?;
        for g in &self.goals {
            writeln!(
                s,
                "| {} | {} | {} | {} |",
                g.goal,
                g.measured,
                g.status.as_str(),
                g.why.replace('|', "\\|")
            )?;
        }
        if !analysis.is_empty() {
            writeln!(s, "\n{analysis}")?;
        }
        Ok(s)
    }
}
