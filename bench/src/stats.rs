//! Figures: the samples of one system in one scenario, several runs each.

/// What a figure counts, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    PerSecond(&'static str),
    /// How many of something (higher is better).
    Count(&'static str),
    Micros,
    Millis,
    MiB,
}

impl Unit {
    pub fn higher_is_better(self) -> bool {
        matches!(self, Unit::PerSecond(_) | Unit::Count(_))
    }

    pub fn label(self) -> String {
        match self {
            Unit::PerSecond(what) => format!("{what}/s"),
            Unit::Count(what) => what.into(),
            Unit::Micros => "µs".into(),
            Unit::Millis => "ms".into(),
            Unit::MiB => "MiB".into(),
        }
    }
}

/// One row of a scenario's table.
#[derive(Debug, Clone)]
pub struct Figure {
    pub system: String,
    /// What this row measured, in words (workers, rows, which call).
    pub setting: String,
    pub unit: Unit,
    /// One value per run.
    pub samples: Vec<f64>,
    /// Why a row has no samples (a peer without the feature, a skipped peer).
    pub absent: Option<String>,
    /// A raw limit (what the system is compared against), not a system.
    pub raw: bool,
}

impl Figure {
    pub fn new(system: &str, setting: &str, unit: Unit) -> Self {
        Figure {
            system: system.into(),
            setting: setting.into(),
            unit,
            samples: Vec::new(),
            absent: None,
            raw: false,
        }
    }

    pub fn raw(mut self) -> Self {
        self.raw = true;
        self
    }

    pub fn absent(system: &str, setting: &str, unit: Unit, why: &str) -> Self {
        Figure {
            absent: Some(why.into()),
            ..Figure::new(system, setting, unit)
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn min(&self) -> Option<f64> {
        self.sorted().first().copied()
    }

    pub fn max(&self) -> Option<f64> {
        self.sorted().last().copied()
    }

    pub fn median(&self) -> Option<f64> {
        let v = self.sorted();
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }
}

/// The median of `values` (latencies of one run).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    assert!(n > 0, "a median of nothing");
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The `p`th percentile of `values` (sorted in place).
pub fn percentile(values: &mut [f64], p: usize) -> f64 {
    values.sort_by(f64::total_cmp);
    let i = (values.len() * p / 100).min(values.len() - 1);
    values[i]
}

/// A count as f64 (benchmark counts stay far below 2^52).
pub fn count(n: usize) -> f64 {
    u32::try_from(n).map(f64::from).unwrap_or(f64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_reports_the_middle_of_its_runs() {
        let mut f = Figure::new("x", "", Unit::Micros);
        f.samples = vec![3.0, 1.0, 2.0];
        assert_eq!(
            (f.min(), f.median(), f.max()),
            (Some(1.0), Some(2.0), Some(3.0))
        );
        f.samples.push(4.0);
        assert_eq!(f.median(), Some(2.5));
    }

    #[test]
    fn a_figure_without_samples_has_no_median() {
        let f = Figure::absent("huey", "", Unit::Micros, "no such feature");
        assert_eq!(f.median(), None);
    }
}
