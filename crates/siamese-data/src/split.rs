//! Named train / validation / test splits of Omniglot.
//!
//! | split | train | validation | test |
//! |---|---|---|---|
//! | `koch` | 30 background alphabets × drawers 1–12 | first 10 evaluation alphabets × drawers 13–16 | last 10 evaluation alphabets × drawers 17–20 |
//! | `koch-all-drawers` | 30 background alphabets × drawers 1–20 (the PyTorch reference's choice) | as `koch` | as `koch` |
//! | `background-small1` | Lake's minimal split 1 (5 alphabets) × drawers 1–20 | as `koch` | as `koch` |
//! | `background-small2` | Lake's minimal split 2 (5 alphabets) × drawers 1–20 | as `koch` | as `koch` |
//!
//! "First" and "last" refer to the bytewise-sorted alphabet folder names. Koch et al.
//! hold out drawers as well as alphabets, so no person's handwriting is seen in two
//! parts; the minimal splits follow Lake et al., who train on all their drawers.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::index::{AlphabetSelection, DatasetIndex};
use crate::{DataError, OmniglotSet};

/// A named split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SplitName {
    Koch,
    KochAllDrawers,
    BackgroundSmall1,
    BackgroundSmall2,
}

/// One of the three parts of a split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Part {
    Train,
    Validation,
    Test,
}

/// Where a part's images come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsetSpec {
    pub set: OmniglotSet,
    pub alphabets: AlphabetSelection,
    pub drawers: RangeInclusive<u8>,
}

impl SplitName {
    pub const ALL: [SplitName; 4] = [
        SplitName::Koch,
        SplitName::KochAllDrawers,
        SplitName::BackgroundSmall1,
        SplitName::BackgroundSmall2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Koch => "koch",
            SplitName::KochAllDrawers => "koch-all-drawers",
            SplitName::BackgroundSmall1 => "background-small1",
            SplitName::BackgroundSmall2 => "background-small2",
        }
    }

    /// The images a part of this split uses.
    pub fn spec(self, part: Part) -> SubsetSpec {
        match part {
            Part::Train => match self {
                SplitName::Koch => SubsetSpec {
                    set: OmniglotSet::Background,
                    alphabets: AlphabetSelection::All,
                    drawers: 1..=12,
                },
                SplitName::KochAllDrawers => SubsetSpec {
                    set: OmniglotSet::Background,
                    alphabets: AlphabetSelection::All,
                    drawers: 1..=20,
                },
                SplitName::BackgroundSmall1 => SubsetSpec {
                    set: OmniglotSet::BackgroundSmall1,
                    alphabets: AlphabetSelection::All,
                    drawers: 1..=20,
                },
                SplitName::BackgroundSmall2 => SubsetSpec {
                    set: OmniglotSet::BackgroundSmall2,
                    alphabets: AlphabetSelection::All,
                    drawers: 1..=20,
                },
            },
            Part::Validation => SubsetSpec {
                set: OmniglotSet::Evaluation,
                alphabets: AlphabetSelection::First(10),
                drawers: 13..=16,
            },
            Part::Test => SubsetSpec {
                set: OmniglotSet::Evaluation,
                alphabets: AlphabetSelection::Last(10),
                drawers: 17..=20,
            },
        }
    }

    /// The archives this split needs.
    pub fn sets(self) -> Vec<OmniglotSet> {
        let mut sets = vec![self.spec(Part::Train).set, OmniglotSet::Evaluation];
        sets.dedup();
        sets
    }

    /// Scans the part's set folder under `data_root` (e.g. `data/omniglot`) and keeps
    /// the part's alphabets and drawers.
    pub fn index(self, part: Part, data_root: &Path) -> Result<DatasetIndex, DataError> {
        let spec = self.spec(part);
        DatasetIndex::scan(&data_root.join(spec.set.folder()))?
            .select(&spec.alphabets, spec.drawers)
    }
}

impl fmt::Display for SplitName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SplitName {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SplitName::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SplitName::ALL.iter().map(|n| n.as_str()).collect();
                DataError::Invalid(format!(
                    "unknown split {s:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Train, Part::Validation, Part::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Validation => "validation",
            Part::Test => "test",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Part {
    type Err = DataError;

    /// A part by its name; `val` is short for `validation`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = if s == "val" { "validation" } else { s };
        Part::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                DataError::Invalid(format!(
                    "unknown part {s:?}: expected train, validation (or val) or test"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in SplitName::ALL {
            assert_eq!(n.as_str().parse::<SplitName>().unwrap(), n);
        }
        let err = "kock".parse::<SplitName>().unwrap_err().to_string();
        assert!(err.contains("koch-all-drawers"), "{err}");
        for p in Part::ALL {
            assert_eq!(p.as_str().parse::<Part>().unwrap(), p);
        }
        assert_eq!("val".parse::<Part>().unwrap(), Part::Validation);
        assert!("tset".parse::<Part>().is_err());
    }

    #[test]
    fn koch_holds_out_drawers_between_parts() {
        let parts = [Part::Train, Part::Validation, Part::Test].map(|p| SplitName::Koch.spec(p));
        for (i, a) in parts.iter().enumerate() {
            for b in &parts[i + 1..] {
                assert!(a.drawers.end() < b.drawers.start());
            }
        }
    }
}
