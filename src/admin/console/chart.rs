//! The overview's chart: events per minute by result over the last hour,
//! drawn as an inline SVG of stacked bars. The numbers are the worker's own
//! per-minute counts ([`ProvisionerStatus::per_minute`], the same as
//! `/v1/provisioners/{name}`), not the journal: they cost no query and are
//! there without a journal; they start empty at each process start.
//!
//! [`ProvisionerStatus::per_minute`]: crate::worker::status::ProvisionerStatus::per_minute

use serde::Serialize;

use crate::worker::status::{rfc3339, MinuteRate};

/// Drawing units: one bar per minute, `BAR` wide.
const BAR: u64 = 4;
/// Height of the bars' area.
pub const HEIGHT: u64 = 60;

/// The results, in the order their segments stack (bottom first), with the
/// CSS class of each.
const RESULTS: [(&str, &str); 5] = [
    ("applied", "r-applied"),
    ("coalesced", "r-coalesced"),
    ("ignored", "r-ignored"),
    ("returned", "r-returned"),
    ("dead-lettered", "r-dead"),
];

fn counts(m: &MinuteRate) -> [u64; 5] {
    [
        m.applied,
        m.coalesced,
        m.ignored,
        m.returned,
        m.dead_lettered,
    ]
}

/// One drawn rectangle.
#[derive(Debug, Serialize, PartialEq)]
pub struct Segment {
    pub y: u64,
    pub height: u64,
    pub class: &'static str,
}

/// One minute.
#[derive(Debug, Serialize)]
pub struct Bar {
    pub x: u64,
    /// `HH:MM: 3 applied, 1 dead-lettered` (the bar's tooltip).
    pub title: String,
    pub segments: Vec<Segment>,
}

/// A result's total over the hour, for the legend.
#[derive(Debug, Serialize)]
pub struct Total {
    pub result: &'static str,
    pub class: &'static str,
    pub count: u64,
}

/// The chart of one provisioner.
#[derive(Debug, Serialize)]
pub struct Chart {
    pub width: u64,
    pub height: u64,
    /// Events in the busiest minute (the top of the scale).
    pub max: u64,
    pub bars: Vec<Bar>,
    pub totals: Vec<Total>,
    /// Every event settled in the hour.
    pub total: u64,
    /// `total` per minute over the hour.
    pub per_minute: f64,
    /// What a screen reader says instead of the drawing.
    pub summary: String,
}

/// The chart of `minutes` (oldest first, one entry a minute).
pub fn chart(minutes: &[MinuteRate]) -> Chart {
    let max = minutes
        .iter()
        .map(|m| counts(m).iter().sum::<u64>())
        .max()
        .unwrap_or(0);
    let scale = |n: u64| {
        if max == 0 {
            0
        } else {
            // At least one unit, so that a single event stays visible.
            (n * HEIGHT).div_ceil(max).max(u64::from(n > 0))
        }
    };
    let bars = minutes
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut top = HEIGHT;
            let mut segments = Vec::new();
            let mut words = Vec::new();
            for (n, (result, class)) in counts(m).into_iter().zip(RESULTS) {
                if n == 0 {
                    continue;
                }
                let height = scale(n).min(top);
                top -= height;
                segments.push(Segment {
                    y: top,
                    height,
                    class,
                });
                words.push(format!("{n} {result}"));
            }
            let minute = rfc3339(m.minute_start_ms);
            let hh_mm = minute.get(11..16).unwrap_or(&minute);
            let title = if words.is_empty() {
                format!("{hh_mm} UTC: none")
            } else {
                format!("{hh_mm} UTC: {}", words.join(", "))
            };
            Bar {
                x: i as u64 * BAR,
                title,
                segments,
            }
        })
        .collect();
    let totals: Vec<Total> = RESULTS
        .iter()
        .enumerate()
        .map(|(i, (result, class))| Total {
            result,
            class,
            count: minutes.iter().map(|m| counts(m)[i]).sum(),
        })
        .collect();
    let total: u64 = totals.iter().map(|t| t.count).sum();
    let summary = format!(
        "Events per minute over the last hour, at most {max} in one minute: {}",
        totals
            .iter()
            .map(|t| format!("{} {}", t.count, t.result))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Chart {
        width: minutes.len() as u64 * BAR,
        height: HEIGHT,
        max,
        bars,
        totals,
        total,
        per_minute: if minutes.is_empty() {
            0.0
        } else {
            total as f64 / minutes.len() as f64
        },
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minute(i: u64, applied: u64, dead: u64) -> MinuteRate {
        MinuteRate {
            minute_start_ms: 1_764_583_200_000 + i * 60_000,
            applied,
            ignored: 0,
            dead_lettered: dead,
            returned: 0,
            coalesced: 0,
        }
    }

    #[test]
    fn bars_stack_by_result_scaled_to_the_busiest_minute() {
        let minutes = vec![minute(0, 0, 0), minute(1, 6, 2), minute(2, 1, 0)];
        let c = chart(&minutes);
        assert_eq!(c.width, 12);
        assert_eq!(c.max, 8);
        assert_eq!(c.total, 9);
        assert!(c.bars[0].segments.is_empty());
        assert_eq!(c.bars[0].title, "10:00 UTC: none");
        // The busiest minute fills the height: applied at the bottom.
        assert_eq!(
            c.bars[1].segments,
            vec![
                Segment {
                    y: 15,
                    height: 45,
                    class: "r-applied"
                },
                Segment {
                    y: 0,
                    height: 15,
                    class: "r-dead"
                },
            ]
        );
        assert_eq!(c.bars[1].x, 4);
        assert_eq!(c.bars[1].title, "10:01 UTC: 6 applied, 2 dead-lettered");
        // One event of eight is still visible.
        assert_eq!(c.bars[2].segments[0].height, 8);
        assert!(c.summary.contains("7 applied"), "{}", c.summary);
        assert!((c.per_minute - 3.0).abs() < f64::EPSILON);
    }

    #[test]
    fn an_idle_hour_draws_nothing() {
        let c = chart(&[minute(0, 0, 0)]);
        assert_eq!(c.max, 0);
        assert!(c.bars.iter().all(|b| b.segments.is_empty()));
    }
}
